"""Board leases (fleet/leases): atomic acquire, renew, expiry and dead-holder takeover, the
`fleet leases` CLI, and `fleet test` recording a leased board's tests as not-run (no sim needed:
a board whose lease another run holds is never contacted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from fleet.cli import main as fleet_main
from fleet.leases import LeaseStore, RunLeases
from fleet.results.store import Store
from fleet.runner.cli import run_suite
import pytest

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_acquire_is_exclusive_until_released(tmp_path):
    db = tmp_path / "r.db"
    a, b = LeaseStore(db), LeaseStore(db)
    ok, lease = a.acquire("board1", "run-a", ttl_s=30)
    assert ok and lease.run_id == "run-a" and f"pid {os.getpid()}" in lease.owner
    ok, held = b.acquire("board1", "run-b", ttl_s=30)
    assert not ok and held.run_id == "run-a"
    assert held.describe().startswith(f"leased by {lease.owner} (run run-a) until ")
    assert a.acquire("board1", "run-a", ttl_s=30)[0]          # re-entrant for the same run
    assert b.acquire("board2", "run-b", ttl_s=30)[0]          # other boards are free
    assert a.release(run_id="run-a") == 1
    assert b.acquire("board1", "run-b", ttl_s=30)[0]
    assert {lz.board: lz.run_id for lz in a.list()} == {"board1": "run-b", "board2": "run-b"}


def test_expired_lease_is_taken_over(tmp_path):
    s = LeaseStore(tmp_path / "r.db")
    assert s.acquire("b", "old", ttl_s=0.3)[0]
    # the holder looks alive (our own pid) but stops renewing: the lease expires
    assert not s.acquire("b", "new", ttl_s=30)[0]
    time.sleep(0.4)
    ok, lease = s.acquire("b", "new", ttl_s=30)
    assert ok and lease.run_id == "new"


def test_lease_of_a_dead_holder_is_taken_over(tmp_path):
    db = tmp_path / "r.db"
    code = ("import sys, time; from fleet.leases import LeaseStore; "
            f"LeaseStore({str(db)!r}).acquire('b', 'dead-run', ttl_s=3600); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stdout.readline().strip() == "held"
    s = LeaseStore(db)
    assert not s.acquire("b", "new", ttl_s=30)[0]      # holder alive: refused
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    ok, lease = s.acquire("b", "new", ttl_s=30)         # holder gone: taken over before expiry
    assert ok and lease.run_id == "new"


def test_heartbeat_renews_and_release_frees(tmp_path):
    db = tmp_path / "r.db"
    rl = RunLeases(db, "run-a", ttl_s=0.6)
    rl.acquire(["x", "y"])
    assert sorted(rl.held) == ["x", "y"] and not rl.refused
    first = LeaseStore(db).get("x").expires
    time.sleep(1.0)                                      # longer than the ttl: only renewals keep it
    other = LeaseStore(db)
    assert other.get("x").expires > first
    assert not other.acquire("x", "run-b", ttl_s=5)[0]
    rl.release()
    assert other.list() == []


def test_wait_for_a_lease_then_refuse(tmp_path):
    db = tmp_path / "r.db"
    holder = RunLeases(db, "run-a", ttl_s=30)
    holder.acquire(["x", "y"])
    threading.Timer(0.7, lambda: holder.store.release(board="x", run_id="run-a")).start()
    t0 = time.monotonic()
    rl = RunLeases(db, "run-b", ttl_s=30)
    rl.acquire(["x", "y"], wait_s=2.0, poll_s=0.1)
    assert 1.9 < time.monotonic() - t0 < 5
    assert rl.held == ["x"] and list(rl.refused) == ["y"] and "(run run-a)" in rl.refused["y"]
    rl.release()
    holder.release()


def test_leases_cli_lists_and_releases_with_confirmation(tmp_path, capsys, monkeypatch):
    db = tmp_path / "r.db"
    LeaseStore(db).acquire("sim-pi5-1", "run-a", ttl_s=300)
    assert fleet_main(["leases", "--db", str(db), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(x["board"], x["run_id"], x["expired"]) for x in shown] == [("sim-pi5-1", "run-a", False)]
    assert fleet_main(["leases", "--db", str(db)]) == 0
    assert "sim-pi5-1" in capsys.readouterr().out
    # stdin is not a terminal under pytest: refuse without --yes
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    assert fleet_main(["leases", "release", "sim-pi5-1", "--db", str(db)]) == 2
    assert "--yes" in capsys.readouterr().err
    assert LeaseStore(db).get("sim-pi5-1") is not None
    # on a terminal it asks; "n" keeps the lease, "y" frees it
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert fleet_main(["leases", "release", "sim-pi5-1", "--db", str(db)]) == 1
    assert LeaseStore(db).get("sim-pi5-1") is not None
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert fleet_main(["leases", "release", "sim-pi5-1", "--db", str(db)]) == 0
    assert LeaseStore(db).get("sim-pi5-1") is None
    assert fleet_main(["leases", "release", "sim-pi5-1", "--db", str(db), "--yes"]) == 2  # not leased


def _offline_fleet(tmp_path) -> tuple[Path, Path]:
    """A one-test suite and an inventory of two boards nobody listens for (127.0.0.1:1)."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "suite.yml").write_text("name: leasecheck\npipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\n"
                                     "dataset: speech\nrequest_timeout_s: 5\n")
    (suite / "test_one.py").write_text("def test_info(agent):\n    assert agent.info()\n")
    hosts = {f"lab-{i}": {"board": "cpu", "accelerator": "cpu", "emulated": True, "fleet_root": "/nonexistent",
                          "ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "nobody"}
             for i in (1, 2)}
    inv = tmp_path / "inv.yml"
    inv.write_text(json.dumps({"all": {"hosts": hosts}}))
    return suite, inv


def test_fleet_test_records_leased_boards_as_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    suite, inv = _offline_fleet(tmp_path)
    db = tmp_path / "r.db"
    other = RunLeases(db, "other-run", ttl_s=60, owner="ci@lab pid 42")
    other.acquire(["lab-1", "lab-2"])
    try:
        run_id, rc = run_suite(str(suite), str(inv), db=str(db), quiet=True)
        store = Store(db)
        res = store.results(run_id)
        assert [(r.board, r.outcome) for r in res] == [("lab-1", "not-run"), ("lab-2", "not-run")]
        assert all(r.message.startswith("leased by ci@lab pid 42 (run other-run) until ") for r in res)
        assert rc == 3 and store.run(run_id)["status"] == "error"   # nothing ran
        junit = ET.parse(tmp_path / "runs" / run_id / "junit.xml").getroot()
        assert [s.get("message", "").startswith("not-run: leased by") for s in junit.iter("skipped")] == [True, True]
        # the holder's leases are untouched
        assert {lz.run_id for lz in LeaseStore(db).list()} == {"other-run"}
    finally:
        other.release()


def test_fleet_test_waits_for_a_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    suite, inv = _offline_fleet(tmp_path)
    db = tmp_path / "r.db"
    other = RunLeases(db, "other-run", ttl_s=60)
    other.acquire(["lab-1"])
    threading.Timer(1.0, other.release).start()
    run_id, rc = run_suite(str(suite), str(inv), db=str(db), quiet=True, lease_wait=30)
    res = Store(db).results(run_id)
    # it waited, took the lease and tried the board (which is unreachable: error, not not-run)
    assert {(r.board, r.outcome) for r in res} == {("lab-1", "error"), ("lab-2", "error")}
    assert all("unreachable" in r.message for r in res)
    assert LeaseStore(db).list() == []            # released at the end of the run


def test_fleet_test_json_is_the_run_summary(tmp_path, monkeypatch, capfd):
    """`fleet test --json`: stdout is only the run's summary (pytest's output goes to stderr),
    times ISO 8601 UTC, the exit code and JUnit path included; `fleet runs --json` lists the run."""
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    suite, inv = _offline_fleet(tmp_path)
    db = tmp_path / "r.db"
    rc = fleet_main(["test", str(suite), "--inventory", str(inv), "--db", str(db), "--json", "-n", "1"])
    out, err = capfd.readouterr()
    data = json.loads(out)
    assert rc == 3 and data["exit_code"] == 3                      # boards unreachable: infrastructure
    assert data["run"]["status"] == "error" and data["run"]["suite"] == "leasecheck"
    assert data["run"]["started"].endswith("Z") and data["run"]["finished"].endswith("Z")
    assert {b["name"] for b in data["boards"]} == {"lab-1", "lab-2"}
    assert data["junit"].endswith(f"runs/{data['run']['id']}/junit.xml")
    assert "test_one.py" in err or "error" in err                   # pytest's report went to stderr
    assert fleet_main(["runs", "--db", str(db), "--json", "--suite", "leasecheck"]) == 0
    assert [r["id"] for r in json.loads(capfd.readouterr().out)] == [data["run"]["id"]]
    assert LeaseStore(db).list() == []
