"""The sampler, summaries (energy integration on known traces, throttle events, frequency drops),
their merge, and the agent's `run` telemetry and `telemetry` op."""

import json
import time
from pathlib import Path

import pytest

from device_agent.agent import Agent
from device_agent.config import BoardConfig
from device_agent.protocol import Request, encode_reply
from device_agent.telemetry import (
    Channel,
    RecordedCommands,
    Roots,
    Sampler,
    Sensor,
    merge,
    summarize,
)
from device_agent.telemetry.pi5 import Pi5Sensor
from device_agent.telemetry.summary import integrate_energy_j

FIX = Path(__file__).parent / "fixtures" / "telemetry"


def trace(channels: dict[str, tuple[str, str]], t: list, **values) -> dict:
    """A trace from {name: (unit, kind)} and per-channel value lists (keyword = name with _ for .)."""
    chans = [Channel(n, u, k, n.split(".")[0]).to_dict() for n, (u, k) in channels.items()]
    vals = {n: values[n.replace(".", "_").replace("-", "_")] for n in channels}
    return {"t0": 0.0, "rate_hz": 10.0, "decimated": 1, "channels": chans, "t": t, "values": vals, "errors": {}}


# ------------------------------------------------------------------------------ energy
def test_energy_of_constant_and_ramp_power():
    t = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert integrate_energy_j(t, [5.0] * 5) == (pytest.approx(10.0), pytest.approx(2.0))
    # ramp 0 → 8 W over 2 s: ∫ = 8 J exactly under the trapezoid rule
    assert integrate_energy_j(t, [0.0, 2.0, 4.0, 6.0, 8.0])[0] == pytest.approx(8.0)
    # missing readings leave gaps out of both energy and covered time
    e, cov = integrate_energy_j(t, [4.0, None, 4.0, 4.0, 4.0])
    assert (e, cov) == (pytest.approx(4.0), pytest.approx(1.0))


def test_summary_energy_per_inference_and_temperatures():
    tr = trace({"pi5.power_soc": ("W", "power"), "pi5.temp": ("°C", "temperature")},
               [0.0, 1.0, 2.0, 3.0], pi5_power_soc=[3.0, 5.0, 5.0, 3.0], pi5_temp=[50.0, 60.0, 70.0, None])
    s = summarize(tr, inferences=4)
    p = s["power"]["pi5.power_soc"]
    assert p["energy_j"] == pytest.approx(4 + 5 + 4)  # trapezoids: 4, 5, 4 J
    assert p["mean_w"] == pytest.approx(13 / 3) and p["energy_per_inference_j"] == pytest.approx(13 / 4)
    assert s["temperature"]["pi5.temp"] == {"max_c": 70.0, "mean_c": 60.0, "start_c": 50.0, "end_c": 70.0,
                                            "n": 3, "emulated": False}
    assert s["duration_s"] == 3.0 and s["samples"] == 4
    with pytest.raises(ValueError):
        summarize(tr, inferences=0)


def test_throttle_events_from_now_bits_and_sticky_bits():
    ch = {"pi5.throttled": ("flags", "throttle")}
    quiet = summarize(trace(ch, [0, 1, 2], pi5_throttled=[0x0, 0x0, 0x0]))
    assert quiet["throttle"]["events"] == 0 and not quiet["throttle"]["throttled"]
    assert quiet["throttle"]["channels"] == ["pi5.throttled"]
    # throttled twice (two rising edges), soft limit with it
    s = summarize(trace(ch, [0, 1, 2, 3, 4], pi5_throttled=[0x0, 0xC, 0x4000C, 0xC0000, 0xC000C]))["throttle"]
    assert s["events"] == 2 and s["throttled"] and s["soft_temp_limit"] and not s["undervoltage"]
    # frequency capping that came and went between two samples: only the sticky bit shows it
    s = summarize(trace(ch, [0, 1], pi5_throttled=[0x0, 0x20000]))["throttle"]
    assert s["events"] == 1 and s["frequency_capped"]
    # a sticky bit already set at the start is history, not this measurement
    s = summarize(trace(ch, [0, 1], pi5_throttled=[0x50000, 0x50000]))["throttle"]
    assert s["events"] == 0 and not s["undervoltage"]


def test_cpufreq_cap_and_frequency_drops():
    ch = {"linux.freq.policy0": ("kHz", "frequency"), "linux.freq_max.policy0": ("kHz", "frequency_max")}
    s = summarize(trace(ch, [0, 1, 2, 3, 4],
                        linux_freq_policy0=[2400000, 2400000, 1500000, 2400000, 1800000],
                        linux_freq_max_policy0=[2400000, 2400000, 1800000, 1800000, 2400000]))
    assert s["throttle"]["frequency_capped"] and s["throttle"]["events"] == 1
    f = s["frequency"]["linux.freq.policy0"]
    assert f["drops"] == 2 and f["min"] == 1500000 and f["unit"] == "kHz"


