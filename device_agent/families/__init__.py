"""Board families by name: one file per family, found through a registry (DESIGN.md "Plug-ins").

Built-in families are the modules of this package (every module but ``base`` defines ``FAMILY``,
a :class:`BoardFamily`), so a new built-in family is one new file here and nothing else. A lab's
own package adds one through the entry-point group ``fleet.board_families``::

    [project.entry-points."fleet.board_families"]
    lab-board = "my_lab_fleet.family:FAMILY"      # a BoardFamily (or a list of them)

Why here, in the agent package: both sides read a family (the agent: board/accelerator names,
NPU backend and artifact format, sensors, the emulated thermal model, the stack fingerprint's
driver; the controller: inventory, sim, deploy, builds, doctor), and ``device_agent`` must never
import ``fleet`` (it installs alone on a board), while the controller already reuses agent code.
So the definitions are plain data here (stdlib only), and controller-only behaviour is named, not
imported: ``doctor_checks`` are names resolved by ``fleet.doctor.checks``, ``toolchain`` a name
resolved by ``fleet.models`` (compile adapters). ``fleet.families`` wraps this registry for the
controller, turning :class:`FamilyError` into FleetError.

Lookups load the registry once per process (:func:`registry`); :func:`reload` re-reads entry
points (tests, after putting a plug-in on ``sys.path``).

A board does not need a plug-in family's package: ``fleet deploy`` writes a plug-in family's
definition (``BoardFamily.to_dict``) into the board's agent.yml under ``family:``, and the agent
:func:`register` s it when it does not know the name (plug-in *code*, such as a pipeline, still
has to be installed on the board).

Errors: :class:`FamilyError` (message + fix) when a plug-in fails to import, is not a
BoardFamily, is inconsistent (``BoardFamily.problems``), or clashes with a built-in or another
plug-in's name, accelerator or sim_host; and for an unknown family, board class or accelerator.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from importlib import metadata

from ..protocol import BadInput
from .base import BoardFamily, ThermalConstants

ENTRY_POINT_GROUP = "fleet.board_families"


class FamilyError(BadInput):
    """A board family is unknown, or a plug-in defining one cannot be used (message + fix)."""


@dataclass(frozen=True, eq=False)
class Registry:
    """The families of this process: ``families`` by name (built-ins first, in file order, then
    plug-ins), and ``origin`` of each (``built-in`` or ``plug-in <dist> (<entry point>)``).
    Compared and hashed by identity (a cache key for what is derived from one registry)."""

    families: dict[str, BoardFamily]
    origin: dict[str, str]

    # -- lookups ---------------------------------------------------------------------------------
    def get(self, name: str) -> BoardFamily:
        """The family called ``name``. Raises FamilyError listing the known ones."""
        try:
            return self.families[name]
        except (KeyError, TypeError):
            raise FamilyError(f"unknown board family {name!r}",
                              f"use one of {', '.join(self.families)}, or install the package that adds it "
                              f"(entry point group {ENTRY_POINT_GROUP})") from None

    def by_accelerator(self, accelerator: str) -> BoardFamily:
        """The family whose accelerator is ``accelerator``. Raises FamilyError."""
        for f in self.families.values():
            if f.accelerator == accelerator:
                return f
        raise FamilyError(f"unknown accelerator {accelerator!r}",
                          f"use one of {', '.join(self.accelerators())}, or install the package that adds "
                          f"its board family (entry point group {ENTRY_POINT_GROUP})")

    def find(self, accelerator: str | None) -> BoardFamily | None:
        """by_accelerator, or None when no family has it."""
        return next((f for f in self.families.values() if f.accelerator == accelerator), None)

    def of_board(self, board_class: str, accelerator: str) -> BoardFamily:
        """The family of a board the inventory/agent.yml describes by ``board`` and ``accelerator``.

        Raises:
            FamilyError: unknown board class or accelerator, or an accelerator that board class
                does not carry.
        """
        classes = self.board_classes()
        if board_class not in classes:
            raise FamilyError(f"unknown board class {board_class!r}",
                              f"use one of {', '.join(classes)}, or install the package that adds it "
                              f"(entry point group {ENTRY_POINT_GROUP})")
        fam = self.by_accelerator(accelerator)
        if fam.board_class != board_class:
            raise FamilyError(f"a {board_class} board does not carry accelerator {accelerator!r}",
                              f"a {board_class} carries {', '.join(classes[board_class])}")
        return fam

    # -- tables derived from the families ---------------------------------------------------------
    def accelerators(self) -> tuple[str, ...]:
        """Every accelerator (``hailo8l``, ..., ``cpu``)."""
        return tuple(f.accelerator for f in self.families.values())

    def board_classes(self) -> dict[str, tuple[str, ...]]:
        """board class -> the accelerators it may carry; first the accelerator of the family named
        like the board class (the class's default, e.g. what ``fleet sim up --mix pi5-hailo8l:1`` gets)."""
        out: dict[str, list[str]] = {}
        for f in self.families.values():
            out.setdefault(f.board_class, []).append(f.accelerator)
        for k, v in out.items():
            own = self.families.get(k)
            if own is not None and own.board_class == k:
                v.sort(key=lambda a: a != own.accelerator)
        return {k: tuple(v) for k, v in out.items()}

    def npu_targets(self) -> tuple[str, ...]:
        """Build targets of the NPU families (``hailo8l``, ``hailo8``, ...)."""
        return tuple(f.build_target for f in self.families.values() if f.build_target)

    def npu_backend(self) -> dict[str, str]:
        """accelerator -> NPU backend, for the NPU families."""
        return {f.accelerator: f.npu_backend for f in self.families.values() if f.npu_backend}

    def compatible(self) -> set[tuple[str, str]]:
        """(artifact target, board accelerator) pairs that run although they differ
        (the later ``targets`` of a family: a hailo8l HEF on a hailo8)."""
        return {(t, f.accelerator) for f in self.families.values() for t in f.targets[1:]}

    def runs_target(self, accelerator: str, target: str) -> bool:
        """Does a board with ``accelerator`` run artifacts built for ``target``?"""
        fam = self.find(accelerator)
        return fam is not None and target in fam.targets

    def targets_of_format(self, fmt: str) -> tuple[str, ...]:
        """Build targets whose compiled artifacts have format ``fmt`` (``hef`` -> hailo8l, hailo8, hailo10h)."""
        return tuple(f.build_target for f in self.families.values() if f.artifact_format == fmt and f.build_target)

    def with_toolchain(self, toolchain: str) -> tuple[BoardFamily, ...]:
        """The families whose NPU build uses ``toolchain`` (``hailo-dfc``, ``rknn-toolkit2``)."""
        return tuple(f for f in self.families.values() if f.toolchain == toolchain)


def builtin_families() -> list[BoardFamily]:
    """The ``FAMILY`` of every module of this package (but ``base``), in natural module-name order
    (numbers by value: pi5_hailo8, pi5_hailo8l, pi5_hailo10h) with ``cpu`` last."""
    def natural(name: str) -> tuple:
        return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))

    out = []
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name == "cpu", natural(m.name))):
        if m.name == "base" or m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{m.name}")
        fam = getattr(mod, "FAMILY", None)
        if not isinstance(fam, BoardFamily):
            raise FamilyError(f"{mod.__name__} defines no FAMILY (a BoardFamily)",
                              f"add FAMILY = BoardFamily(...) to {mod.__file__}")
        out.append(fam)
    return out


