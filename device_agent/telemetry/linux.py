"""Generic Linux telemetry: every thermal zone by its type, cpufreq per policy, CPU utilisation
and memory. Present on every board (and on the emulated boards, where thermal zones and cpufreq
may be absent: then only utilisation and memory are reported).

Sources and units:

- ``/sys/class/thermal/thermal_zone*/{type,temp}``: zones are named by ``type``, never by index
  (indices differ between kernels); ``temp`` is in millidegrees Celsius (kernel ABI
  ``Documentation/ABI/testing/sysfs-class-thermal``: "Unit: millidegree Celsius";
  docs/reference/device_apis.md §4.1, §4.2).
- ``/sys/devices/system/cpu/cpufreq/policy*/{scaling_cur_freq,scaling_max_freq}``: kHz (kernel
  ``Documentation/admin-guide/pm/cpufreq.rst``; docs/reference/device_apis.md §4.1). A cpufreq cooling device
  lowers ``scaling_max_freq``, so a drop of it during a measurement is a frequency cap.
- ``/proc/stat`` ``cpu`` lines: jiffies per state (proc(5)); utilisation between two reads is
  100·(1 − Δ(idle+iowait)/Δtotal) %, total being user..steal (guest is already in user).
- ``/proc/meminfo`` ``MemTotal``/``MemAvailable``: kB, reported in MiB.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import Roots, Sensor, SensorUnavailable, read_int, read_text

_STAT_FIELDS = 8  # user nice system idle iowait irq softirq steal (proc(5)); guest is in user


def thermal_zones(sys_root: Path) -> dict[str, Path]:
    """Thermal zones by type: ``{type: zone_dir}``. Zones sharing a type get ``type.2``,
    ``type.3`` in index order (so names stay stable without relying on the index itself)."""
    base = sys_root / "class" / "thermal"
    zones: dict[str, Path] = {}
    dirs = sorted(base.glob("thermal_zone*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    for d in dirs:
        try:
            t = read_text(d / "type")
        except SensorUnavailable:
            continue
        name, k = t, 2
        while name in zones:
            name, k = f"{t}.{k}", k + 1
        zones[name] = d
    return zones


def read_zone_c(zone_dir: Path) -> float:
    """A thermal zone's temperature in °C (sysfs millidegrees / 1000). Raises SensorUnavailable."""
    return read_int(zone_dir / "temp") / 1000.0


def parse_proc_stat(text: str) -> dict[str, tuple[int, int]]:
    """``/proc/stat`` → {"cpu": (total, idle), "cpu0": (...), ...} in jiffies, where idle is
    idle+iowait and total sums user..steal."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            if out:
                break  # the cpu lines come first
            continue
        parts = line.split()
        vals = [int(x) for x in parts[1:1 + _STAT_FIELDS]]
        vals += [0] * (_STAT_FIELDS - len(vals))
        out[parts[0]] = (sum(vals), vals[3] + vals[4])
    return out


def utilisation(prev: tuple[int, int], cur: tuple[int, int]) -> float | None:
    """CPU utilisation (%) between two (total, idle) readings, None when no time passed."""
    dt = cur[0] - prev[0]
    if dt <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * (1.0 - (cur[1] - prev[1]) / dt)))


def parse_meminfo(text: str, keys: tuple = ("MemTotal", "MemAvailable")) -> dict[str, int]:
    """``/proc/meminfo`` → {key: kB} for ``keys`` (stops once all are found; they are the first
    lines)."""
    out = {}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key in keys:
            try:
                out[key] = int(val.split()[0])
            except (ValueError, IndexError):
                continue
            if len(out) == len(keys):
                break
    return out


class LinuxSensor(Sensor):
    """Thermal zones, cpufreq policies, CPU utilisation (total and per CPU) and memory.

    Args:
        roots: where /sys and /proc are.
    """

    source = "linux"

    def __init__(self, roots: Roots):
        super().__init__()
        self.roots = roots
        self.zones = thermal_zones(roots.sys)
        for t in self.zones:
            self.channel(f"temp.{t}", "°C", "temperature")
        pol_dir = roots.sys / "devices" / "system" / "cpu" / "cpufreq"
        self.policies = {p.name: p for p in sorted(pol_dir.glob("policy*"),
                                                   key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
                         if (p / "scaling_cur_freq").exists()}
        for name in self.policies:
            self.channel(f"freq.{name}", "kHz", "frequency")
            self.channel(f"freq_max.{name}", "kHz", "frequency_max",
                         "scaling_max_freq: lowered by cpufreq cooling devices")
        self.stat_path = roots.proc / "stat"
        self.cpus: list[str] = []
        try:
            self.cpus = list(parse_proc_stat(read_text(self.stat_path)))
        except SensorUnavailable:
            pass
        for cpu in self.cpus:
            self.channel("cpu_util" if cpu == "cpu" else f"cpu_util.{cpu}", "%", "utilisation")
        self.meminfo_path = roots.proc / "meminfo"
        if self.meminfo_path.exists():
            self.channel("mem_used", "MiB", "memory", "MemTotal - MemAvailable")
            self.channel("mem_available", "MiB", "memory")
        self._prev: dict[str, tuple[int, int]] = {}

    @classmethod
    def probe(cls, config, roots: Roots, **_) -> "LinuxSensor | None":
        s = cls(roots)
        return s if s.channels else None

    def start(self) -> None:
        """Prime the /proc/stat counters so the next read's utilisation covers only the window."""
        try:
            self._prev = parse_proc_stat(read_text(self.stat_path))
        except SensorUnavailable:
            self._prev = {}

    def read(self):
        vals: dict[str, float | None] = {}
        errs: dict[str, str] = {}
        for t, d in self.zones.items():
            name = f"linux.temp.{t}"
            try:
                vals[name] = read_zone_c(d)
            except SensorUnavailable as e:
                vals[name], errs[name] = None, str(e)
        for p, d in self.policies.items():
            for q, f in (("freq", "scaling_cur_freq"), ("freq_max", "scaling_max_freq")):
                name = f"linux.{q}.{p}"
                try:
                    vals[name] = float(read_int(d / f))
                except SensorUnavailable as e:
                    vals[name], errs[name] = None, str(e)
        if self.cpus:
            try:
                cur = parse_proc_stat(read_text(self.stat_path))
            except SensorUnavailable as e:
                cur, errs["linux.cpu_util"] = {}, str(e)
            for cpu in self.cpus:
                name = "linux.cpu_util" if cpu == "cpu" else f"linux.cpu_util.{cpu}"
                vals[name] = utilisation(self._prev[cpu], cur[cpu]) if cpu in self._prev and cpu in cur else None
            if cur:
                self._prev = cur
        if self.meminfo_path.exists():
            try:
                mi = parse_meminfo(read_text(self.meminfo_path))
                vals["linux.mem_used"] = (mi["MemTotal"] - mi["MemAvailable"]) / 1024.0
                vals["linux.mem_available"] = mi["MemAvailable"] / 1024.0
            except (SensorUnavailable, KeyError) as e:
                vals["linux.mem_used"] = vals["linux.mem_available"] = None
                errs["linux.mem"] = f"meminfo: {e}"
        return vals, errs
