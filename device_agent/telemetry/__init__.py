"""Board telemetry: one sensor plug-in per source, discovered when the agent starts.

=========  ========================================================================
plug-in    what it reads (docs/reference/device_apis.md)
=========  ========================================================================
linux      every thermal zone by type, cpufreq per policy, /proc/stat, meminfo
pi5        vcgencmd temperature, get_throttled, ARM clock, PMIC power (§4.1)
rk3588     canonical thermal zones, rknpu load per core, NPU devfreq, INA2xx (§4.2)
hailo      Hailo chip temperature ts0/ts1, module power where supported (§1.5, §4.3)
emulated   first-order thermal model driven by the agent's CPU use (emulated boards)
=========  ========================================================================

Each plug-in's ``probe`` decides from what is present (files, commands, libraries), so a real
Pi 5 gets ``linux`` + ``pi5`` (+ ``hailo``), an RK3588 ``linux`` + ``rk3588``, and an emulated
board ``linux`` + ``emulated``. Everything reads through :class:`Roots`, so tests and replays
point the sensors at fixture trees and recorded command outputs. Stdlib only.
"""

from __future__ import annotations

import sys

from .base import (
    THROTTLE_BITS,
    Channel,
    CommandRunner,
    RecordedCommands,
    Roots,
    Sensor,
    SensorUnavailable,
    decode_throttle,
)
from .emulated import EmulatedSensor, ThermalModel
from .hailo import HailoSensor
from .linux import LinuxSensor
from .pi5 import Pi5Sensor
from .rk3588 import Rk3588Sensor
from .sampler import DEFAULT_RATE_HZ, Sampler
from .summary import integrate_energy_j, merge, summarize

#: plug-ins in discovery order
SENSORS: dict[str, type[Sensor]] = {
    "linux": LinuxSensor, "pi5": Pi5Sensor, "rk3588": Rk3588Sensor, "hailo": HailoSensor,
    "emulated": EmulatedSensor,
}


def discover(config, roots: Roots | None = None, backends=None, only: list[str] | None = None) -> list[Sensor]:
    """The sensors present on this board.

    Args:
        config: the BoardConfig (board class, accelerator, emulated).
        roots: where to read (default ``Roots.from_env()``: the live system unless the
            FLEET_TELEMETRY_* variables point elsewhere).
        backends: the agent's backends (the hailo sensor reads through the hailo backend's VDevice).
        only: restrict to these plug-in names.

    A probe that fails unexpectedly is reported on stderr and skipped; discovery never raises.
    """
    roots = roots or Roots.from_env()
    found = []
    for name, cls in SENSORS.items():
        if only is not None and name not in only:
            continue
        try:
            s = cls.probe(config, roots, backends=backends)
        except Exception as e:
            print(f"fleet-agent: telemetry plug-in {name} failed to probe: {type(e).__name__}: {e}",
                  file=sys.stderr)
            continue
        if s is not None:
            found.append(s)
    return found


__all__ = ["SENSORS", "discover", "Sampler", "Sensor", "Channel", "Roots", "CommandRunner",
           "RecordedCommands", "SensorUnavailable", "THROTTLE_BITS", "decode_throttle",
           "LinuxSensor", "Pi5Sensor", "Rk3588Sensor", "HailoSensor", "EmulatedSensor", "ThermalModel",
           "summarize", "merge", "integrate_energy_j", "DEFAULT_RATE_HZ"]
