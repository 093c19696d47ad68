"""RKNN on RK3588 (``rknnlite.api.RKNNLite``, .rknn).

Call sequence (docs/reference/device_apis.md §3.1, rknn-toolkit-lite2 2.3.2)::

    r = RKNNLite(verbose=False)
    r.load_rknn(path) == 0
    r.init_runtime(core_mask=RKNNLite.NPU_CORE_0_1_2) == 0
    outs = r.inference(inputs=[x, ...], data_format=[...])   # list[np.ndarray], None on error
    r.release()

RKNNLite reports errors by return value (0 / -1 / None) and logs them; this module turns them
into ModelError. It exposes no tensor names, so inputs/outputs come from the manifest entry
(``inputs=``/``outputs=`` load options) or default to ``input{i}``/``output{i}``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import numpy as np

from ..protocol import ModelError
from .base import Backend, LoadedModel, TensorInfo, check_inputs, require_file

INSTALL_HINT = ("pip install rknn-toolkit-lite2 (aarch64 wheel) and copy librknnrt.so from the same "
                "rknn-toolkit2 release to /usr/lib")
DEVICE_TREE = "/proc/device-tree/compatible"
#: RKNNLite core masks (rknn_lite.py constants): 0 auto, 1/2/4 single cores, 3 = 0+1, 7 = 0+1+2.
CORE_MASKS = {"auto": 0, "0": 1, "1": 2, "2": 4, "0_1": 3, "0_1_2": 7, "all": 0xFFFF}


def _rknnlite():
    return importlib.import_module("rknnlite.api")


def _tensors(spec, prefix: str) -> list[TensorInfo]:
    out = []
    for i, t in enumerate(spec or []):
        if isinstance(t, TensorInfo):
            out.append(t)
        else:
            out.append(TensorInfo(str(t.get("name", f"{prefix}{i}")), tuple(t.get("shape", ())),
                                  str(t.get("dtype", "float32"))))
    return out


class RknnModel(LoadedModel):
    """A .rknn model with an initialised runtime."""

    backend = "rknn"

    def __init__(self, path: Path, rknn, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 data_format: str | None):
        self.path = path
        self._rknn = rknn
        self.inputs = inputs
        self.outputs = outputs
        self.data_format = data_format

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.inputs:
            check_inputs(self, inputs)
            arrays = [np.ascontiguousarray(inputs[t.name]) for t in self.inputs]
        else:
            arrays = [np.ascontiguousarray(v) for v in inputs.values()]
        if self._rknn is None:
            raise ModelError(f"{self.path.name}: model was released", "load it again")
        # data_format only applies to 4-D inputs (API reference §inference)
        fmt = [self.data_format if a.ndim == 4 else None for a in arrays] if self.data_format else None
        try:
            outs = self._rknn.inference(inputs=arrays, data_format=fmt)
        except Exception as e:
            raise ModelError(f"{self.path.name}: RKNN inference raised {type(e).__name__}: {e}",
                             "check input shapes against the model") from None
        if outs is None:
            raise ModelError(f"{self.path.name}: RKNN inference returned None (see the RKNN log on stderr)",
                             "check input count, shapes and dtypes against the model; "
                             "librknnrt must match the toolkit that built it")
        names = [t.name for t in self.outputs] or [f"output{i}" for i in range(len(outs))]
        if len(names) != len(outs):
            raise ModelError(f"{self.path.name}: RKNN returned {len(outs)} outputs, manifest lists {len(names)}",
                             "rebuild the artifact and its manifest together (fleet models build)")
        return {n: np.asarray(o) for n, o in zip(names, outs)}

    def close(self) -> None:
        if self._rknn is not None:
            try:
                self._rknn.release()
            except Exception:
                pass
            self._rknn = None


class RknnBackend(Backend):
    """RK3588 NPU backend.

    Args:
        core_mask: 'auto', '0', '1', '2', '0_1', '0_1_2' or 'all' (RKNNLite.NPU_CORE_* constants).
        data_format: layout of 4-D inputs as we pass them ('nchw' as exported from ONNX, or 'nhwc').
        device_tree: file checked for an 'rk3588' compatible string.
    """

    name = "rknn"
    suffix = ".rknn"

    def __init__(self, core_mask: str = "0_1_2", data_format: str | None = "nchw",
                 device_tree: str = DEVICE_TREE):
        if core_mask not in CORE_MASKS:
            raise ValueError(f"core_mask must be one of {sorted(CORE_MASKS)}")
        self.core_mask = core_mask
        self.data_format = data_format
        self.device_tree = device_tree

    def available(self) -> tuple[bool, str]:
        try:
            _ = _rknnlite().RKNNLite  # the import and the class both must exist
        except Exception as e:
            return False, f"rknnlite not importable: {INSTALL_HINT} ({type(e).__name__}: {e})"
        try:
            compat = Path(self.device_tree).read_bytes().decode(errors="replace")
        except OSError:
            return False, f"not an RK3588 board ({self.device_tree} unreadable)"
        if "rk3588" not in compat:
            return False, f"not an RK3588 board ({self.device_tree} has no rk3588)"
        return True, ""

    def version(self) -> str | None:
        try:
            return importlib.metadata.version("rknn-toolkit-lite2")
        except importlib.metadata.PackageNotFoundError:
            try:
                return str(getattr(importlib.import_module("rknnlite"), "__version__", "unknown"))
            except Exception:
                return None

    def load(self, path: str | Path, inputs=None, outputs=None, **_options) -> RknnModel:
        """load_rknn + init_runtime(core_mask).

        Args:
            path: .rknn file.
            inputs/outputs: TensorInfo or manifest dicts ({name, shape, dtype}), in model order.

        Raises:
            ModelError: rknnlite missing, or load_rknn/init_runtime returned non-zero.
        """
        ok, reason = self.available()
        if not ok:
            raise ModelError(f"rknn backend not available: {reason}", INSTALL_HINT)
        p = require_file(path, self.name)
        cls = _rknnlite().RKNNLite
        r = cls(verbose=False)
        ret = r.load_rknn(str(p))
        if ret != 0:
            r.release()
            raise ModelError(f"RKNNLite.load_rknn({p.name}) returned {ret}",
                             "check the file (a corrupt download gives 'invalid ELF header')")
        mask = getattr(cls, {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1",
                             "2": "NPU_CORE_2", "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2",
                             "all": "NPU_CORE_ALL"}[self.core_mask], CORE_MASKS[self.core_mask])
        ret = r.init_runtime(core_mask=mask)
        if ret != 0:
            r.release()
            raise ModelError(f"RKNNLite.init_runtime(core_mask={mask}) for {p.name} returned {ret}",
                             "librknnrt.so must match the rknn-toolkit2 that built the model "
                             "('Invalid RKNN model version'); copy it from the same SDK release")
        return RknnModel(p, r, _tensors(inputs, "input"), _tensors(outputs, "output"), self.data_format)
