"""The main job end to end, as `make demo` runs it, on a small emulated fleet:

real sshd boards (fleet sim) → `fleet deploy` (real ansible-runner, the real Whisper artifacts
and speech clips) → `fleet test suites/whisper_hybrid` (pytest + xdist, one agent session per
board over real SSH, ONNX Runtime Whisper on real recorded speech) → results store, JUnit XML,
`fleet results`. Then one board is lost (its sshd stopped): its tests are infrastructure errors,
never failures, while the other board still passes.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sim_fleet import deployed_fleet

from fleet.cli import main as fleet_main
from fleet.results.store import Store
from fleet.runner.cli import run_suite
from fleet.runner.suite import load_suite
from fleet.sim import lifecycle

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "whisper_hybrid"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two emulated boards (Pi 5 + Hailo-8L, RK3588), deployed with the real artifacts."""
    base = tmp_path_factory.mktemp("e2e")
    with deployed_fleet(base, "pi5-hailo8l:1,rk3588:1") as (state_dir, inv):
        yield {"state_dir": state_dir, "inventory": inv, "base": base, "db": base / "results.db"}


def test_suite_passes_on_every_board_with_real_speech(fleet, capsys):
    # through the CLI, as a user types it: `fleet test SUITE --inventory INV`
    rc = fleet_main(["test", str(SUITE), "--inventory", str(fleet["inventory"]), "--db", str(fleet["db"]),
                     "--junit", str(fleet["base"] / "junit.xml")])
    store = Store(fleet["db"])
    run_id = store.latest_run()
    assert "whisper_hybrid · passed" in capsys.readouterr().out  # the results table it prints
    results = store.results(run_id)
    assert rc == 0, [(r.board, r.test, r.outcome, r.message) for r in results]
    assert store.run(run_id)["status"] == "passed"
    boards = {r.board for r in results}
    assert boards == {"sim-pi5-1", "sim-rk3588-1"}
    suite = load_suite(SUITE)
    n_clips = len(suite.dataset_items())
    for r in results:
        if r.test == "test_arm_parity":  # x86_64 boards: their kernels are the reference (fleet.runner.emulation)
            assert r.outcome == "skipped" and "ARM-kernel parity compares an aarch64 board" in r.message, r.message
            continue
        assert r.outcome == "passed", (r.board, r.test, r.message)
        assert r.emulated is True
    wer = {r.board: next(m.value for m in r.metrics if m.name == "wer") for r in results if r.test == "test_wer"}
    # Real speech through the real model on both boards: the same INT8 model gives the same WER,
    # and it is a working recogniser (the agent-level test pins the exact figure).
    assert len(wer) == 2 and max(wer.values()) < 0.15 and abs(wer["sim-pi5-1"] - wer["sim-rk3588-1"]) < 1e-9
    wer_result = next(r for r in results if r.test == "test_wer")
    assert len(wer_result.outputs) == n_clips
    assert wer_result.backends["encoder"] == "onnx"
    assert all(len(sha) == 64 for sha in wer_result.models.values())
    lat = next(r for r in results if r.test == "test_latency")
    p50 = next(m for m in lat.metrics if m.name == "latency_p50_ms")
    assert p50.unit == "ms" and p50.value > 0
    # n beside the percentiles; a p99 only from the 101 samples it needs to differ from the max
    names = {m.name: m.value for m in lat.metrics}
    assert names["latency_n"] >= suite.measurement.min_queries and names["measurement_valid"] == 1.0
    assert ("latency_p99_ms" in names) == (names["latency_n"] >= 101)
    # its duration is setup + call + teardown: the measurement, run in its fixture, is in it
    for r in results:
        if r.test == "test_latency":
            measured = next(m.value for m in r.metrics if m.name == "measurement_duration_s")
            assert r.duration_s >= measured > 0, (r.board, r.duration_s, measured)
            assert r.nodeid == f"test_whisper_hybrid.py::test_latency[{r.board}]"
    info = {b["name"]: b["info"] for b in store.boards(run_id)}
    assert info["sim-rk3588-1"]["accelerator"] == "rk3588" and info["sim-rk3588-1"]["emulated"] is True

    junit = ET.parse(fleet["base"] / "junit.xml").getroot()
    assert sum(int(ts.get("tests")) for ts in junit.iter("testsuite")) == len(results)
    case = junit.find(".//testcase[@classname='whisper_hybrid.sim-pi5-1.test_whisper_hybrid'][@name='test_latency']")
    assert case is not None and float(case.get("time")) == pytest.approx(
        next(r.duration_s for r in results if (r.board, r.test) == ("sim-pi5-1", "test_latency")), abs=1e-3)
    assert all(ts.get("failures") == "0" and ts.get("errors") == "0" for ts in junit.iter("testsuite"))

    capsys.readouterr()
    assert fleet_main(["results", run_id, "--db", str(fleet["db"]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {b["name"] for b in shown["boards"]} == boards
    assert all(b["metrics"]["wer"]["unit"] == "ratio" for b in shown["boards"])


def test_lost_board_is_an_infrastructure_error_not_a_failure(fleet):
    assert lifecycle.stop_board(fleet["state_dir"], "sim-rk3588-1")
    run_id, rc = run_suite(str(SUITE), str(fleet["inventory"]), db=str(fleet["db"]), quiet=True,
                           keyword="agent_reports_board or wer")
    store = Store(fleet["db"])
    by_board: dict[str, set] = {}
    for r in store.results(run_id):
        by_board.setdefault(r.board, set()).add(r.outcome)
        if r.board == "sim-rk3588-1":
            assert "infrastructure" in r.message and "sim-rk3588-1" in r.message
    assert by_board == {"sim-pi5-1": {"passed"}, "sim-rk3588-1": {"error"}}
    assert rc == 3
    assert store.run(run_id)["status"] == "error"