def _plugin_families() -> list[tuple[BoardFamily, str]]:
    """(family, origin) for every entry point of ENTRY_POINT_GROUP. Raises FamilyError."""
    out = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        origin = f"plug-in {dist} ({ep.name} = {ep.value})"
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - any import failure of a lab's package is reported
            raise FamilyError(f"board-family plug-in {origin} failed to load: {type(e).__name__}: {e}",
                              f"fix or reinstall the package {dist}, or uninstall it "
                              f"(pip uninstall {dist})") from None
        fams = list(obj) if isinstance(obj, (list, tuple)) else [obj]
        for f in fams:
            if not isinstance(f, BoardFamily):
                raise FamilyError(f"board-family plug-in {origin} gives a {type(f).__name__}, not a BoardFamily",
                                  "point the entry point at a device_agent.families.BoardFamily instance "
                                  "(or a list of them)")
            out.append((f, origin))
    return out


def load() -> Registry:
    """Read the built-in families and the plug-ins; check each and refuse clashes.

    Raises:
        FamilyError: a plug-in fails to load, is no BoardFamily, is inconsistent, or reuses a
            name, accelerator or sim_host another family has.
    """
    families: dict[str, BoardFamily] = {}
    origin: dict[str, str] = {}
    accel: dict[str, str] = {}
    hosts: dict[str, str] = {}
    entries = [(f, "built-in") for f in builtin_families()] + _plugin_families()
    for f, where in entries:
        problems = f.problems()
        if problems:
            raise FamilyError(f"board family {f.name!r} ({where}) is inconsistent: {'; '.join(problems)}",
                              "fix its BoardFamily definition")
        if f.name in families:
            raise FamilyError(f"board family {f.name!r} ({where}) clashes with the {origin[f.name]} family "
                              f"of that name", "rename the plug-in's family (BoardFamily.name)")
        if f.accelerator in accel:
            other = accel[f.accelerator]
            raise FamilyError(f"board family {f.name!r} ({where}) declares accelerator {f.accelerator!r}, "
                              f"which the {origin[other]} family {other!r} already has",
                              "give the plug-in's family its own accelerator name")
        if f.sim_host in hosts:
            other = hosts[f.sim_host]
            raise FamilyError(f"board family {f.name!r} ({where}) declares sim_host {f.sim_host!r}, which the "
                              f"{origin[other]} family {other!r} already uses for emulated hostnames",
                              "give the plug-in's family its own sim_host")
        families[f.name], origin[f.name], accel[f.accelerator], hosts[f.sim_host] = f, where, f.name, f.name
    return Registry(families, origin)


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The process's registry (loaded on first use). Raises FamilyError (see load)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load()
    return _REGISTRY