def test_merge_sums_energy_and_keeps_extremes():
    a = summarize(trace({"e.power": ("W", "power"), "e.temp": ("°C", "temperature"), "e.thr": ("flags", "throttle")},
                        [0, 1], e_power=[2.0, 2.0], e_temp=[40.0, 42.0], e_thr=[0, 0]))
    b = summarize(trace({"e.power": ("W", "power"), "e.temp": ("°C", "temperature"), "e.thr": ("flags", "throttle")},
                        [0, 1, 3], e_power=[6.0, 6.0, 6.0], e_temp=[43.0, 50.0, 45.0], e_thr=[0, 4, 4]))
    m = merge([a, b])
    assert m["inferences"] == 2 and m["samples"] == 5 and m["duration_s"] == 4.0
    p = m["power"]["e.power"]
    assert p["energy_j"] == pytest.approx(2 + 18) and p["mean_w"] == pytest.approx(20 / 4)
    assert p["energy_per_inference_j"] == pytest.approx(10.0)
    t = m["temperature"]["e.temp"]
    assert (t["max_c"], t["start_c"], t["end_c"], t["n"]) == (50.0, 40.0, 45.0, 5)
    assert t["mean_c"] == pytest.approx((40 + 42 + 43 + 50 + 45) / 5)
    assert m["throttle"]["throttled"] and m["throttle"]["events"] == 1


# ------------------------------------------------------------------------------ sampler
class Counter(Sensor):
    source = "fake"

    def __init__(self, period_s=0.0):
        super().__init__()
        self.period_s = period_s
        self.n = 0
        self.channel("power", "W", "power")
        self.channel("temp", "°C", "temperature")

    @classmethod
    def probe(cls, config, roots, **_):
        return cls()

    def read(self):
        self.n += 1
        return {f"{self.source}.power": 2.0, f"{self.source}.temp": 40.0 + self.n}, {}


class Broken(Sensor):
    source = "broken"

    def __init__(self):
        super().__init__()
        self.channel("x", "W", "power")

    @classmethod
    def probe(cls, config, roots, **_):
        return cls()

    def read(self):
        raise RuntimeError("boom")


def test_sampler_rate_start_stop_and_broken_sensors():
    c, slow = Counter(), Counter(period_s=10.0)
    slow.source = "slow"
    slow.channels = []
    slow.channel("power", "W", "power")
    with Sampler([c, slow, Broken()], rate_hz=50) as s:
        time.sleep(0.3)
    tel = s.telemetry()
    tr = tel["trace"]
    n = len(tr["t"])
    assert 8 <= n <= 25  # ~0.3 s at 50 Hz plus the opening and closing samples
    assert tr["t"][0] == 0.0 and tr["t"] == sorted(tr["t"])
    slow_vals = tr["values"]["slow.power"]
    assert slow_vals[0] is not None and slow_vals[-1] is not None and slow_vals.count(None) == n - 2
    assert tr["errors"]["broken"]["count"] == n and "boom" in tr["errors"]["broken"]["message"]
    assert tel["summary"]["power"]["fake.power"]["mean_w"] == pytest.approx(2.0)
    json.dumps(tel, allow_nan=False)
    with pytest.raises(ValueError):
        Sampler([c], rate_hz=0)


def test_wire_trace_is_decimated_but_summary_uses_every_sample():
    c = Counter()
    s = Sampler([c], rate_hz=10, max_wire_samples=10)
    s._t_start = 0.0
    clock = iter(range(100))
    s.clock = lambda: float(next(clock))
    for _ in range(35):
        s.sample(force=True)
    tr = s.trace(wire=True)
    assert tr["decimated"] == 4 and len(tr["t"]) == 10 and tr["t"][-1] == 34.0
    full = s.trace(wire=False)
    assert len(full["t"]) == 35
    assert s.telemetry()["summary"]["temperature"]["fake.temp"]["max_c"] == 40.0 + 35


# ------------------------------------------------------------------------------- agent
class FakePipe:
    name = "asr.fake"

    def run(self, *a):
        return {}


