"""The measurement protocol (fleet/measure): VALID/INVALID decisions with an injected clock,
cool-down, suite.yml keys, the store's telemetry table and `fleet results --telemetry/--csv`."""

import csv
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from device_agent.telemetry import Channel, summarize
from fleet.cli import main as fleet_main
from fleet.errors import FleetError
from fleet.measure.protocol import (
    MeasurementConfig,
    Protocol,
    decide_validity,
    early_stopping_t,
    latency_stats,
    min_samples,
    percentile_index,
    wait_for_cooldown,
)
from fleet.results.store import Metric, Result, Store, new_run_id
from fleet.runner.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """Injected time: queries and sleeps advance it."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def tel(temps=(45.0, 46.0), throttled=(0, 0), power=(4.0, 4.0)) -> dict:
    chans = [Channel("pi5.temp", "°C", "temperature", "pi5"), Channel("pi5.throttled", "flags", "throttle", "pi5"),
             Channel("pi5.power_soc", "W", "power", "pi5")]
    tr = {"t0": 0, "rate_hz": 10, "decimated": 1, "channels": [c.to_dict() for c in chans], "t": [0.0, 0.5],
          "values": {"pi5.temp": list(temps), "pi5.throttled": list(throttled), "pi5.power_soc": list(power)},
          "errors": {}}
    return {"trace": tr, "summary": summarize(tr)}


def querier(clock, ms=500.0, telemetry=None):
    """A query function taking ``ms`` of injected time; ``telemetry(k)`` gives query k's telemetry."""
    calls = []

    def q(item):
        k = len(calls)
        calls.append(item)
        clock.t += ms / 1000
        r = {"total_ms": ms + k, "item": item}
        if telemetry:
            r["telemetry"] = telemetry(k)
        return r

    q.calls = calls
    return q


ITEMS = [{"id": f"c{i}"} for i in range(5)]


def test_valid_measurement_with_warmup_min_queries_and_duration():
    clock = Clock()
    cfg = MeasurementConfig(warmup=2, min_queries=8, min_duration_s=6.0, start_temp_max_c=60)
    q = querier(clock, 500.0, lambda k: tel())
    m = Protocol(cfg, clock=clock, sleep=clock.sleep).run(ITEMS, q)
    # 6 s at 0.5 s per query → 12 measured queries (more than min_queries 8), after 2 warm-ups
    assert len(m.warmup) == 2 and len(m.queries) == 12 and len(q.calls) == 14
    assert m.duration_s == pytest.approx(6.0)
    assert m.valid and m.verdict == "VALID" and m.reasons == []
    assert m.latency["n"] == 12 and m.latency["min_ms"] == 502.0 and m.latency["max_ms"] == 513.0
    assert m.latency["p50_ms"] == 508.0 and m.latency["p90_ms"] == 512.0 and m.latency["p99_ms"] is None
    assert [i["id"] for i, _ in m.first_pass()] == ["c0", "c1", "c2", "c3", "c4"]
    assert m.summary["power"]["pi5.power_soc"]["energy_per_inference_j"] == pytest.approx(2.0)  # 4 W x 0.5 s
    assert m.start == ("pi5.temp", 45.0)


def test_a_fast_board_keeps_going_until_min_duration():
    """Issue 13: 60 clips in 9.83 s used to stop at max_queries and be INVALID (too short)."""
    clock = Clock()
    cfg = MeasurementConfig(warmup=0, min_queries=5, min_duration_s=10.0)
    m = Protocol(cfg, clock=clock, sleep=clock.sleep).run(ITEMS, querier(clock, 200.0, lambda k: tel()))
    assert len(m.queries) == 50 and m.duration_s == pytest.approx(10.0)
    assert m.valid and m.reasons == []


