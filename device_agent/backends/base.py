"""The one backend interface: load an artifact → run named inputs → named outputs.

Backends are one file per runtime (labgrid style): ``onnx`` (onnxruntime CPU), ``hailo``
(HailoRT ``hailo_platform``, .hef), ``rknn`` (``rknnlite``, .rknn). Vendor modules are imported
lazily, so a board without them still imports this package and reports why they are absent.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: ``name``, ``shape`` (ints; None or a str for dynamic axes),
    ``dtype`` (numpy dtype name, e.g. 'float32', 'int64')."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class LoadedModel(abc.ABC):
    """A model ready to run on one backend. ``inputs``/``outputs`` describe its tensors in the
    model's order; ``path`` is the artifact it came from."""

    backend: str = ""
    path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once.

        Args:
            inputs: input name → array (shape and dtype as in ``self.inputs``).

        Returns:
            output name → array, for every output in ``self.outputs``.

        Raises:
            BadInput: a missing or unknown input name, or an array of the wrong size.
            ModelError: the runtime failed.
        """

    def close(self) -> None:
        """Release runtime resources (idempotent)."""


class Backend(abc.ABC):
    """A runtime that can load artifacts of one format (``suffix``, e.g. '.onnx')."""

    name: str = ""
    suffix: str = ""

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when this backend can load models here, else (False, reason with the fix)."""

    @abc.abstractmethod
    def version(self) -> str | None:
        """Runtime version string, or None when not available."""

    @abc.abstractmethod
    def load(self, path: str | Path, **options) -> LoadedModel:
        """Load one artifact.

        Raises:
            ModelError: backend unavailable, file missing, or the runtime refused the model.
        """

    def describe(self) -> dict:
        """{available, version, reason} for ``info``."""
        ok, reason = self.available()
        d = {"available": ok, "version": self.version() if ok else None}
        if not ok:
            d["reason"] = reason
        return d

    def close(self) -> None:
        """Release process-wide resources (e.g. the Hailo VDevice)."""


def check_inputs(model: LoadedModel, inputs: dict[str, np.ndarray]) -> None:
    """Raise BadInput unless ``inputs`` has exactly the model's input names."""
    from ..protocol import BadInput

    want = [t.name for t in model.inputs]
    missing = [n for n in want if n not in inputs]
    extra = [n for n in inputs if n not in want]
    if missing or extra:
        raise BadInput(f"{model.path.name}: inputs {sorted(inputs)} do not match the model's {want}"
                       + (f" (missing {missing})" if missing else "")
                       + (f" (unknown {extra})" if extra else ""),
                       "feed exactly the model's input names (see the manifest entry)")


def require_file(path: str | Path, backend: str) -> Path:
    """The artifact path, or ModelError when it does not exist."""
    from ..protocol import ModelError

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{backend}: artifact {p} not found", "deploy the models (fleet deploy) "
                         "or build them (fleet models build)")
    return p
