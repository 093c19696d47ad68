"""onnxruntime on the CPU (``CPUExecutionProvider``): every board's fallback and the stand-in
for an NPU on emulated boards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..protocol import BadInput, ModelError
from .base import Backend, LoadedModel, TensorInfo, check_inputs, require_file

# ONNX tensor type strings → numpy dtype names
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _info(arg) -> TensorInfo:
    return TensorInfo(arg.name, tuple(arg.shape), _ORT_TYPES.get(arg.type, arg.type))


class OnnxModel(LoadedModel):
    """An onnxruntime InferenceSession."""

    backend = "onnx"

    def __init__(self, path: Path, session):
        self.path = path
        self.session = session
        self.inputs = [_info(a) for a in session.get_inputs()]
        self.outputs = [_info(a) for a in session.get_outputs()]
        self._out_names = [t.name for t in self.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self, inputs)
        try:
            values = self.session.run(self._out_names, inputs)
        except Exception as e:  # onnxruntime raises its own exception classes
            msg = str(e).splitlines()[0] if str(e) else repr(e)
            if "INVALID_ARGUMENT" in msg or "Got invalid dimensions" in msg:
                raise BadInput(f"{self.path.name}: {msg}", "check input shapes and dtypes against "
                               "the manifest") from None
            raise ModelError(f"{self.path.name}: onnxruntime failed: {msg}",
                             "check the artifact (fleet models build) and onnxruntime version") from None
        return dict(zip(self._out_names, values))

    def close(self) -> None:
        self.session = None


class OnnxBackend(Backend):
    """onnxruntime CPU backend.

    Args:
        intra_op_threads: threads per operator (0 = onnxruntime's default: one per physical core).
    """

    name = "onnx"
    suffix = ".onnx"

    def __init__(self, intra_op_threads: int = 0):
        self.intra_op_threads = int(intra_op_threads)

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as e:
            return False, f"onnxruntime not importable ({e}): pip install onnxruntime"
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return False, "onnxruntime has no CPUExecutionProvider: reinstall the onnxruntime wheel"
        return True, ""

    def version(self) -> str | None:
        try:
            import onnxruntime as ort
            return ort.__version__
        except ImportError:
            return None

    def load(self, path: str | Path, intra_op_threads: int | None = None, spinning: bool = False,
             **_options) -> OnnxModel:
        """Create an InferenceSession on CPUExecutionProvider.

        Args:
            path: .onnx file.
            intra_op_threads: override the backend's thread count for this model (0 = default).
            spinning: let intra-op threads spin-wait between ops. Off by default: on a shared or
                2-core CPU the spinning threads of one session burn the core the next stage (or
                another process) needs; measured 2x slower decoding (benchmarks/asr_hybrid.py).

        Raises:
            ModelError: file missing or onnxruntime cannot load it.
        """
        import onnxruntime as ort

        p = require_file(path, self.name)
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only; warnings would go to stderr anyway
        threads = self.intra_op_threads if intra_op_threads is None else int(intra_op_threads)
        if threads > 0:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            sess = ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"onnxruntime cannot load {p}: {str(e).splitlines()[0] if str(e) else e!r}",
                             "rebuild the artifact (fleet models build) for onnxruntime "
                             f"{ort.__version__}") from None
        return OnnxModel(p, sess)