def test_max_duration_stops_a_slow_board_and_says_why():
    clock = Clock()
    cfg = MeasurementConfig(warmup=0, min_queries=20, min_duration_s=10.0, max_duration_s=60.0)
    m = Protocol(cfg, clock=clock, sleep=clock.sleep).run(ITEMS * 4, querier(clock, 7000.0, lambda k: tel()))
    assert len(m.queries) == 9 and m.hit_max_duration and not m.valid  # 9 x 7 s = 63 s >= 60 s
    assert m.reasons == ["max_duration_s 60 s reached before the minimums were met (the board is too slow "
                         "for them, or raise max_duration_s)",
                         "too few samples: n=9 < min_queries 20", "not every item ran: 9 of 20"]
    assert m.to_dict()["hit_max_duration"] is True
    # the query that meets the minimums at the bound counts: VALID
    clock = Clock()
    m = Protocol(MeasurementConfig(warmup=0, min_queries=10, max_duration_s=60.0), clock=clock).run(
        ITEMS, querier(clock, 6000.0, lambda k: tel()))
    assert len(m.queries) == 10 and m.valid and not m.hit_max_duration


def test_every_item_runs_once_even_above_min_queries():
    clock = Clock()
    m = Protocol(MeasurementConfig(warmup=0, min_queries=2), clock=clock).run(ITEMS, querier(clock))
    assert len(m.queries) == 5 and m.valid
    m = Protocol(MeasurementConfig(warmup=0, min_queries=2), clock=clock).run(ITEMS, querier(clock), cover_all=False)
    assert len(m.queries) == 2


def test_throttled_during_measurement_is_invalid_and_says_why():
    clock = Clock()
    m = Protocol(MeasurementConfig(warmup=1, min_queries=5), clock=clock).run(
        ITEMS, querier(clock, 300.0, lambda k: tel(throttled=(0, 0xE000E) if k == 3 else (0, 0))))
    assert not m.valid
    assert any(r.startswith("throttled during the measurement (pi5.throttled; 1 throttle event(s))") for r in m.reasons)
    assert any("frequency-capped" in r for r in m.reasons)


def test_start_temperature_above_limit():
    clock = Clock()
    m = Protocol(MeasurementConfig(warmup=0, min_queries=5, start_temp_max_c=80.0), clock=clock).run(
        ITEMS, querier(clock, 100.0, lambda k: tel(temps=(84.3, 84.5))))
    assert m.reasons == ["temperature above the start limit: 84.3 °C (pi5.temp) > 80 °C"]


def test_too_few_samples_and_unchecked_notes():
    cfg = MeasurementConfig(min_queries=20, min_duration_s=1.0, start_temp_max_c=70)
    valid, reasons, notes = decide_validity(12, 30.0, None, cfg)
    assert not valid and reasons == ["too few samples: n=12 < min_queries 20"]
    assert any("throttling not checked" in n for n in notes) and any("start temperature not checked" in n for n in notes)


def test_cooldown_waits_then_measures_or_times_out():
    clock = Clock()
    temps = iter([72.0, 68.0, 63.0, 59.0, 55.0])
    got = wait_for_cooldown(lambda: {"linux.temp.cpu-thermal": next(temps), "linux.temp.gpu": 40.0}, 60.0,
                            "cpu-thermal", timeout_s=100, poll_s=5, clock=clock, sleep=clock.sleep)
    assert got["ok"] and got["waited_s"] == 15 and got["temp_c"] == 59.0 and got["channel"] == "linux.temp.cpu-thermal"
    clock = Clock()
    cfg = MeasurementConfig(warmup=0, min_queries=5, cooldown_below_c=50.0, cooldown_timeout_s=30, cooldown_poll_s=10)
    m = Protocol(cfg, clock=clock, sleep=clock.sleep).run(ITEMS, querier(clock, 100.0, lambda k: tel()),
                                                         read_temps=lambda: {"pi5.temp": 65.0})
    assert m.cooldown["waited_s"] == 30 and not m.valid
    assert m.reasons == ["cool-down timed out: timeout after 30 s, 65.0 °C (pi5.temp) not below 50 °C"]
    with pytest.raises(ValueError, match="read_temps"):
        Protocol(cfg, clock=clock, sleep=clock.sleep).run(ITEMS, querier(clock))