def reload() -> Registry:
    """Forget the loaded registry and read it again (e.g. after a plug-in was put on sys.path)."""
    global _REGISTRY
    _REGISTRY = None
    importlib.invalidate_caches()
    return registry()


def register(fam: BoardFamily, origin: str) -> BoardFamily:
    """Add ``fam`` to this process's registry (the agent does this with the definition ``fleet
    deploy`` wrote into agent.yml for a plug-in family the board has no package for). A family
    already known under that name is kept (the local definition wins) and returned.

    Raises:
        FamilyError: ``fam`` is inconsistent, or its accelerator or sim_host belongs to another family.
    """
    reg = registry()
    if fam.name in reg.families:
        return reg.families[fam.name]
    problems = fam.problems()
    if problems:
        raise FamilyError(f"board family {fam.name!r} ({origin}) is inconsistent: {'; '.join(problems)}",
                          "fix its BoardFamily definition and redeploy")
    for other in reg.families.values():
        if other.accelerator == fam.accelerator or other.sim_host == fam.sim_host:
            raise FamilyError(f"board family {fam.name!r} ({origin}) reuses the accelerator or sim_host of "
                              f"the {reg.origin[other.name]} family {other.name!r}",
                              "give the plug-in's family its own accelerator and sim_host, then redeploy")
    reg.families[fam.name], reg.origin[fam.name] = fam, origin
    return fam


def family(name: str) -> BoardFamily:
    """The family called ``name`` (Registry.get)."""
    return registry().get(name)


def by_accelerator(accelerator: str) -> BoardFamily:
    """The family with ``accelerator`` (Registry.by_accelerator)."""
    return registry().by_accelerator(accelerator)


__all__ = ["BoardFamily", "ThermalConstants", "FamilyError", "Registry", "ENTRY_POINT_GROUP",
           "registry", "reload", "load", "register", "family", "by_accelerator", "builtin_families"]
