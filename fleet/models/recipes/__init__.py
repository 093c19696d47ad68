"""Model recipes, one file each, found through a registry (fleet/models/recipes/base.py).

Where recipes come from, in this order:

1. built-ins: every module of this package (except ``base``) that defines ``RECIPE``, an
   instance of fleet.models.recipes.base.Recipe (``whisper_tiny_en.py``, ``minilm_l6_v2.py``,
   ``crepe_tiny.py``). Adding a model to ``fleet`` is adding one such file.
2. plug-ins: entry points of the group ``fleet.recipes`` (importlib.metadata, as pytest and
   pluggy find plug-ins). A lab's own package declares, in its pyproject.toml::

       [project.entry-points."fleet.recipes"]
       yolov8n = "lab_models.yolo:YoloV8n"

   The value may name a Recipe subclass, a Recipe instance, or a module defining ``RECIPE``.
3. ``register(recipe)``: a Recipe added at run time (tests, notebooks).

Errors are FleetError with a fix: an unknown name lists the known ones (exit 2); a plug-in that
fails to import, is not a Recipe, or reuses a built-in name names its entry point and package
(exit 2).
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata

from fleet.errors import FleetError
from fleet.models.recipes.base import CalibrationDraw, ParityRequest, Recipe

ENTRY_POINT_GROUP = "fleet.recipes"
__all__ = ["ENTRY_POINT_GROUP", "CalibrationDraw", "ParityRequest", "Recipe", "all_recipes", "find",
           "get", "names", "register", "reload", "unregister"]

_loaded: dict[str, Recipe] | None = None   # built-ins + plug-ins, loaded on first use
_added: dict[str, Recipe] = {}             # register()ed at run time


def _as_recipe(obj, where: str, fix: str) -> Recipe:
    """An object an entry point or module named, as a Recipe instance."""
    if isinstance(obj, type) and issubclass(obj, Recipe):
        try:
            obj = obj()
        except TypeError as e:  # abstract methods left out, or __init__ needs arguments
            raise FleetError(f"model recipe {where}: cannot instantiate {obj.__name__}: {e}",
                             f"{fix} (a recipe defines at least expected_files, source_info and build_cpu: "
                             "fleet/models/recipes/base.py)") from None
    elif not isinstance(obj, Recipe) and hasattr(obj, "RECIPE"):
        obj = obj.RECIPE
    if not isinstance(obj, Recipe):
        raise FleetError(f"model recipe {where} is {type(obj).__name__}, not a fleet.models.recipes.base.Recipe",
                         fix)
    if not isinstance(getattr(obj, "name", None), str) or not obj.name:
        raise FleetError(f"model recipe {where} has no name", fix)
    return obj


def _builtins() -> dict[str, Recipe]:
    out: dict[str, Recipe] = {}
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if mod == "base" or mod.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod}")
        if hasattr(module, "RECIPE"):
            r = _as_recipe(module.RECIPE, f"{__name__}.{mod}", f"fix fleet/models/recipes/{mod}.py")
            out[r.name] = r
    return out


def _entry_points() -> list:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _plugins(taken: dict[str, Recipe]) -> dict[str, Recipe]:
    out: dict[str, Recipe] = {}
    for ep in _entry_points():
        dist = getattr(getattr(ep, "dist", None), "name", None) or "its package"
        where = f"plug-in {ep.name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP}, from {dist})"
        fix = f"fix {dist}, or uninstall it (pip uninstall {dist})"
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 -- any import-time error of a third-party package
            raise FleetError(f"model recipe {where} failed to load: {type(e).__name__}: {e}", fix) from None
        r = _as_recipe(obj, where, fix)
        if r.name in taken or r.name in out:
            raise FleetError(f"model recipe {where} reuses the model name {r.name!r}, which "
                             f"{(taken.get(r.name) or out[r.name]).__class__.__module__} already defines",
                             f"give the plug-in's recipe another name, or uninstall {dist}")
        out[r.name] = r
    return out


def _registry() -> dict[str, Recipe]:
    global _loaded
    if _loaded is None:
        found = _builtins()
        found.update(_plugins(found))
        _loaded = found
    return {**_loaded, **_added}


def reload() -> None:
    """Forget the loaded recipes (the next call imports built-ins and entry points again)."""
    global _loaded
    _loaded = None


def register(recipe: Recipe, replace: bool = False) -> Recipe:
    """Add ``recipe`` (a Recipe instance or subclass) at run time; returns the instance.

    Raises:
        FleetError: not a Recipe, or its name is taken and ``replace`` is False.
    """
    what = getattr(recipe, "__name__", None) or type(recipe).__name__
    r = _as_recipe(recipe, f"{what} (registered at run time)",
                   "pass a subclass or instance of fleet.models.recipes.base.Recipe")
    if not replace and r.name in _registry():
        raise FleetError(f"model recipe {r.name!r} is already registered",
                         "pick another name, or register(..., replace=True)")
    _added[r.name] = r
    return r


def unregister(name: str) -> None:
    """Remove a recipe added by ``register`` (built-ins and plug-ins stay)."""
    _added.pop(name, None)


def names() -> tuple[str, ...]:
    """Every known model name, sorted."""
    return tuple(sorted(_registry()))


def all_recipes() -> list[Recipe]:
    """Every recipe, sorted by name."""
    reg = _registry()
    return [reg[n] for n in sorted(reg)]


def find(name: str) -> Recipe | None:
    """The recipe of model ``name``, or None."""
    return _registry().get(name)


def get(name: str) -> Recipe:
    """The recipe of model ``name``.

    Raises:
        FleetError: unknown name (exit 2; the message lists the known models).
    """
    r = find(name)
    if r is None:
        known = ", ".join(names())
        raise FleetError(f"unknown model {name!r}; known models: {known}",
                         f"use one of: {known} (fleet models list), or add a recipe (fleet/models/recipes/base.py)")
    return r