def test_latency_stats_index_like_loadgen():
    # sorted[floor(n*p)], no interpolation (loadgen/results.cc); 101 samples: p99 is index 99
    s = latency_stats(list(range(101, 0, -1)))
    assert (s["n"], s["min_ms"], s["max_ms"], s["mean_ms"]) == (101, 1, 101, 51)
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"]) == (51, 91, 100) and s["unreported"] == {}
    assert s["p90_early_stopping_ms"] == latency_stats(list(range(1, 102)))["p90_early_stopping_ms"]
    assert latency_stats([]) == {"n": 0}


def test_percentile_from_too_few_samples_is_null_with_the_reason():
    s = latency_stats(list(range(1, 101)))  # p99 of 100 samples is index 99: the max
    assert s["p99_ms"] is None and s["p50_ms"] == 51 and s["p90_ms"] == 91
    assert s["unreported"]["p99_ms"].startswith("n=100 < 101: a p99 from 100 samples or fewer is the maximum")
    s = latency_stats([5.0] * 10)
    assert s["p90_ms"] is None and s["p50_ms"] == 5.0 and set(s["unreported"]) >= {"p90_ms", "p99_ms"}
    s = latency_stats([1.0, 2.0])
    assert s["p50_ms"] is None and s["n"] == 2 and s["max_ms"] == 2.0
    assert [min_samples(Fraction(p, 100)) for p in (50, 90, 99)] == [3, 11, 101]
    for p in (50, 90, 99, 999):  # the smallest n whose p-index is below the max's
        frac = Fraction(p, 1000 if p > 100 else 100)
        n = min_samples(frac)
        assert percentile_index(n, frac) == n - 2 and percentile_index(n - 1, frac) == n - 2


def _loadgen_early_stopping_t(n, p=0.9, c=0.99):
    """A literal port of LoadGen's SingleStream loop (results.cc EarlyStopping) over its
    MinPassingQueriesFinder (early_stopping.cc): h(t) = min h with P(Bin(h + t, 1 - p) <= t) < 1 - c."""
    def odds(h, t):
        return sum(math.comb(h + t, x) * (1 - p) ** x * p ** (h + t - x) for x in range(t + 1))

    def h_of(t):
        h = 1
        while not odds(h, t) < 1 - c:
            h += 1
        return h

    if n < h_of(1) + 1:
        return None
    for i in range(2, n + 1):
        if n < h_of(i) + i:
            return i - 1


@pytest.mark.parametrize("n", [20, 63, 64, 65, 100, 101, 150, 256])
def test_early_stopping_matches_loadgen(n):
    assert early_stopping_t(n, Fraction(9, 10)) == _loadgen_early_stopping_t(n)


def test_early_stopping_estimate():
    assert early_stopping_t(63, Fraction(9, 10)) is None and early_stopping_t(64, Fraction(9, 10)) == 1
    s = latency_stats(list(range(1, 257)))  # t = 14: the 14th largest of 256
    assert s["p90_early_stopping_ms"] == 243 and s["p90_ms"] == 231
    s = latency_stats([100.0] * 63)
    assert s["p90_early_stopping_ms"] is None and s["p90_ms"] == 100.0
    assert s["unreported"]["p90_early_stopping_ms"].startswith("n=63 < 64: LoadGen's early-stopping estimate")
    assert early_stopping_t(1_000_000, Fraction(9, 10)) > 99_000  # log space: no underflow


# ------------------------------------------------------------- the shipped suite, any board speed
def _suite_run(ms_of, telemetry=lambda k: tel()):
    """The clips of suites/whisper_hybrid under its own measurement block, ``ms_of(k)`` per query."""
    s = load_suite(ROOT / "suites" / "whisper_hybrid")
    clock, calls = Clock(), []

    def q(item):
        k = len(calls)
        calls.append(item)
        clock.t += ms_of(k) / 1000
        return {"total_ms": ms_of(k), "telemetry": telemetry(k)}

    return Protocol(s.measurement, clock=clock, sleep=clock.sleep).run(s.dataset_items(), q), s


