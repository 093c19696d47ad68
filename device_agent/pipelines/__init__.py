"""Declared pipelines, by name. Only these can be loaded or run.

A pipeline is one module of this package defining a :class:`Pipeline` subclass with a ``name``
(e.g. ``rag_hybrid.py`` -> ``rag.hybrid``): the registry finds every module here, so a new
pipeline is one new file (docs/extending.md). Helper modules (``base``, ``npu_stage``) define none.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..protocol import UnknownPipeline
from .base import Option, Pipeline


def _discover() -> dict[str, type[Pipeline]]:
    found: dict[str, type[Pipeline]] = {}
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        module = importlib.import_module(f"{__name__}.{mod}")
        for obj in vars(module).values():
            # only classes defined in that module (an imported base or sibling is not redeclared)
            if (isinstance(obj, type) and issubclass(obj, Pipeline) and obj is not Pipeline
                    and obj.__module__ == module.__name__ and obj.name):
                if obj.name in found:
                    raise RuntimeError(f"pipeline name {obj.name!r} declared twice "
                                       f"({found[obj.name].__module__}, {module.__name__})")
                found[obj.name] = obj
    return found


PIPELINES: dict[str, type[Pipeline]] = _discover()


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
