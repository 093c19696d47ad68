"""The emulated board's thermal and power model (boards with ``emulated: true``).

An emulated board has no SoC sensor of its own (its NPU stages run on onnxruntime on a shared
host), so temperature, power and throttling come from a first-order thermal model driven by the
agent process's measured CPU utilisation. Every channel is labelled ``emulated``.

Model (one thermal mass, one thermal resistance to ambient)::

    P(u) = P_idle + (P_max - P_idle) * u          u = agent CPU time / (wall time * CPUs), 0..1
    dT/dt = (P * Rθ - (T - T_amb)) / τ

Over an interval of length dt with constant P the exact solution is used (stable for any dt)::

    T(t + dt) = T_ss + (T(t) - T_ss) * exp(-dt / τ),    T_ss = T_amb + P * Rθ

The model starts at its idle steady state. When T reaches the board's throttle temperature the
``throttled`` channel reports bits 2 (throttled) and 3 (soft temperature limit) in the Pi's
``get_throttled`` layout (base.THROTTLE_BITS), with the sticky bits 18/19 from then on, so the
measurement protocol treats an emulated board like a real one. The model is deterministic given
its inputs (the clock and CPU-time readings, both injectable).

Constants per board family (``BoardFamily.thermal`` in device_agent/families/<family>.py, read
through THERMAL) — sources and assumptions of the built-in ones:

- ``pi5-hailo8l`` (Pi 5 with the official Active Cooler, as for the AI Kit): fitted to a published
  measurement (qiita.com/j-baba/items/08475f1d066d23e188eb: room ~20 °C, idle 40.0 °C; ``stress -c
  4`` 55.4/58.2/59.8 °C after 1/2/3 min). T_amb 20 °C; Rθ·P_idle = 20 K and Rθ·P_max ≈ 41.5 K give
  idle 40 °C and a 61.5 °C plateau; τ 55 s reproduces the 1-3 min points within 1.1 K. The split
  into P and Rθ is an ASSUMPTION: P_idle 3.0 W / P_max 6.2 W (SoC heat), so Rθ 6.7 K/W. Throttle at
  80 °C: the Pi 5 starts throttling the Arm cores at 80 °C (frequency-management.adoc, device_apis
  §4.1).
- ``rk3588``: ASSUMPTIONS (no measurement at hand): heatsink + fan, T_amb 25 °C, P_idle 2.0 W,
  P_max 8.0 W, Rθ 5.0 K/W (idle 35 °C, plateau 65 °C), τ 60 s. Throttle at 85 °C: the mainline
  device tree's passive trip (rk3588-base.dtsi, device_apis §4.2).
- ``cpu`` (x86 fallback host): ASSUMPTIONS: T_amb 25 °C, P_idle 10 W, P_max 65 W (a desktop
  TDP), Rθ 0.6 K/W (idle 31 °C, plateau 64 °C), τ 30 s, throttle at 95 °C.
- ``pi5-hailo8`` and ``pi5-hailo10h`` (AI HAT+ / AI HAT+ 2 on a Pi 5): the ``pi5-hailo8l``
  constants (ASSUMPTION: the model follows the Pi's SoC; the HAT's own heat is not modelled).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Callable

from ..families import ThermalConstants, registry
from .base import STICKY_SHIFT, Roots, Sensor

THROTTLED_BITS = (1 << 2) | (1 << 3)  # throttled + soft temperature limit (get_throttled layout)


class _Thermal(Mapping):
    """family name -> ThermalConstants, read from the board families (``BoardFamily.thermal``,
    device_agent.families) at lookup time; a board class (``pi5-hailo8l``) also finds the
    constants of its default family."""

    def __getitem__(self, name: str) -> ThermalConstants:
        reg = registry()
        fam = reg.families.get(name)
        if fam is None:
            fam = next((f for f in reg.families.values() if f.board_class == name), None)
        if fam is None:
            raise KeyError(name)
        return fam.thermal

    def __iter__(self):
        return iter(registry().families)

    def __len__(self) -> int:
        return len(registry().families)


#: the emulated thermal model's constants by board family (or board class)
THERMAL = _Thermal()


class ThermalModel:
    """First-order thermal model T' = (P·Rθ − (T − T_amb))/τ.

    Args:
        c: the constants.
        t0_c: start temperature (°C); default the idle steady state T_amb + P_idle·Rθ.
    """

    def __init__(self, c: ThermalConstants, t0_c: float | None = None):
        self.c = c
        self.t_c = c.t_amb_c + c.p_idle_w * c.r_theta_k_per_w if t0_c is None else float(t0_c)

    def power_w(self, util: float) -> float:
        """Heat (W) at CPU utilisation ``util`` (0..1, clipped)."""
        u = min(1.0, max(0.0, float(util)))
        return self.c.p_idle_w + (self.c.p_max_w - self.c.p_idle_w) * u

    def steady_state_c(self, power_w: float) -> float:
        """Temperature (°C) the model settles at under constant ``power_w``."""
        return self.c.t_amb_c + power_w * self.c.r_theta_k_per_w

    def step(self, util: float, dt_s: float) -> float:
        """Advance ``dt_s`` seconds at utilisation ``util``; returns the new temperature (°C).

        Raises:
            ValueError: negative dt_s.
        """
        if dt_s < 0:
            raise ValueError(f"dt_s must be >= 0, got {dt_s}")
        t_ss = self.steady_state_c(self.power_w(util))
        self.t_c = t_ss + (self.t_c - t_ss) * math.exp(-dt_s / self.c.tau_s)
        return self.t_c


def process_cpu_seconds() -> float:
    """CPU time (s) this process used so far, user + system, all threads (os.times)."""
    t = os.times()
    return t.user + t.system


class EmulatedSensor(Sensor):
    """Temperature, power and throttling of an emulated board, from ThermalModel.

    Args:
        board: board family or board class (a key of THERMAL).
        clock: monotonic seconds (injectable for tests).
        cpu_seconds: the process's CPU seconds so far (injectable).
        cpus: CPUs the utilisation is divided by (default os.cpu_count()).
    """

    source = "emulated"
    emulated = True

    def __init__(self, board: str, clock: Callable[[], float] = time.monotonic,
                 cpu_seconds: Callable[[], float] = process_cpu_seconds, cpus: int | None = None):
        super().__init__()
        if board not in THERMAL:
            raise ValueError(f"no thermal constants for board class {board!r}; known: {', '.join(THERMAL)}")
        self.board = board
        self.model = ThermalModel(THERMAL[board])
        self.clock = clock
        self.cpu_seconds = cpu_seconds
        self.cpus = cpus or os.cpu_count() or 1
        self.note = f"first-order thermal model for {board}: {THERMAL[board].source}"
        self.channel("temp.soc", "°C", "temperature", "emulated: thermal model")
        self.channel("power", "W", "power", "emulated: P_idle + (P_max - P_idle) * agent CPU utilisation")
        self.channel("throttled", "flags", "throttle", "emulated: set at the model's throttle temperature")
        self.channel("cpu_util", "%", "utilisation", "emulated model input: agent process CPU share")
        self._last_t = clock()
        self._last_cpu = cpu_seconds()
        self._last_u = 0.0
        self._sticky = 0

    @classmethod
    def probe(cls, config, roots: Roots, **kwargs) -> "EmulatedSensor | None":
        """Present when agent.yml says ``emulated: true``."""
        if not config.emulated:
            return None
        fam = registry().find(config.accelerator)
        name = fam.name if fam is not None and fam.board_class == config.board else config.board
        return cls(name, **{k: v for k, v in kwargs.items() if k in ("clock", "cpu_seconds", "cpus")})

    def advance(self) -> None:
        """Run the model up to now with the utilisation measured since the last call."""
        now, cpu = self.clock(), self.cpu_seconds()
        dt = now - self._last_t
        if dt > 1e-3:
            self._last_u = min(1.0, max(0.0, (cpu - self._last_cpu) / (dt * self.cpus)))
            self.model.step(self._last_u, dt)
            self._last_t, self._last_cpu = now, cpu

    def start(self) -> None:
        """Bring the model up to now (the idle gap before a measurement cools it)."""
        self.advance()

    def read(self):
        self.advance()
        t = self.model.t_c
        now_bits = THROTTLED_BITS if t >= self.model.c.throttle_c else 0
        self._sticky |= now_bits << STICKY_SHIFT
        return {"emulated.temp.soc": t, "emulated.power": self.model.power_w(self._last_u),
                "emulated.throttled": float(now_bits | self._sticky),
                "emulated.cpu_util": 100.0 * self._last_u}, {}
