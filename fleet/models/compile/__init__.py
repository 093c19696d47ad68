"""Compile adapters: an NPU graph + its calibration set -> a vendor binary (HEF, RKNN).

- ``hailo``: the Hailo Dataflow Compiler (``hailo_sdk_client.ClientRunner``, imported lazily;
  not on PyPI: Hailo Developer Zone) -> ``.hef`` for hailo8l / hailo8.
- ``rknn``: rknn-toolkit2 (PyPI, pins old numpy/onnx/torch) in its own venv
  (``fleet toolchain install rknn``), driven as a subprocess running ``rknn_worker.py`` ->
  ``.rknn`` for rk3588.

Both return a ``CompileResult`` whose fields go into the manifest entry of the binary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CompileResult:
    """What a compile adapter produced.

    Attributes:
        path: the written binary (.hef / .rknn).
        format: ``hef`` | ``rknn``.
        toolchain: {"name": "hailo_dfc" | "rknn-toolkit2", "version": str}.
        quantization: the scheme the compiler applied (e.g. ``int8-dfc-optimize-level2``,
            ``w8a8-normal``).
        metrics: measured numbers (seconds per stage, simulator agreement).
    """

    path: Path
    format: str
    toolchain: dict
    quantization: str
    metrics: dict = field(default_factory=dict)
