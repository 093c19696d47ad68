"""Backends by name: ``onnx`` (always), ``hailo``, ``rknn`` (vendor runtimes imported lazily)."""

from __future__ import annotations

from .base import Backend, LoadedModel, TensorInfo
from .hailo import HailoBackend
from .onnx import OnnxBackend
from .rknn import RknnBackend

BACKENDS: dict[str, type[Backend]] = {"onnx": OnnxBackend, "hailo": HailoBackend, "rknn": RknnBackend}

#: compiled-artifact format of each NPU backend, from its ``suffix`` (HailoRT loads HEF, RKNNLite .rknn)
NPU_FORMAT: dict[str, str] = {n: c.suffix.lstrip(".") for n, c in BACKENDS.items() if n != "onnx"}


def npu_backend(accelerator: str) -> str | None:
    """The NPU backend that serves ``accelerator`` (its board family's ``npu_backend``), or None
    for a CPU board or an accelerator no family declares (docs/contracts.md §1)."""
    from ..families import registry

    fam = registry().find(accelerator)
    return fam.npu_backend if fam is not None else None


def create_backends(intra_op_threads: int = 0) -> dict[str, Backend]:
    """One instance of every backend (cheap: nothing is imported or opened until used)."""
    return {"onnx": OnnxBackend(intra_op_threads), "hailo": HailoBackend(), "rknn": RknnBackend()}


__all__ = ["Backend", "LoadedModel", "TensorInfo", "BACKENDS", "NPU_FORMAT", "npu_backend", "create_backends",
           "OnnxBackend", "HailoBackend", "RknnBackend"]