@pytest.fixture
def agent(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.wav").write_bytes(b"")
    cmds = RecordedCommands.from_dir(FIX / "pi5_throttled" / "commands")
    pi = Pi5Sensor(Roots(commands=cmds), period_s=0.0)
    a = Agent(BoardConfig("pi5-hailo8l", "hailo8l", False, tmp_path), sensors=[pi])
    calls = []

    def fake_run(args, timings):
        calls.append(args)
        time.sleep(0.15)
        return {"pipeline": "asr.fake", "total_ms": 150.0}

    a.run = fake_run
    a._ensure_loaded = lambda args, timings: (FakePipe(), {}, False)
    a.calls = calls
    return a


def test_run_op_carries_trace_and_summary(agent):
    rep = agent.handle(Request(1, "run", {"pipeline": "asr.fake", "input": "data/x.wav",
                                          "telemetry": {"rate_hz": 50}}))
    assert rep.ok, rep.error
    tel = rep.result["telemetry"]
    assert tel["trace"]["rate_hz"] == 50 and len(tel["trace"]["t"]) >= 3
    s = tel["summary"]
    assert s["throttle"]["throttled"] and s["temperature"]["pi5.temp"]["max_c"] == 84.3
    assert s["power"]["pi5.power_soc"]["note"].startswith("SoC rails, excludes the 5 V branch")
    assert s["power"]["pi5.power_soc"]["energy_per_inference_j"] == pytest.approx(10.80 * s["duration_s"], rel=0.01)
    encode_reply(rep)  # fits the wire, JSON-safe
    rep = agent.handle(Request(2, "run", {"pipeline": "asr.fake", "input": "data/x.wav", "telemetry": False}))
    assert rep.ok and "telemetry" not in rep.result


def test_run_op_refuses_bad_telemetry_args_and_keeps_error_order(agent):
    for bad in ({"rate_hz": 0}, {"rate_hz": 1000}, {"hz": 5}, "fast"):
        rep = agent.handle(Request(1, "run", {"pipeline": "asr.fake", "input": "data/x.wav", "telemetry": bad}))
        assert not rep.ok and rep.error["type"] == "BadInput" and "telemetry" in rep.error["message"]
    rep = agent.handle(Request(2, "run", {"pipeline": "asr.fake", "input": "../etc/passwd"}))
    assert not rep.ok and "outside fleet_root" in rep.error["message"]


def test_telemetry_op_and_info_list_sensors(agent):
    rep = agent.handle(Request(1, "telemetry", {}))
    assert rep.ok and rep.result["values"]["pi5.temp"] == 84.3
    assert {c["name"] for c in rep.result["channels"]} >= {"pi5.temp", "pi5.throttled", "pi5.power_soc"}
    info = agent.handle(Request(2, "info", {})).result["telemetry"]
    assert info["default_rate_hz"] == 10.0
    assert [(s["source"], s["emulated"]) for s in info["sensors"]] == [("pi5", False)]
    assert any(c["name"] == "pi5.power_soc" and c["unit"] == "W" for c in info["sensors"][0]["channels"])


def test_emulated_agent_discovers_linux_and_emulated(tmp_path):
    (tmp_path / "agent.yml").write_text(f"board: rk3588\naccelerator: rk3588\nemulated: true\nfleet_root: {tmp_path}\n")
    from device_agent.config import load_config

    a = Agent(load_config(tmp_path))
    sources = [s["source"] for s in a.info()["telemetry"]["sensors"]]
    assert sources[-1] == "emulated" and "linux" in sources


def test_non_finite_readings_become_errors_not_invalid_json():
    class Nan(Sensor):
        source = "nan"

        def __init__(self):
            super().__init__()
            self.channel("temp", "°C", "temperature")

        @classmethod
        def probe(cls, config, roots, **_):
            return cls()

        def read(self):
            return {"nan.temp": float("nan")}, {}

    s = Sampler([Nan()], rate_hz=10)
    s.sample(force=True)
    tel = s.telemetry()
    assert tel["trace"]["values"]["nan.temp"] == [None] and "non-finite" in tel["trace"]["errors"]["nan.temp"]["message"]
    json.dumps(tel, allow_nan=False)


def test_run_without_input_is_refused_before_sampling(agent):
    rep = agent.handle(Request(1, "run", {"pipeline": "asr.fake"}))
    assert rep.ok  # the fake run accepts anything; the real Agent.run refuses (tests/test_agent_serve.py)
    assert "telemetry" not in rep.result


def test_a_sensor_without_read_or_probe_cannot_be_made():
    class NoRead(Sensor):
        source = "noread"

        @classmethod
        def probe(cls, config, roots, **_):
            return cls()

    class NoProbe(Sensor):
        source = "noprobe"

        def read(self):
            return {}, {}

    for cls in (NoRead, NoProbe):
        with pytest.raises(TypeError, match="abstract"):
            cls()
