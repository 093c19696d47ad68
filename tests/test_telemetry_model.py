"""The emulated boards' first-order thermal model and its sensor (deterministic, injected clock)."""

import math

import pytest

from device_agent.telemetry import decode_throttle
from device_agent.telemetry.emulated import (
    THERMAL,
    EmulatedSensor,
    ThermalConstants,
    ThermalModel,
)

C = ThermalConstants(t_amb_c=25.0, p_idle_w=2.0, p_max_w=10.0, r_theta_k_per_w=5.0, tau_s=40.0,
                     throttle_c=70.0, source="test")


def test_starts_at_idle_steady_state_and_follows_the_exact_solution():
    m = ThermalModel(C)
    assert m.t_c == pytest.approx(25 + 2 * 5)  # 35 °C
    assert m.power_w(0.5) == pytest.approx(6.0) and m.power_w(2.0) == 10.0 and m.power_w(-1) == 2.0
    t_ss = 25 + 10 * 5  # full load: 75 °C
    assert m.step(1.0, 40.0) == pytest.approx(t_ss + (35 - t_ss) * math.exp(-1))
    # many small steps == one big step (exact discretisation, not Euler)
    a, b = ThermalModel(C), ThermalModel(C)
    for _ in range(1000):
        a.step(0.7, 0.1)
    b.step(0.7, 100.0)
    assert a.t_c == pytest.approx(b.t_c, abs=1e-9)
    with pytest.raises(ValueError):
        a.step(0.5, -1)


def test_matches_the_ode():
    """dT/dt at any state equals (P·Rθ − (T − T_amb))/τ."""
    m = ThermalModel(C, t0_c=60.0)
    h = 1e-4
    t0 = m.t_c
    t1 = m.step(0.25, h)
    p = m.power_w(0.25)
    assert (t1 - t0) / h == pytest.approx((p * C.r_theta_k_per_w - (t0 - C.t_amb_c)) / C.tau_s, rel=1e-3)


def test_pi5_constants_reproduce_the_published_active_cooler_run():
    """idle 40.0 °C; stress -c 4: 55.4 / 58.2 / 59.8 °C after 1 / 2 / 3 min (emulated.py source)."""
    m = ThermalModel(THERMAL["pi5-hailo8l"])
    assert m.t_c == pytest.approx(40.0, abs=0.3)
    got = [m.step(1.0, 60.0) for _ in range(3)]
    for g, want in zip(got, (55.4, 58.2, 59.8)):
        assert g == pytest.approx(want, abs=1.1)
    assert THERMAL["pi5-hailo8l"].throttle_c == 80.0 and THERMAL["rk3588"].throttle_c == 85.0


class Fake:
    """An injected clock and CPU-time counter."""

    def __init__(self):
        self.t = 100.0
        self.cpu = 5.0

    def run(self, seconds, util, cpus=2):
        self.t += seconds
        self.cpu += seconds * util * cpus


def test_sensor_is_deterministic_given_its_inputs():
    def trace():
        f = Fake()
        s = EmulatedSensor("rk3588", clock=lambda: f.t, cpu_seconds=lambda: f.cpu, cpus=2)
        out = []
        for util in (0.0, 1.0, 1.0, 0.5, 0.0):
            f.run(10.0, util)
            out.append(s.read()[0])
        return out

    a, b = trace(), trace()
    assert a == b
    assert [round(r["emulated.cpu_util"]) for r in a] == [0, 100, 100, 50, 0]
    c = THERMAL["rk3588"]
    assert a[1]["emulated.power"] == pytest.approx(c.p_max_w)
    temps = [r["emulated.temp.soc"] for r in a]
    assert temps[0] == pytest.approx(c.t_amb_c + c.p_idle_w * c.r_theta_k_per_w)
    assert temps[1] < temps[2] and temps[4] < temps[3]  # heats under load, cools after


def test_sensor_flags_throttling_at_the_board_limit_like_a_pi():
    f = Fake()
    s = EmulatedSensor("pi5-hailo8l", clock=lambda: f.t, cpu_seconds=lambda: f.cpu, cpus=1)
    s.model.t_c = 79.0
    f.run(0.5, 1.0)
    v = s.read()[0]
    assert v["emulated.throttled"] == 0
    s.model.t_c = 81.0
    f.run(0.5, 1.0)
    d = decode_throttle(int(s.read()[0]["emulated.throttled"]))
    assert d["now"]["throttled"] and d["now"]["soft_temp_limit"] and d["since_boot"]["throttled"]
    s.model.t_c = 50.0
    f.run(0.5, 0.0)
    d = decode_throttle(int(s.read()[0]["emulated.throttled"]))
    assert not any(d["now"].values()) and d["since_boot"]["throttled"]  # sticky, like get_throttled


def test_unknown_board_class():
    with pytest.raises(ValueError, match="no thermal constants"):
        EmulatedSensor("jetson")