@pytest.mark.parametrize("ms, n", [(5.0, 2000), (133.0, 76), (900.0, 20), (6000.0, 20)])
def test_whisper_suite_is_valid_on_fast_and_slow_boards(ms, n):
    m, s = _suite_run(lambda k: ms)
    assert m.valid, m.reasons
    # n = ceil(10 s / latency) or the 20 minimum (+1 where the injected clock's float sum rounds down)
    assert len(m.queries) in (n, n + 1) and m.latency["n"] == len(m.queries)
    assert m.duration_s >= s.measurement.min_duration_s


def test_whisper_suite_is_valid_on_a_loaded_machine():
    # a loaded controller: every 7th clip takes 5x as long
    m, _ = _suite_run(lambda k: 4000.0 if k % 7 == 3 else 800.0)
    assert m.valid and m.latency["n"] == 20 and m.latency["p90_ms"] == 4000.0
    assert m.latency["p99_ms"] is None and "p99_ms" in m.latency["unreported"]


def test_whisper_suite_still_flags_slow_and_throttled_boards():
    m, s = _suite_run(lambda k: 40_000.0)
    assert not m.valid and m.hit_max_duration and len(m.queries) == 15  # 15 x 40 s = 600 s
    assert m.reasons[0].startswith(f"max_duration_s {s.measurement.max_duration_s:g} s reached")
    m, _ = _suite_run(lambda k: 5.0, lambda k: tel(throttled=(0, 0x4)) if k == 100 else tel())
    assert not m.valid and any(r.startswith("throttled during the measurement") for r in m.reasons)


@pytest.mark.parametrize("block, needle", [
    ({"min_queries": 0}, "min_queries must be >= 1"),
    ({"min_duration_s": "long"}, "min_duration_s must be a number"),
    ({"max_queries": 60}, "measurement.max_queries is no longer supported"),
    ({"min_duration_s": 10, "max_duration_s": 10}, "max_duration_s (10) must be above min_duration_s (10)"),
    ({"max_duration_s": 0}, "max_duration_s must be > 0"),
    ({"sample_hz": 500}, "sample_hz must be <= 100"),
    ({"cooldown": {"timeout_s": 5}}, "cooldown needs below_c"),
    ({"cooldown": {"below_c": 60, "wait": 1}}, "unknown measurement.cooldown key(s) wait"),
    ({"warmup": 1}, "unknown measurement key(s) warmup"),
])
def test_measurement_config_errors(block, needle):
    with pytest.raises(ValueError) as e:
        MeasurementConfig.from_dict(block)
    assert needle in str(e.value)


def test_suite_yml_measurement_block(tmp_path):
    s = load_suite(ROOT / "suites" / "whisper_hybrid")
    assert s.measurement.min_queries == 20 and s.measurement.min_duration_s == 10
    assert s.measurement.warmup == s.warmup_requests and s.measurement.start_temp_max_c == 75
    assert s.measurement.max_duration_s == 600
    d = tmp_path / "s"
    d.mkdir()
    (d / "test_s.py").write_text("")
    (d / "suite.yml").write_text("pipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\ndataset: speech\nmeasurement: {min_queries: -1}\n")
    with pytest.raises(FleetError, match="measurement.min_queries must be >= 1"):
        load_suite(d)
    (d / "suite.yml").write_text("pipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\ndataset: speech\n"
                                 "thresholds: {emulated: {latency_p99_ms_max: 900, energy_per_inference_j_max: 2}}\n")
    assert load_suite(d).thresholds["emulated"]["latency_p99_ms_max"] == 900


