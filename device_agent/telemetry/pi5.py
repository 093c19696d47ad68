"""Raspberry Pi 5 firmware telemetry through ``vcgencmd`` (docs/reference/device_apis.md §4.1).

- ``vcgencmd measure_temp`` → ``temp=48.3'C``: SoC temperature (°C), more accurate than the
  sysfs zone per Raspberry Pi's frequency-management.adoc.
- ``vcgencmd get_throttled`` → ``throttled=0x50005``: bit mask, decoded bit by bit with
  ``base.THROTTLE_BITS`` (0 undervoltage, 1 arm frequency capped, 2 throttled, 3 soft temperature
  limit; +16 = has occurred since boot). Source: Raspberry Pi os.html#vcgencmd.
- ``vcgencmd measure_clock arm`` → ``frequency(0)=2400000000``: ARM clock in Hz.
- ``vcgencmd pmic_read_adc`` (Pi 5 only): 12 current rails ``X_A current(n)=…A`` and 12 voltage
  rails ``X_V volt(n)=…V`` plus ``EXT5V_V`` and ``BATT_V``. Power = Σ over paired rails of V×A (W).
  This is the SoC side only: the 5 V branch (HATs — so the Hailo AI HAT/Kit —, USB, NVMe) is
  not measured (jfikar/RPi5-power README; ml-energy/zeus#273). ``EXT5V_V`` is the 5 V input;
  the Pi flags undervoltage below about 4.63 V (PierreGode/Ragnar#315).

There is no sysfs route for the PMIC, so every read spawns processes; ``period_s`` (default
0.5 s) bounds that cost. The sticky "since boot" bits catch throttling that happens between
reads.
"""

from __future__ import annotations

import re

from .base import Roots, Sensor, SensorUnavailable

PMIC_NOTE = "SoC rails, excludes the 5 V branch (HATs, USB, NVMe)"
_TEMP = re.compile(r"temp=([-0-9.]+)'C")
_THROTTLED = re.compile(r"throttled=(0x[0-9a-fA-F]+|\d+)")
_CLOCK = re.compile(r"frequency\(\d+\)=(\d+)")
_PMIC = re.compile(r"^\s*(\S+)_([AV])\s+(current|volt)\(\d+\)=([0-9.]+)[AV]\s*$")

COMMANDS = {"temp": "vcgencmd measure_temp", "throttled": "vcgencmd get_throttled",
            "clock": "vcgencmd measure_clock arm", "pmic": "vcgencmd pmic_read_adc"}


def parse_measure_temp(text: str) -> float:
    """``temp=48.3'C`` → 48.3 (°C). Raises ValueError on any other text."""
    m = _TEMP.search(text)
    if not m:
        raise ValueError(f"not a measure_temp reply: {text.strip()[:60]!r}")
    return float(m.group(1))


def parse_get_throttled(text: str) -> int:
    """``throttled=0x50005`` → 0x50005 (bit mask; decode with base.decode_throttle). Raises
    ValueError on any other text."""
    m = _THROTTLED.search(text)
    if not m:
        raise ValueError(f"not a get_throttled reply: {text.strip()[:60]!r}")
    return int(m.group(1), 0)


def parse_measure_clock(text: str) -> int:
    """``frequency(0)=2400000000`` → 2400000000 (Hz). Raises ValueError on any other text."""
    m = _CLOCK.search(text)
    if not m:
        raise ValueError(f"not a measure_clock reply: {text.strip()[:60]!r}")
    return int(m.group(1))


def parse_pmic_read_adc(text: str) -> dict[str, dict[str, float]]:
    """``pmic_read_adc`` output → {rail: {"A": amps, "V": volts}} (a rail may have only "V", e.g.
    EXT5V and BATT). Lines that do not match the documented format are ignored."""
    rails: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _PMIC.match(line)
        if m:
            rails.setdefault(m.group(1), {})[m.group(2)] = float(m.group(4))
    return rails


def pmic_power_w(rails: dict[str, dict[str, float]]) -> float:
    """Σ V×A (W) over rails that have both a current and a voltage reading.

    Raises:
        ValueError: no paired rail (not a Pi 5 PMIC reply).
    """
    pairs = [r["V"] * r["A"] for r in rails.values() if "A" in r and "V" in r]
    if not pairs:
        raise ValueError("pmic_read_adc: no rail has both current and voltage")
    return sum(pairs)


class Pi5Sensor(Sensor):
    """``vcgencmd`` temperature, throttling, ARM clock and PMIC power.

    Args:
        roots: ``roots.commands`` runs vcgencmd.
        pmic: whether ``pmic_read_adc`` works here (Pi 5 only; probed).
        period_s: minimum interval between reads (s).
    """

    source = "pi5"

    def __init__(self, roots: Roots, pmic: bool = True, period_s: float = 0.5):
        super().__init__()
        self.cmd = roots.commands
        self.pmic = pmic
        self.period_s = period_s
        self.channel("temp", "°C", "temperature", "vcgencmd measure_temp (SoC sensor)")
        self.channel("throttled", "flags", "throttle", "vcgencmd get_throttled bit mask")
        self.channel("arm_freq", "Hz", "frequency", "vcgencmd measure_clock arm")
        if pmic:
            self.channel("power_soc", "W", "power", PMIC_NOTE)
            self.channel("ext5v", "V", "voltage", "5 V input (EXT5V_V)")

    @classmethod
    def probe(cls, config, roots: Roots, **kwargs) -> "Pi5Sensor | None":
        """Present when ``vcgencmd measure_temp`` answers in its documented format."""
        cmd = roots.commands
        if not cmd.available("vcgencmd"):
            return None
        try:
            parse_measure_temp(cmd.run(COMMANDS["temp"]))
        except (SensorUnavailable, ValueError):
            return None
        try:
            pmic_power_w(parse_pmic_read_adc(cmd.run(COMMANDS["pmic"])))
            pmic = True
        except (SensorUnavailable, ValueError):
            pmic = False
        return cls(roots, pmic=pmic, period_s=kwargs.get("period_s", 0.5))

    def _get(self, key: str, parse, vals: dict, errs: dict, name: str) -> None:
        try:
            vals[name] = parse(self.cmd.run(COMMANDS[key]))
        except (SensorUnavailable, ValueError) as e:
            vals[name], errs[name] = None, str(e)

    def read(self):
        vals: dict = {}
        errs: dict = {}
        self._get("temp", parse_measure_temp, vals, errs, "pi5.temp")
        self._get("throttled", parse_get_throttled, vals, errs, "pi5.throttled")
        self._get("clock", parse_measure_clock, vals, errs, "pi5.arm_freq")
        if self.pmic:
            try:
                rails = parse_pmic_read_adc(self.cmd.run(COMMANDS["pmic"]))
                vals["pi5.power_soc"] = pmic_power_w(rails)
                vals["pi5.ext5v"] = rails.get("EXT5V", {}).get("V")
            except (SensorUnavailable, ValueError) as e:
                vals["pi5.power_soc"] = vals["pi5.ext5v"] = None
                errs["pi5.power_soc"] = str(e)
        return vals, errs
