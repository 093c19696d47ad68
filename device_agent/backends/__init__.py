"""Backends by name: ``onnx`` (always), ``hailo``, ``rknn`` (vendor runtimes imported lazily)."""

from __future__ import annotations

from .base import Backend, LoadedModel, TensorInfo
from .hailo import HailoBackend
from .onnx import OnnxBackend
from .rknn import RknnBackend

BACKENDS: dict[str, type[Backend]] = {"onnx": OnnxBackend, "hailo": HailoBackend, "rknn": RknnBackend}

#: Which NPU backend serves which accelerator (docs/contracts.md §1).
NPU_BACKEND = {"hailo8l": "hailo", "hailo8": "hailo", "rk3588": "rknn"}


def create_backends(intra_op_threads: int = 0) -> dict[str, Backend]:
    """One instance of every backend (cheap: nothing is imported or opened until used)."""
    return {"onnx": OnnxBackend(intra_op_threads), "hailo": HailoBackend(), "rknn": RknnBackend()}


__all__ = ["Backend", "LoadedModel", "TensorInfo", "BACKENDS", "NPU_BACKEND", "create_backends",
           "OnnxBackend", "HailoBackend", "RknnBackend"]