# ------------------------------------------------------------------ store and `fleet results`
def _stored_run(tmp_path, invalid=False):
    db = tmp_path / "r.db"
    s = Store(db)
    run = new_run_id()
    s.start_run(run, "whisper_hybrid")
    clock = Clock()
    th = (lambda k: tel(throttled=(0, 0x4))) if invalid else (lambda k: tel())
    m = Protocol(MeasurementConfig(warmup=0, min_queries=3), clock=clock).run(ITEMS[:3], querier(clock, 500, th))
    r = Result(run, "sim-pi5-1", "test_latency", "failed" if invalid else "passed",
               metrics=[Metric("latency_n", m.latency["n"], "count"), Metric("latency_p50_ms", m.latency["p50_ms"], "ms")],
               telemetry=[{"label": q.item["id"], **q.result["telemetry"]} for q in m.queries],
               telemetry_summary={"summary": m.summary, "measurement": m.to_dict()})
    s.add_result(r)
    s.finish_run(run, "passed")
    return s, db, run, r.id


def test_store_keeps_traces_and_aggregate_in_one_write(tmp_path):
    s, _, run, rid = _stored_run(tmp_path)
    t = s.telemetry(rid)
    assert [x["label"] for x in t["traces"]] == ["c0", "c1", "c2"]
    assert t["traces"][0]["trace"]["values"]["pi5.temp"] == [45.0, 46.0]
    assert t["aggregate"]["measurement"]["verdict"] == "VALID"
    assert "trace" not in s.telemetry(rid, traces=False)["traces"][0]
    assert [m.name for m in s.results(run)[0].metrics] == ["latency_n", "latency_p50_ms"]


def test_results_cli_telemetry_json_table_and_csv(tmp_path, capsys):
    _, db, run, _ = _stored_run(tmp_path, invalid=True)
    assert fleet_main(["results", run, "--db", str(db), "--telemetry", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    t = data["boards"][0]["tests"][0]["telemetry"]
    assert t["measurement"]["verdict"] == "INVALID" and t["traces"] == 3
    assert t["summary"]["power"]["pi5.power_soc"]["energy_per_inference_j"] == pytest.approx(2.0)
    assert fleet_main(["results", run, "--db", str(db), "--telemetry", "--csv", str(tmp_path / "csv")]) == 0
    out = capsys.readouterr().out
    assert "INVALID" in out and "throttled during the measurement" in out and "power = pi5.power_soc" in out
    # n beside the percentiles; the ones 3 samples cannot give are "–" with the reason
    assert "p99 not reported: n=3 < 101" in out and "p90_early_stopping not reported: n=3 < 64" in out
    assert data["boards"][0]["metrics"]["latency_n"]["value"] == 3 and t["measurement"]["latency"]["p99_ms"] is None
    assert fleet_main(["results", run, "--db", str(db)]) == 0
    head = next(line for line in capsys.readouterr().out.splitlines() if "p50 ms" in line)
    assert head.index(" n ") < head.index("p50 ms")
    files = sorted((tmp_path / "csv").rglob("*.csv"))
    assert len(files) == 4
    rows = list(csv.reader(files[0].open()))
    assert rows[0] == ["t_s", "pi5.temp [°C]", "pi5.throttled [flags]", "pi5.power_soc [W]"]
    assert rows[1] == ["0.0", "45.0", "0", "4.0"]
    summary = list(csv.DictReader((tmp_path / "csv" / run / "summary.csv").open()))
    assert summary[0]["verdict"] == "INVALID" and float(summary[0]["energy_per_inference_j"]) == pytest.approx(2.0)
    assert (summary[0]["n"], summary[0]["p99_ms"], summary[0]["p90_early_stopping_ms"]) == ("3", "", "")


def test_report_shows_n_beside_the_percentiles(tmp_path):
    from fleet.report.html import test_detail

    s, _, run, _ = _stored_run(tmp_path)
    html = test_detail(s, s.results(run)[0], plots=False)
    assert "latency n=3: p50 501 ms · p90 – · p90_early_stopping – · p99 –" in html
    assert "not reported: p90: n=3 &lt; 11" in html
