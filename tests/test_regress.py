import pytest

from fleet.report.sample import build_sample_store
from fleet.results import regress


def test_band_uses_scaled_mad():
    med, mad, low, high = regress.band([10, 11, 9, 10, 30], k=3)
    assert med == 10
    assert mad == pytest.approx(1.4826 * 1.0)  # |x-10| = 0,1,1,0,20 -> median 1
    assert (low, high) == pytest.approx((10 - 3 * 1.4826, 10 + 3 * 1.4826))
    with pytest.raises(ValueError):
        regress.band([])


def test_zero_noise_baseline_has_a_floor():
    # a deterministic metric (MAD 0): a 1 % change is inside the 5 % floor, a 20 % change is not
    assert regress.judge(0.0301, "lower", [0.0298] * 5)["status"] == "ok"
    assert regress.judge(0.036, "lower", [0.0298] * 5)["status"] == "regression"
    assert regress.judge(0.020, "lower", [0.0298] * 5)["status"] == "improvement"


def test_direction_decides_regression_or_improvement():
    base = [100, 101, 99, 100, 102]
    assert regress.judge(130, "lower", base)["status"] == "regression"
    assert regress.judge(130, "higher", base)["status"] == "improvement"
    assert regress.judge(70, "higher", base)["status"] == "regression"
    assert regress.judge(101, "higher", base)["status"] == "ok"
    assert regress.judge(130, "", base)["status"] == "no-direction"
    assert regress.judge(130, "lower", [100, 101])["status"] == "insufficient"


def test_regressions_against_previous_runs(tmp_path):
    store, ids = build_sample_store(tmp_path / "r.db", runs=6)
    vs = regress.regressions(store, ids[-1], runs=5)
    flagged = {(v.board, v.metric): v for v in vs if v.flagged}
    v = flagged[("sim-pi5-1", "latency_p50_ms")]
    assert v.status == "regression" and v.n == 5 and v.delta > 150 and v.unit == "ms"
    assert set(v.baseline_runs) == set(ids[:-1])
    # noise on the other boards stays inside the band
    assert not any(b != "sim-pi5-1" and m.startswith("latency_p50") for b, m in flagged)
    # the infrastructure error is not judged
    assert not any(v.board == "sim-rk3588-1" and v.test == "test_wer" for v in vs)
    # the first run has no history
    assert {v.status for v in regress.regressions(store, ids[0])} == {"insufficient"}


def test_series_for_trends(tmp_path):
    store, ids = build_sample_store(tmp_path / "r.db", runs=4)
    s = regress.series(store, "whisper_hybrid", "latency_p50_ms")
    assert set(s) == {"sim-pi5-1", "sim-pi5-2", "sim-rk3588-1"}
    assert [p["run"] for p in s["sim-pi5-1"]] == ids
