"""The controller's view of the board-family registry (``device_agent.families``).

The definitions live in the agent package because both sides read them and the agent never
imports fleet; this module only turns the registry's FamilyError (a plug-in of the entry-point
group ``fleet.board_families`` that fails to load, is inconsistent, or clashes with a built-in
name) into a FleetError with its fix, so the CLI prints it without a traceback.
"""

from __future__ import annotations

from device_agent import families as _families
from device_agent.families import ENTRY_POINT_GROUP, BoardFamily, FamilyError, Registry, ThermalConstants

from fleet.errors import FleetError


def registry() -> Registry:
    """The loaded registry. Raises FleetError when a plug-in cannot be used."""
    try:
        return _families.registry()
    except FamilyError as e:
        raise FleetError(e.message, e.fix) from None


def reload() -> Registry:
    """Re-read built-ins and plug-ins (tests). Raises FleetError like registry()."""
    try:
        return _families.reload()
    except FamilyError as e:
        raise FleetError(e.message, e.fix) from None


def family(name: str) -> BoardFamily:
    """The family called ``name``. Raises FleetError naming the known ones."""
    try:
        return registry().get(name)
    except FamilyError as e:
        raise FleetError(e.message, e.fix) from None


def by_accelerator(accelerator: str) -> BoardFamily:
    """The family with ``accelerator``. Raises FleetError naming the known accelerators."""
    try:
        return registry().by_accelerator(accelerator)
    except FamilyError as e:
        raise FleetError(e.message, e.fix) from None


__all__ = ["BoardFamily", "ThermalConstants", "Registry", "ENTRY_POINT_GROUP", "registry", "reload",
           "family", "by_accelerator"]
