"""The pipeline interface and its options.

A pipeline is loaded once (artifacts verified and opened on their backends) and then run many
times. Options are declared (name, type, default, help); ``load=True`` options pick what is
loaded (a variant, a backend), the others only affect a run. Unknown options are refused.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..config import BoardConfig
from ..protocol import BadInput

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One pipeline option. ``type`` is int, float, bool or str; ``choices`` restricts values;
    ``load`` marks options that select what is loaded (changing one loads another instance)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    load: bool = False

    def coerce(self, value: Any) -> Any:
        """Convert ``value`` (JSON value or CLI string) to ``type``. Raises BadInput."""
        bad = BadInput(f"option {self.name}={value!r} is not a valid {self.type.__name__}",
                       f"{self.name}: {self.help}")
        if value is None:
            return None
        try:
            if self.type is bool:
                if isinstance(value, bool):
                    v = value
                elif str(value).lower() in _TRUE:
                    v = True
                elif str(value).lower() in _FALSE:
                    v = False
                else:
                    raise bad
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise bad
                v = int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise bad
                v = float(value)
            else:
                v = str(value)
        except (TypeError, ValueError):
            raise bad from None
        if self.choices is not None and v not in self.choices:
            raise BadInput(f"option {self.name}={v!r} is not one of {list(self.choices)}",
                           f"{self.name}: {self.help}")
        return v


class Pipeline(abc.ABC):
    """Base class. Subclasses set ``name``, ``default_model`` (folder under models/),
    ``OPTIONS`` and ``NPU_ROLES``, and implement ``load``, ``run`` and ``unload``."""

    name: str = ""
    default_model: str = ""
    OPTIONS: tuple[Option, ...] = ()
    #: manifest roles of the NPU-target artifacts this pipeline loads (what deploy ships to an NPU
    #: board of its model's target build; fleet.deploy.artifacts.target_entries)
    NPU_ROLES: tuple[str, ...] = ()
    #: the key of ``self.info`` describing the NPU stage (backend, artifact, emulation) and the
    #: manifest role of its cpu fp32 reference: what the ``parity`` op compares (device_agent.parity)
    NPU_STAGE: str = ""
    PARITY_REFERENCE_ROLE: str = ""

    def __init__(self, config: BoardConfig):
        self.config = config
        self.info: dict = {}  # what load() returned: models used, backends chosen and why

    # -- options -----------------------------------------------------------------------------
    def default_options(self) -> dict:
        """Defaults for this board (subclasses may make them depend on ``self.config``)."""
        return {o.name: o.default for o in self.OPTIONS}

    def resolve_options(self, given: dict | None) -> dict:
        """Defaults overlaid with ``given`` (coerced). Raises BadInput on unknown names or bad values."""
        given = dict(given or {})
        known = {o.name: o for o in self.OPTIONS}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise BadInput(f"{self.name}: unknown option(s) {unknown}",
                           f"use any of {sorted(known)}")
        opts = self.default_options()
        for k, v in given.items():
            if v is not None:
                opts[k] = known[k].coerce(v)
        return opts

    def load_key(self, options: dict) -> tuple:
        """The load-time part of resolved options, as a hashable key."""
        return tuple((o.name, options.get(o.name)) for o in self.OPTIONS if o.load)

    # -- lifecycle ---------------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, model_dir: Path, backends: dict[str, Backend], options: dict) -> dict:
        """Verify and open the artifacts in ``model_dir``.

        Args:
            model_dir: folder with the model's files and manifest.json.
            backends: backend name → Backend.
            options: resolved options (``resolve_options``).

        Returns:
            a description: models used (file → sha256), backends chosen and why.

        Raises:
            ModelError: artifacts missing or corrupt, backend unavailable.
            BadInput: invalid options.
        """

    @abc.abstractmethod
    def run(self, input_path: Path, options: dict) -> dict:
        """Run once on ``input_path`` with resolved ``options``; returns the result dict.

        Raises:
            BadInput: unreadable input or bad options. ModelError: a backend failed.
        """

    @abc.abstractmethod
    def unload(self) -> None:
        """Release every model (idempotent)."""

    # -- parity ------------------------------------------------------------------------------
    @classmethod
    def has_parity(cls) -> bool:
        """True when the pipeline implements ``parity``."""
        return cls.parity is not Pipeline.parity

    def parity(self, config: BoardConfig, backends: dict[str, Backend], inputs: list, options: dict) -> dict:
        """The NPU stage of a loaded pipeline against its cpu fp32 reference on ``inputs`` (audio
        paths or texts): {"output", "reference", "per_input", "summary", ...}, see
        device_agent.parity. Pipelines with an NPU stage override it.

        Raises:
            BadInput: this pipeline has no parity check, or a bad input.
            ModelError: the reference model is not deployed or fails.
        """
        raise BadInput(f"pipeline {self.name!r} has no parity check", "use a pipeline with an NPU stage")
