"""Sensor plug-ins on fixture trees and recorded command outputs (tests/fixtures/telemetry)."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from device_agent.config import BoardConfig
from device_agent.telemetry import (
    SENSORS,
    HailoSensor,
    LinuxSensor,
    Pi5Sensor,
    RecordedCommands,
    Rk3588Sensor,
    Roots,
    decode_throttle,
    discover,
)
from device_agent.telemetry.linux import parse_proc_stat, utilisation
from device_agent.telemetry.pi5 import (
    PMIC_NOTE,
    parse_get_throttled,
    parse_measure_clock,
    parse_measure_temp,
    parse_pmic_read_adc,
    pmic_power_w,
)
from device_agent.telemetry.rk3588 import canonical_zone, parse_npu_load

FIX = Path(__file__).parent / "fixtures" / "telemetry"


def roots(name: str, tmp_path=None) -> Roots:
    base = FIX / name
    if tmp_path is not None:  # a writable copy
        shutil.copytree(base, tmp_path / name)
        base = tmp_path / name
    cmds = base / "commands"
    return Roots(sys=base / "sys", proc=base / "proc",
                 commands=RecordedCommands.from_dir(cmds) if cmds.exists() else RecordedCommands({}))


def cfg(board="cpu", accelerator="cpu", emulated=False):
    return BoardConfig(board=board, accelerator=accelerator, emulated=emulated, root=Path("/tmp"))


# ------------------------------------------------------------------------------------- pi5
def test_vcgencmd_parsers_on_documented_formats():
    assert parse_measure_temp("temp=48.3'C\n") == 48.3
    assert parse_get_throttled("throttled=0x50005") == 0x50005
    assert parse_get_throttled("throttled=0x0") == 0
    assert parse_measure_clock("frequency(0)=2400000000") == 2_400_000_000
    for bad, fn in (("error=1", parse_measure_temp), ("", parse_get_throttled), ("frequency=1", parse_measure_clock)):
        with pytest.raises(ValueError):
            fn(bad)


def test_get_throttled_decoded_bit_by_bit():
    d = decode_throttle(0x50005)  # the classic undervoltage report
    assert d["now"] == {"undervoltage": True, "frequency_capped": False, "throttled": True, "soft_temp_limit": False}
    assert d["since_boot"] == {"undervoltage": True, "frequency_capped": False, "throttled": True,
                               "soft_temp_limit": False}
    d = decode_throttle(0x80000)  # soft limit happened since boot, not now
    assert not any(d["now"].values()) and d["since_boot"]["soft_temp_limit"]
    for bit, flag in ((0, "undervoltage"), (1, "frequency_capped"), (2, "throttled"), (3, "soft_temp_limit")):
        assert [k for k, v in decode_throttle(1 << bit)["now"].items() if v] == [flag]
        assert [k for k, v in decode_throttle(1 << (bit + 16))["since_boot"].items() if v] == [flag]


def test_pmic_total_is_sum_of_paired_rails():
    text = (FIX / "pi5_throttled" / "commands" / "vcgencmd pmic_read_adc.txt").read_text()
    rails = parse_pmic_read_adc(text)
    assert len(rails) == 14  # 12 paired rails + EXT5V and BATT (voltage only)
    assert rails["VDD_CORE"] == {"A": 10.87674, "V": 0.8974594}
    assert set(rails["EXT5V"]) == {"V"} and set(rails["BATT"]) == {"V"}
    expected = sum(r["A"] * r["V"] for r in rails.values() if "A" in r)
    assert pmic_power_w(rails) == pytest.approx(expected)
    assert pmic_power_w(rails) == pytest.approx(10.80, abs=0.01)  # VDD_CORE alone is 9.76 W
    with pytest.raises(ValueError):
        pmic_power_w(parse_pmic_read_adc("     EXT5V_V volt(24)=5.06788000V"))


def test_throttled_pi_fixture():
    r = roots("pi5_throttled")
    s = Pi5Sensor.probe(cfg("pi5-hailo8l", "hailo8l"), r)
    assert s is not None and s.pmic
    vals, errs = s.read()
    assert errs == {}
    assert vals["pi5.temp"] == 84.3
    assert decode_throttle(int(vals["pi5.throttled"]))["now"]["throttled"]
    assert vals["pi5.arm_freq"] == 1_500_002_000
    assert vals["pi5.power_soc"] == pytest.approx(10.80, abs=0.01)
    assert vals["pi5.ext5v"] == pytest.approx(5.06788)
    power = next(c for c in s.channels if c.name == "pi5.power_soc")
    assert power.unit == "W" and power.note == PMIC_NOTE == "SoC rails, excludes the 5 V branch (HATs, USB, NVMe)"


def test_pi5_absent_without_vcgencmd_and_failures_become_errors():
    assert Pi5Sensor.probe(cfg(), Roots(commands=RecordedCommands({}))) is None
    cmds = RecordedCommands({"vcgencmd measure_temp": "temp=50.0'C", "vcgencmd get_throttled": "garbage"})
    s = Pi5Sensor.probe(cfg(), Roots(commands=cmds))
    assert s is not None and not s.pmic  # a Pi without PMIC access: no power channel
    assert "pi5.power_soc" not in [c.name for c in s.channels]
    vals, errs = s.read()
    assert vals["pi5.temp"] == 50.0 and vals["pi5.throttled"] is None and "pi5.throttled" in errs
    assert vals["pi5.arm_freq"] is None and "no recorded output" in errs["pi5.arm_freq"]


def test_recorded_commands_play_in_turn():
    c = RecordedCommands({"vcgencmd get_throttled": ["throttled=0x0", "throttled=0x4", "throttled=0x40004"]})
    assert [c.run("vcgencmd get_throttled") for _ in range(4)] == [
        "throttled=0x0", "throttled=0x4", "throttled=0x40004", "throttled=0x40004"]


# ----------------------------------------------------------------------------------- linux
def test_linux_zones_by_type_cpufreq_util_memory(tmp_path):
    r = roots("pi5_throttled", tmp_path)
    s = LinuxSensor(r)
    names = [c.name for c in s.channels]
    assert "linux.temp.cpu-thermal" in names and "linux.freq.policy0" in names
    assert {"linux.cpu_util", "linux.cpu_util.cpu3", "linux.mem_used"} <= set(names)
    assert next(c for c in s.channels if c.name == "linux.freq.policy0").unit == "kHz"
    s.start()
    stat = r.proc / "stat"
    # +1000 jiffies in total, 250 of them idle/iowait → 75 % busy
    stat.write_text(stat.read_text().replace("cpu  10000 0 2000 80000 500", "cpu  10600 0 2150 80200 550"))
    vals, errs = s.read()
    assert errs == {}
    assert vals["linux.temp.cpu-thermal"] == 84.312  # millidegrees → °C
    assert vals["linux.freq.policy0"] == 1_500_000 and vals["linux.freq_max.policy0"] == 2_400_000
    assert vals["linux.cpu_util"] == pytest.approx(75.0)
    assert vals["linux.cpu_util.cpu0"] is None  # no time passed on cpu0 in the fixture
    assert vals["linux.mem_used"] == pytest.approx((8245884 - 7340032) / 1024)
    (r.sys / "class/thermal/thermal_zone0/temp").unlink()
    vals, errs = s.read()
    assert vals["linux.temp.cpu-thermal"] is None and "linux.temp.cpu-thermal" in errs


def test_proc_stat_utilisation_math():
    a = parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\n")
    b = parse_proc_stat("cpu  150 0 150 750 150 0 0 0 0 0\n")
    assert a["cpu"] == (1000, 800)
    assert utilisation(a["cpu"], b["cpu"]) == pytest.approx(50.0)
    assert utilisation(a["cpu"], a["cpu"]) is None


def test_duplicate_zone_types_are_kept_apart(tmp_path):
    for i, (t, v) in enumerate((("acpitz", "40000"), ("acpitz", "45000"), ("x86_pkg_temp", "50000"))):
        d = tmp_path / "sys/class/thermal" / f"thermal_zone{i}"
        d.mkdir(parents=True)
        (d / "type").write_text(t + "\n")
        (d / "temp").write_text(v + "\n")
    s = LinuxSensor(Roots(sys=tmp_path / "sys", proc=tmp_path / "proc"))
    vals, _ = s.read()
    assert vals == {"linux.temp.acpitz": 40.0, "linux.temp.acpitz.2": 45.0, "linux.temp.x86_pkg_temp": 50.0}


# ---------------------------------------------------------------------------------- rk3588
@pytest.mark.parametrize("ztype, name", [
    ("package-thermal", "soc"), ("soc-thermal", "soc"), ("soc_thermal", "soc"),
    ("bigcore0-thermal", "bigcore0"), ("bigcore2-thermal", "bigcore1"), ("bigcore1_thermal", "bigcore1"),
    ("littlecore-thermal", "littlecore"), ("npu", "npu"), ("cpu-thermal", None), ("acpitz", None),
])
def test_rk3588_zone_names_mainline_and_vendor(ztype, name):
    assert canonical_zone(ztype) == name


def test_rk3588_vendor_kernel_fixture():
    s = Rk3588Sensor.probe(cfg("rk3588", "rk3588"), roots("rk3588_vendor"))
    assert s is not None
    vals, errs = s.read()
    assert vals["rk3588.temp.soc"] == 52.3 and vals["rk3588.temp.bigcore1"] == 54.1
    assert vals["rk3588.temp.npu"] == 55.2
    assert vals["rk3588.npu_load.core0"] == 21 and vals["rk3588.npu_load.core1"] == 11
    assert vals["rk3588.npu_load.core2"] is None  # 429496 % is a sensor error, not a load
    assert "implausible" in errs["rk3588.npu_load.core2"]
    assert vals["rk3588.npu_freq"] == 1e9
    assert vals["rk3588.power.ina226"] == pytest.approx(4.52)  # 4 520 000 µW
    assert next(c for c in s.channels if c.name == "rk3588.power.ina226").unit == "W"


def test_rk3588_mainline_fixture_same_names():
    s = Rk3588Sensor.probe(cfg("rk3588", "rk3588"), roots("rk3588_mainline"))
    vals, errs = s.read()
    assert errs == {}
    assert vals["rk3588.temp.soc"] == 45.1 and vals["rk3588.temp.bigcore1"] == 46.5  # from bigcore2-thermal
    assert not any(c.name.startswith("rk3588.npu_load") for c in s.channels)  # no debugfs
    assert vals["rk3588.npu_freq"] == 8e8
    assert not any(c.kind == "power" for c in s.channels)


def test_npu_load_parser():
    assert parse_npu_load("NPU load:  Core0: 21%, Core1: 11%, Core2:  0%,") == {0: 21, 1: 11, 2: 0}
    with pytest.raises(ValueError):
        parse_npu_load("permission denied")


def test_rk3588_absent_on_a_pi():
    assert Rk3588Sensor.probe(cfg(), roots("pi5_throttled")) is None


# ----------------------------------------------------------------------------------- hailo
class FakeControl:
    def __init__(self, fail=False):
        self.fail = fail

    def get_chip_temperature(self):
        if self.fail:
            raise RuntimeError("HAILO_TIMEOUT")
        return SimpleNamespace(ts0_temperature=51.5, ts1_temperature=52.25, sample_count=7)

    def power_measurement(self, dvm, kind):
        assert (dvm, kind) == ("AUTO", "POWER")
        return 1.75


HP = SimpleNamespace(DvmTypes=SimpleNamespace(AUTO="AUTO"), PowerMeasurementTypes=SimpleNamespace(POWER="POWER"))


def test_hailo_temperature_and_power_only_when_supported():
    s = HailoSensor(lambda: FakeControl(), power=True, hp=HP)
    vals, errs = s.read()
    assert vals == {"hailo.temp.ts0": 51.5, "hailo.temp.ts1": 52.25, "hailo.power": 1.75} and errs == {}
    s = HailoSensor(lambda: FakeControl(), power=False, hp=HP)
    assert "hailo.power" not in [c.name for c in s.channels]
    assert s.read()[0] == {"hailo.temp.ts0": 51.5, "hailo.temp.ts1": 52.25}


def test_hailo_errors_never_raise():
    vals, errs = HailoSensor(lambda: None, power=True, hp=HP).read()
    assert all(v is None for v in vals.values()) and "not open" in errs["hailo"]
    vals, errs = HailoSensor(lambda: FakeControl(fail=True), power=False, hp=HP).read()
    assert vals["hailo.temp.ts0"] is None and "HAILO_TIMEOUT" in errs["hailo.temp"]


def test_hailo_probe_skips_emulated_and_non_hailo_boards():
    assert HailoSensor.probe(cfg("pi5-hailo8l", "hailo8l", emulated=True), Roots()) is None
    assert HailoSensor.probe(cfg("rk3588", "rk3588"), Roots()) is None


# ------------------------------------------------------------------------------- discovery
def test_discovery_picks_plugins_by_what_is_present():
    found = discover(cfg("pi5-hailo8l", "hailo8l"), roots("pi5_throttled"))
    assert [s.source for s in found] == ["linux", "pi5"]
    found = discover(cfg("rk3588", "rk3588", emulated=True), roots("rk3588_vendor"))
    assert [s.source for s in found] == ["linux", "rk3588", "emulated"]
    emu = found[-1].describe()
    assert emu["emulated"] is True and all(c["emulated"] for c in emu["channels"])
    assert "first-order thermal model" in emu["note"]
    assert list(SENSORS) == ["linux", "pi5", "rk3588", "hailo", "emulated"]


def test_roots_from_env(tmp_path):
    r = Roots.from_env({"FLEET_TELEMETRY_SYS": str(FIX / "rk3588_mainline" / "sys"),
                        "FLEET_TELEMETRY_COMMANDS": str(FIX / "pi5_throttled" / "commands")})
    assert r.sys == FIX / "rk3588_mainline" / "sys" and r.proc == Path("/proc")
    assert r.commands.run("vcgencmd measure_temp").strip() == "temp=84.3'C"
