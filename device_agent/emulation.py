"""Which model stands in for an NPU stage on an emulated board, and how results name it.

An emulated hailo8l/hailo8/rk3588 board runs, for its NPU stages, the static QDQ INT8 ONNX model
the controller built for that target (``fleet models build MODEL --target T``; manifest entry
with ``target`` = the accelerator, ``format`` onnx and ``quantization`` ``int8-static-qdq-*``,
made by ``fleet.models.quantize`` from a calibration set): the numerics the NPU would give, run by
onnxruntime. When that model was not deployed, the board falls back to the cpu INT8 model
(dynamic quantization: activation ranges computed per input at run time, which an NPU cannot
do) and says so.

Results carry ``emulation``: ``"onnxruntime static QDQ INT8 (hailo8l)"``, ``"cpu int8-dynamic
fallback"``, ``"cpu fp32 (precision=fp32)"``; null on real and CPU boards.
"""

from __future__ import annotations

from . import manifest as mf

STATIC_QDQ = "int8-static-qdq"   # prefix of the manifest ``quantization`` of emulation models
FALLBACK = "cpu int8-dynamic fallback"


def find_emulation(arts: list[mf.Artifact], accelerator: str, roles: tuple[str, ...]) -> mf.Artifact | None:
    """The static QDQ INT8 ONNX entry built for ``accelerator`` with one of ``roles`` (first role
    wins), or None.

    Args:
        arts: the board's manifest entries.
        accelerator: the board's NPU (``hailo8l``, ``hailo8``, ``rk3588``).
        roles: stage roles in order of preference, e.g. ("encoder_npu", "encoder").
    """
    for role in roles:
        for a in arts:
            if (a.get("role") == role and a.get("format") == "onnx" and a.get("target") == accelerator
                    and str(a.get("quantization", "")).startswith(STATIC_QDQ)):
                return a
    return None


def label(accelerator: str, art: mf.Artifact | None, precision: str,
          fallback_quantization: str | None = None) -> str:
    """The ``emulation`` text for an emulated board's NPU stage: the QDQ model's, or the fallback.

    Args:
        fallback_quantization: the cpu INT8 model's manifest ``quantization`` when it is not
            dynamic (crepe-tiny's cpu INT8 is static QDQ): named instead of ``int8-dynamic``.
    """
    if art is not None:
        return f"onnxruntime static QDQ INT8 ({accelerator})"
    if precision == "fp32":
        return "cpu fp32 (precision=fp32)"
    if fallback_quantization:
        return f"cpu {fallback_quantization} fallback"
    return FALLBACK
