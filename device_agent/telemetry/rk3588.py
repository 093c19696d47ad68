"""RK3588 telemetry (docs/reference/device_apis.md §4.2, pitfall §5.7).

- Thermal zones under canonical names, whatever the kernel calls them. Mainline
  (``rk3588-base.dtsi``): ``package-thermal``, ``bigcore0-thermal``, ``bigcore2-thermal``,
  ``littlecore-thermal``, ``center-thermal``, ``gpu-thermal``, ``npu-thermal``. Vendor/BSP
  kernels: ``soc_thermal``/``soc-thermal``, ``bigcore0``, ``bigcore1``, ``littlecore``,
  ``center``, ``gpu``, ``npu`` with ``_thermal``/``-thermal`` suffixes (htop-dev/htop#1404; the
  exact BSP sysfs spelling is unconfirmed, so matching ignores ``_``/``-`` and the suffix).
  Mainline's ``bigcore2`` (cores 6-7, named after its first core) is the vendor ``bigcore1``.
  Values in millidegrees °C (sysfs-class-thermal ABI).
- NPU load per core: ``/sys/kernel/debug/rknpu/load`` → ``NPU load:  Core0: 21%, Core1: 11%,
  Core2:  0%,`` (vendor rknpu driver; needs root and debugfs). Values outside 0-100 % are sensor
  errors (``Core2: 429496%`` after a failed submit, rockchip-linux/rknpu2#102), reported as
  errors with no value.
- NPU frequency (Hz): devfreq ``/sys/class/devfreq/fdab0000.npu/cur_freq``, else another devfreq
  device named ``*npu*``, else ``/sys/kernel/debug/rknpu/freq`` (rknn_model_zoo
  scaling_frequency.sh; MarcA711/Rockchip-FFmpeg-Builds#3).
- Power: the SoC exposes none. Where a board has an INA2xx, hwmon ``ina2xx`` (hwmon ``name`` is
  the chip, e.g. ``ina226``) gives ``power1_input`` in µW (kernel
  ``Documentation/hwmon/sysfs-interface``), reported in W. What it measures depends on where the
  board puts the shunt, so it is labelled as the board sensor it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import Roots, Sensor, SensorUnavailable, read_int, read_text
from .linux import read_zone_c, thermal_zones

#: normalised zone type (lower case, ``_`` → ``-``, ``-thermal`` stripped) → canonical name
ZONE_NAMES = {
    "package": "soc", "soc": "soc",
    "bigcore0": "bigcore0", "bigcore1": "bigcore1", "bigcore2": "bigcore1",
    "littlecore": "littlecore", "center": "center", "gpu": "gpu", "npu": "npu",
}
NPU_CORES = 3  # RK3588 NPU: three cores (core masks NPU_CORE_0..2, device_apis §3.1)
_LOAD = re.compile(r"Core(\d+):\s*(-?\d+)%")
_INA = re.compile(r"^ina2(\d\d|xx)$")
DEVFREQ_NPU = "fdab0000.npu"


def canonical_zone(zone_type: str) -> str | None:
    """The canonical RK3588 zone name of a kernel zone type (mainline or vendor), or None."""
    t = zone_type.lower().replace("_", "-")
    if t.endswith("-thermal"):
        t = t[: -len("-thermal")]
    return ZONE_NAMES.get(t)


def parse_npu_load(text: str) -> dict[int, int]:
    """``NPU load:  Core0: 21%, Core1: 11%, Core2:  0%,`` → {0: 21, 1: 11, 2: 0} (%, raw: not
    checked for plausibility). Raises ValueError when no ``CoreN: x%`` is present."""
    out = {int(c): int(v) for c, v in _LOAD.findall(text)}
    if not out:
        raise ValueError(f"not an rknpu load line: {text.strip()[:80]!r}")
    return out


def plausible_load(pct: int) -> bool:
    """A load percentage is plausible in [0, 100] (pitfall §5.7)."""
    return 0 <= pct <= 100


def find_ina2xx(sys_root: Path) -> dict[str, Path]:
    """hwmon INA2xx devices with a power reading: {"<chip>" or "<chip>.<hwmonN>": hwmon dir}."""
    out: dict[str, Path] = {}
    for d in sorted((sys_root / "class" / "hwmon").glob("hwmon*")):
        try:
            name = read_text(d / "name")
        except SensorUnavailable:
            continue
        if _INA.match(name) and (d / "power1_input").exists():
            out[name if name not in out else f"{name}.{d.name}"] = d
    return out


class Rk3588Sensor(Sensor):
    """Canonical thermal zones, NPU load per core, NPU frequency, optional INA2xx power.

    Args:
        roots: where /sys is (debugfs is ``<sys>/kernel/debug``).
    """

    source = "rk3588"

    def __init__(self, roots: Roots):
        super().__init__()
        self.roots = roots
        self.zones: dict[str, Path] = {}
        for ztype, d in thermal_zones(roots.sys).items():
            name = canonical_zone(ztype)
            if name and name not in self.zones:
                self.zones[name] = d
                self.channel(f"temp.{name}", "°C", "temperature", f"kernel zone type {ztype}")
        dbg = roots.sys / "kernel" / "debug" / "rknpu"
        self.load_path = dbg / "load" if (dbg / "load").exists() else None
        if self.load_path:
            for core in range(NPU_CORES):
                self.channel(f"npu_load.core{core}", "%", "load", "rknpu debugfs load")
        self.freq_path = self._npu_freq_path(roots.sys)
        if self.freq_path:
            self.channel("npu_freq", "Hz", "frequency", str(self.freq_path.relative_to(roots.sys)))
        self.ina = find_ina2xx(roots.sys)
        for name, d in self.ina.items():
            self.channel(f"power.{name}", "W", "power", f"board {name} sensor ({d.name}); scope is where "
                         "the board's shunt sits")

    @staticmethod
    def _npu_freq_path(sys_root: Path) -> Path | None:
        devfreq = sys_root / "class" / "devfreq"
        cands = [devfreq / DEVFREQ_NPU / "cur_freq"]
        cands += sorted(p / "cur_freq" for p in devfreq.glob("*npu*") if p.name != DEVFREQ_NPU)
        cands.append(sys_root / "kernel" / "debug" / "rknpu" / "freq")
        return next((p for p in cands if p.exists()), None)

    @classmethod
    def probe(cls, config, roots: Roots, **_) -> "Rk3588Sensor | None":
        """Present when the rknpu driver, an NPU devfreq device, or RK3588 zone names exist."""
        s = cls(roots)
        rk_zones = set(s.zones) & {"npu", "bigcore0", "bigcore1", "littlecore"}
        if s.load_path or s.freq_path or len(rk_zones) >= 2:
            return s
        return None

    def read(self):
        vals: dict = {}
        errs: dict = {}
        for name, d in self.zones.items():
            ch = f"rk3588.temp.{name}"
            try:
                vals[ch] = read_zone_c(d)
            except SensorUnavailable as e:
                vals[ch], errs[ch] = None, str(e)
        if self.load_path:
            names = [f"rk3588.npu_load.core{c}" for c in range(NPU_CORES)]
            try:
                loads = parse_npu_load(read_text(self.load_path))
            except (SensorUnavailable, ValueError) as e:
                loads = {}
                errs["rk3588.npu_load"] = str(e)
            for c, ch in enumerate(names):
                v = loads.get(c)
                if v is not None and not plausible_load(v):
                    errs[ch] = f"implausible NPU load {v}% on core {c} (sensor error, rknpu2#102)"
                    v = None
                vals[ch] = None if v is None else float(v)
        if self.freq_path:
            try:
                vals["rk3588.npu_freq"] = float(read_int(self.freq_path))
            except SensorUnavailable as e:
                vals["rk3588.npu_freq"], errs["rk3588.npu_freq"] = None, str(e)
        for name, d in self.ina.items():
            ch = f"rk3588.power.{name}"
            try:
                vals[ch] = read_int(d / "power1_input") / 1e6  # µW → W
            except SensorUnavailable as e:
                vals[ch], errs[ch] = None, str(e)
        return vals, errs
