"""Where a pipeline's NPU stage runs: the board's NPU, its emulation, or (None) the cpu ONNX model.

One rule for every pipeline with an NPU stage (asr.whisper_hybrid's encoder, vc.pitch_shift's
CREPE, rag.hybrid's embedder):

1. ``hailo``/``rknn`` asked for explicitly: that backend with the stage's compiled artifact.
2. ``auto`` on a real NPU board with a compiled artifact (.hef / .rknn) deployed: the NPU; its
   runtime must be importable (``Backend.available``).
3. ``auto`` on an emulated NPU board at int8 with its target's static QDQ INT8 model deployed
   (``fleet models build MODEL --target T``): onnxruntime with that model, labelled
   (``device_agent.emulation``).
4. Otherwise None: the pipeline runs its cpu ONNX model; ``cpu_fallback`` says why and, on an
   emulated board, labels it (``device_agent.emulation``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import emulation
from .. import manifest as mf
from ..backends import NPU_FORMAT, npu_backend
from ..backends.base import Backend
from ..config import BoardConfig
from ..protocol import ModelError


@dataclass(frozen=True)
class StageChoice:
    """The backend name (``onnx``, ``hailo``, ``rknn``), the artifact it loads, why, and the
    ``emulation`` label when onnxruntime stands in for the NPU (else None)."""

    backend: str
    artifact: mf.Artifact
    reason: str
    emulation: str | None = None


def find_npu_artifact(arts: list[mf.Artifact], backend: str, roles: tuple[str, ...]) -> mf.Artifact | None:
    """The compiled artifact (.hef for hailo, .rknn for rknn) of the first of ``roles`` present."""
    for role in roles:
        a = mf.find(arts, role=role, format=NPU_FORMAT[backend])
        if a is not None:
            return a
    return None


def choose_npu_stage(arts: list[mf.Artifact], cfg: BoardConfig, backends: dict[str, Backend], *,
                     want: str, precision: str, roles: tuple[str, ...], stage: str,
                     option: str) -> StageChoice | None:
    """Rules 1-3 of the module docstring; None when the stage runs on the cpu ONNX model.

    Args:
        arts: the model folder's manifest entries.
        cfg: the board (accelerator, emulated).
        backends: the agent's backends by name.
        want: the pipeline option's value: ``auto``, ``onnx``, ``hailo`` or ``rknn``.
        precision: ``fp32`` or ``int8`` (only int8 has an emulation model).
        roles: the stage's roles in order of preference, e.g. ("encoder_npu", "encoder").
        stage: the stage's name in messages ("encoder", "CREPE").
        option: the pipeline option ``want`` came from ("encoder_backend"), for messages.

    Raises:
        ModelError: ``hailo``/``rknn`` asked for but no such artifact is deployed, or the board's
            NPU runtime is not importable.
    """
    npu = npu_backend(cfg.accelerator)
    if want in NPU_FORMAT:
        art = find_npu_artifact(arts, want, roles)
        if art is None:
            raise ModelError(f"{option}={want} but no .{NPU_FORMAT[want]} {stage} artifact is deployed",
                             f"deploy the {want} artifacts, or use {option}=auto")
        return StageChoice(want, art, f"{option}={want} requested")
    if want != "auto" or npu is None:
        return None
    if not cfg.emulated:
        art = find_npu_artifact(arts, npu, roles)
        if art is None:
            return None
        ok, why = backends[npu].available()
        if not ok:
            raise ModelError(f"the board's {npu} backend is not available: {why}",
                             f"install the NPU runtime, or pass {option}=onnx")
        return StageChoice(npu, art, f"{cfg.accelerator} NPU with a .{NPU_FORMAT[npu]} {stage}")
    if precision == "int8":
        qdq = emulation.find_emulation(arts, cfg.accelerator, roles)
        if qdq is not None:
            return StageChoice("onnx", qdq, (f"emulated board: the {cfg.accelerator} build's static QDQ "
                                             f"INT8 {stage} ({qdq.get('quantization')}) on onnxruntime"),
                               emulation.label(cfg.accelerator, qdq, precision))
    return None


def cpu_fallback(art: mf.Artifact, cfg: BoardConfig, *, want: str, precision: str, stage: str,
                 option: str, model: str, fallback_quantization: str | None = None) -> StageChoice:
    """Rule 4: the stage on its cpu ONNX model ``art``, with the reason and the emulation label.

    Args:
        art: the stage's cpu ONNX artifact (the pipeline finds it and raises when it is absent).
        cfg, want, precision, stage, option: as for ``choose_npu_stage``.
        model: the model name, for the build command an emulated board's reason names.
        fallback_quantization: the cpu INT8 model's manifest ``quantization`` when it is not
            dynamic (see ``emulation.label``).

    Returns:
        StageChoice("onnx", art, reason, emulation): ``emulation`` is None except on an emulated
        NPU board, where the cpu model stands in for the NPU (e.g. "cpu int8-dynamic fallback").
    """
    npu = npu_backend(cfg.accelerator)
    if want == "onnx":
        reason = f"{option}=onnx requested"
    elif cfg.emulated and npu and precision != "int8":  # only int8 has an emulation model
        reason = f"emulated board: precision={precision}, the cpu {precision} {stage} stands in for the NPU"
    elif cfg.emulated and npu:
        reason = (f"emulated board: no static QDQ INT8 {stage} for {cfg.accelerator} deployed (fleet models "
                  f"build {model} --target {cfg.accelerator}; fleet deploy), the cpu {precision} {stage} "
                  f"stands in for the NPU")
    elif npu:
        reason = f"no .{NPU_FORMAT[npu]} {stage} deployed for the {cfg.accelerator} NPU"
    else:
        reason = "board has no NPU"
    emu = emulation.label(cfg.accelerator, None, precision, fallback_quantization) if cfg.emulated and npu else None
    return StageChoice("onnx", art, reason, emu)
