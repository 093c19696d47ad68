"""Declared pipelines, by name. Only these can be loaded or run."""

from __future__ import annotations

from ..protocol import UnknownPipeline
from .asr_whisper import WhisperHybrid
from .base import Option, Pipeline
from .model_bench import ModelBench
from .rag_hybrid import RagHybrid
from .vc_pitch_shift import VcPitchShift

PIPELINES: dict[str, type[Pipeline]] = {WhisperHybrid.name: WhisperHybrid, RagHybrid.name: RagHybrid,
                                       VcPitchShift.name: VcPitchShift, ModelBench.name: ModelBench}


def npu_roles(model: str) -> set[str]:
    """Manifest roles of ``model``'s NPU-target artifacts that a declared pipeline loads (its
    ``NPU_ROLES``); the rest of a target build (e.g. Whisper's full-NPU ``decoder_npu``) stays on
    the controller."""
    return {r for p in PIPELINES.values() if p.default_model == model for r in p.NPU_ROLES}


def pipeline_class(name: str) -> type[Pipeline]:
    """The class of a declared pipeline. Raises UnknownPipeline listing the declared ones."""
    try:
        return PIPELINES[name]
    except (KeyError, TypeError):
        raise UnknownPipeline(f"unknown pipeline {name!r}",
                              f"use one of {', '.join(sorted(PIPELINES))}") from None


__all__ = ["PIPELINES", "Option", "Pipeline", "npu_roles", "pipeline_class"]
