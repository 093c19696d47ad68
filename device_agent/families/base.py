"""What a board family is: one frozen dataclass instance per family (``device_agent.families``).

A *board family* is one kind of board a lab owns: a host board with one accelerator (or none).
Everything fleet needs to know about it sits in one :class:`BoardFamily`, so a new family is one
new file. Fields and their units:

- ``name``: the family (``pi5-hailo8l``); also what ``fleet sim up --mix NAME:COUNT`` takes.
- ``accelerator``: the inventory's ``accelerator`` host var and the suite.yml threshold class
  (``hailo8l``); unique across families; ``cpu`` for a board without NPU.
- ``board_class``: the inventory's ``board`` host var (``pi5-hailo8l``). Several families may
  share a board class (a Pi 5 carries an AI Kit Hailo-8L or an AI HAT+ Hailo-8).
- ``npu_backend`` / ``artifact_format``: the agent backend that runs the NPU stages
  (``device_agent.backends``: ``hailo``, ``rknn``) and the compiled file it loads (``hef``,
  ``rknn``); both None on a CPU family.
- ``targets``: artifact targets (``artifacts/<target>/``, manifest ``target``) the board runs,
  its own build target first, then compatible ones (HailoRT runs a Hailo-8L HEF on a Hailo-8).
- ``toolchain``: the compile adapter of ``fleet models build --target`` (``hailo-dfc``,
  ``rknn-toolkit2``; ``fleet.models.compile``), None when there is none; ``toolchain_hint`` says
  what it is and where it comes from; ``compile_arch`` is the compiler's name for the chip
  (DFC ``hw_arch``, rknn-toolkit2 ``target_platform``; default the accelerator).
- ``runtime``: the board-side runtime (``HailoRT 4.x``) and ``runtime_major``: the major
  versions of its library that serve this chip (doctor fails another one); ``driver_module``:
  the kernel module whose ``/sys/module/<m>/version`` the stack fingerprint reads.
- ``sensors``: telemetry plug-ins (``device_agent.telemetry.SENSORS``) a real board of the family
  carries; an emulated one gets ``linux`` + ``emulated``.
- ``thermal``: the emulated board's first-order thermal model (``telemetry.emulated``): °C, W,
  K/W, s, with where the numbers come from.
- ``sim_host``: the short name of emulated hostnames (``sim-<sim_host>-1``).
- ``doctor_checks``: names of the controller's checks for this family (``fleet.doctor.checks
  .FAMILY_CHECKS``: ``hailo``, ``hailo.pcie``, ``rknn``); names, so this module stays free of
  controller code; generic and model checks run on every board.
- ``title``, ``sources``: what the family is, and public pages backing the numbers.

Stdlib only (the agent installs alone on a board).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class ThermalConstants:
    """One family's emulated thermal model: ambient °C, idle and full-load heat W, thermal
    resistance K/W, time constant s, throttle temperature °C, and the source of the numbers."""

    t_amb_c: float
    p_idle_w: float
    p_max_w: float
    r_theta_k_per_w: float
    tau_s: float
    throttle_c: float
    source: str


@dataclass(frozen=True)
class BoardFamily:
    """One board family (see the module docstring for every field)."""

    name: str
    title: str
    accelerator: str
    board_class: str
    thermal: ThermalConstants
    sim_host: str
    npu_backend: str | None = None
    artifact_format: str | None = None
    targets: tuple[str, ...] = ()
    toolchain: str | None = None
    toolchain_hint: str = ""
    compile_arch: str | None = None
    runtime: str = ""
    runtime_major: tuple[int, ...] = ()
    driver_module: str | None = None
    sensors: tuple[str, ...] = ("linux",)
    doctor_checks: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=())

    @property
    def npu(self) -> bool:
        """True when the family has an NPU (its stages run on ``npu_backend``)."""
        return self.npu_backend is not None

    @property
    def build_target(self) -> str | None:
        """The target ``fleet models build --target`` writes for this family (its first target)."""
        return self.targets[0] if self.targets else None

    @property
    def arch(self) -> str | None:
        """The compiler's name for the chip (``compile_arch``, default the accelerator)."""
        return self.compile_arch or (self.accelerator if self.npu else None)

    def problems(self) -> list[str]:
        """What is inconsistent in this definition ([] when none); the registry refuses a family
        with problems."""
        p = []
        for what in ("name", "accelerator", "board_class", "sim_host"):
            v = getattr(self, what)
            if not isinstance(v, str) or not NAME_RE.match(v):
                p.append(f"{what} {v!r} is not a lower-case name ([a-z0-9._-])")
        if (self.npu_backend is None) != (self.artifact_format is None):
            p.append("npu_backend and artifact_format go together (both set, or both None for a CPU family)")
        if self.npu_backend and (not self.targets or self.targets[0] != self.accelerator):
            p.append(f"targets must start with the accelerator {self.accelerator!r}, got {self.targets!r}")
        if not self.npu_backend and (self.targets or self.toolchain):
            p.append("a CPU family has no NPU targets or toolchain")
        if self.toolchain and not self.toolchain_hint:
            p.append("toolchain_hint is empty: say what the toolchain is and where it comes from")
        if not isinstance(self.thermal, ThermalConstants):
            p.append("thermal is not a ThermalConstants")
        else:
            t = self.thermal
            if min(t.p_idle_w, t.p_max_w, t.r_theta_k_per_w, t.tau_s) <= 0 or t.p_max_w < t.p_idle_w:
                p.append("thermal: powers, resistance and time constant must be > 0, p_max_w >= p_idle_w")
            elif t.throttle_c <= t.t_amb_c + t.p_idle_w * t.r_theta_k_per_w:
                p.append("thermal: throttle_c must lie above the idle steady state")
        if "linux" not in self.sensors:
            p.append("sensors must include 'linux'")
        return p

    def to_dict(self) -> dict:
        """Plain data (JSON/YAML), e.g. for the board's agent.yml (``family:``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BoardFamily":
        """The inverse of to_dict. Raises ValueError naming a missing or unknown key."""
        if not isinstance(data, dict):
            raise ValueError(f"a board family is a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise ValueError(f"unknown board-family keys {extra}")
        d = dict(data)
        th = d.get("thermal")
        if not isinstance(th, dict):
            raise ValueError("thermal must be a mapping of ThermalConstants")
        try:
            d["thermal"] = ThermalConstants(**th)
            for k in ("targets", "runtime_major", "sensors", "doctor_checks", "sources"):
                if k in d:
                    d[k] = tuple(d[k] or ())
            return cls(**d)
        except TypeError as e:
            raise ValueError(str(e)) from None
