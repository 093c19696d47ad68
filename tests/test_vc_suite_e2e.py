"""suites/voice_conversion end to end on one emulated board: real sshd (fleet sim), real Ansible
deploy of the agent (pyworld from the wheelhouse) and the crepe-tiny artifacts, `fleet test` over
real SSH on two real speech clips ($FLEET_VC_MAX_CLIPS=2 keeps it cheap), results in the store.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sim_fleet import deployed_fleet

from fleet.inventory import load_inventory
from fleet.results.store import Store
from fleet.runner.cli import run_suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "voice_conversion"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("vc-e2e")
    with deployed_fleet(base, "rk3588:1", ("crepe-tiny",)) as (_, inv):
        yield {"inventory": inv, "db": base / "results.db"}


def test_voice_conversion_suite_passes_on_an_emulated_board(fleet, monkeypatch):
    monkeypatch.setenv("FLEET_VC_MAX_CLIPS", "2")
    run_id, rc = run_suite(str(SUITE), str(fleet["inventory"]), db=str(fleet["db"]), quiet=True)
    store = Store(fleet["db"])
    results = store.results(run_id)
    assert rc == 0, [(r.test, r.outcome, r.message[:300]) for r in results]
    # result keys are full test ids; test_conversion_f0 is parametrised over the shifts
    tests = {r.test.split("[")[0] for r in results}
    assert any(r.test.startswith("test_conversion_f0[") for r in results)
    assert {"test_agent_reports_board", "test_crepe_accuracy", "test_conversion_f0", "test_round_trip_mcd",
            "test_target_conversion", "test_speed", "test_crepe_parity"} <= tests
    # test_arm_parity is skipped on x86_64 boards (their kernels are the reference; fleet.runner.emulation)
    assert all(r.outcome == "passed" and r.emulated is True for r in results if r.test != "test_arm_parity"), \
        [(r.test, r.outcome, r.message[:200]) for r in results]
    assert [r.outcome for r in results if r.test == "test_arm_parity"] == ["skipped"]
    by = {}
    for r in results:
        for m in r.metrics:
            by[m.name] = m
    assert by["mcd_db"].unit == "dB" and by["mcd_db"].direction == "lower" and 0 < by["mcd_db"].value < 4
    assert by["crepe_rpa"].unit == "ratio" and by["crepe_rpa"].direction == "higher"
    assert by["f0_rmse_cents"].unit == "cents" and by["rtf"].value > 0
    assert by["crepe_parity_50c"].value > 0.9
    speed = next(r for r in results if r.test == "test_speed")
    assert speed.backends["pitch"] == "onnx" and speed.backends["analysis"] == "pyworld"
    # the converted audio kept for listening sits on the board, inside its fleet_root
    board = load_inventory(fleet["inventory"])[0]
    conv = next(r for r in results if r.test.startswith("test_conversion_f0[") and r.outputs)
    kept = [o["output"]["path"] for o in conv.outputs if o.get("output")]
    assert kept and all((Path(board.fleet_root) / p).is_file() for p in kept)
    # ...and a copy on the controller beside the run's JUnit XML, byte-identical (sha256 checked)
    copies = [o["output"] for o in conv.outputs if o.get("output")]
    for o in copies:
        local = Path(o["local_path"])
        assert local.parent.name == board.name and local.parent.parent.name == "outputs", local
        assert local.parent.parent.parent.name == run_id, local
        assert hashlib.sha256(local.read_bytes()).hexdigest() == o["sha256"]


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "outputs/../../x"])
def test_fetch_refuses_paths_outside_fleet_root(bad, tmp_path):
    from fleet.inventory import Board
    from fleet.remote.session import AgentSession

    s = AgentSession(Board("b", "rk3588", "rk3588", True, "/opt/fleet", "127.0.0.1", 1, "root"))
    with pytest.raises(ValueError, match="inside the board's fleet_root"):
        s.fetch(bad, tmp_path / "x.wav")
    assert not list(tmp_path.iterdir())
