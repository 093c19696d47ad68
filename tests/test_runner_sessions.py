"""Agent sessions over a run, on a real emulated fleet (real sshds, the agent deployed by Ansible):
a process opens its next boards' sessions ahead of their first test (fleet.runner.plugin
OPEN_AHEAD) and closes a board's session, so its agent exits, after the board's last test.

The suite's tests look at which `fleet-agent serve` processes are alive (emulated boards share
this machine's process table) and write it down; the checks are made here afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sim_fleet import agent_pids, deployed_fleet

from fleet.inventory import load_inventory
from fleet.results.store import Store
from fleet.sim.state import load_state

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

SUITE_YML = """name: sessions
pipeline: asr.whisper_hybrid
model: whisper-tiny.en
dataset: speech
"""

SUITE_TESTS = '''
import json, os, time
from pathlib import Path

LOG = Path(os.environ["FLEET_SESSIONS_LOG"])


def agents() -> dict:
    """fleet_root -> pids of the `fleet-agent --root ROOT serve` processes alive now."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (d / "cmdline").read_bytes().split(b"\\0") if a]
        except OSError:
            continue
        if "serve" in argv and "--root" in argv and any(a.endswith("fleet-agent") for a in argv):
            out.setdefault(argv[argv.index("--root") + 1], []).append(int(d.name))
    return out


def _log(board, test, agent):
    """Write down the agents alive, once the condition FLEET_SESSIONS_WAIT sets for this test
    holds ({"BOARD/TEST": {"present": [roots], "absent": [roots]}}) or 30 s have passed."""
    assert agent.info()["board"] == board.board
    want = json.loads(os.environ.get("FLEET_SESSIONS_WAIT", "{}")).get(f"{board.name}/{test}", {})
    end = time.monotonic() + 30
    while True:
        now = agents()
        met = (all(now.get(r) for r in want.get("present", []))
               and not any(now.get(r) for r in want.get("absent", [])))
        if met or time.monotonic() > end:
            break
        time.sleep(0.05)
    with LOG.open("a") as f:
        f.write(json.dumps({"board": board.name, "test": test, "agents": now, "met": met}) + "\\n")


def test_one(board, agent):
    _log(board, "one", agent)


def test_two(board, agent):
    _log(board, "two", agent)
'''


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three emulated boards with the agent deployed, and the suite above."""
    base = tmp_path_factory.mktemp("sessions")
    suite = base / "suite"
    suite.mkdir()
    (suite / "suite.yml").write_text(SUITE_YML)
    (suite / "test_sessions_suite.py").write_text(SUITE_TESTS)
    with deployed_fleet(base, "pi5-hailo8l:2,rk3588:1", ("whisper-tiny.en",)) as (state_dir, inv):
        order = [b.name for b in load_inventory(inv)]  # the order `fleet test -n 1` runs them in
        yield {"inventory": inv, "base": base, "suite": suite, "order": order,
               "roots": {b.name: b.root for b in load_state(state_dir).boards}}


def _fleet_test(fleet, workers: int, tag: str, wait: dict | None = None) -> tuple[list[dict], dict]:
    log = fleet["base"] / f"{tag}.jsonl"
    db = fleet["base"] / f"{tag}.db"
    env = {**os.environ, "FLEET_SESSIONS_LOG": str(log), "FLEET_HOME": str(fleet["base"]),
           "FLEET_SESSIONS_WAIT": json.dumps(wait or {}),
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run([sys.executable, "-m", "fleet.cli", "test", str(fleet["suite"]), "--inventory",
                           str(fleet["inventory"]), "--db", str(db), "-n", str(workers),
                           "--junit", str(fleet["base"] / f"{tag}.xml")],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = Store(db)
    try:
        outcomes = {(r.board, r.test): r.outcome for r in s.results(s.latest_run())}
    finally:
        s.close()
    return [json.loads(x) for x in log.read_text().splitlines()], outcomes


def test_one_process_opens_ahead_and_closes_after_the_last_test(fleet):
    roots = fleet["roots"]
    first, second, last = fleet["order"]
    wait = {  # each condition holds at once if sessions are handled as documented, never otherwise
        # the first board's first test: the other two boards' agents start meanwhile (opened ahead)
        f"{first}/one": {"present": [roots[b] for b in (first, second, last)]},
        # the last board's last test: the first two boards' agents have exited (closed after use)
        f"{last}/two": {"present": [roots[last]], "absent": [roots[first], roots[second]]},
    }
    rows, outcomes = _fleet_test(fleet, 1, "one-worker", wait)
    assert set(outcomes.values()) == {"passed"} and len(outcomes) == 6, outcomes
    assert [(r["board"], r["test"]) for r in rows] == [(b, t) for b in (first, second, last) for t in ("one", "two")]
    assert rows[0]["met"], f"other boards' agents not started during {first}'s first test: {rows[0]['agents']}"
    assert rows[-1]["met"], f"agents of finished boards still running: {rows[-1]['agents']}"
    # one agent per board for the whole run: the session opened ahead is the one its tests use
    for b in (first, second, last):
        pids = {tuple(r["agents"][roots[b]]) for r in rows if r["board"] == b}
        assert len(pids) == 1 and len(next(iter(pids))) == 1, (b, pids)


def test_workers_run_the_boards_they_own_and_leave_no_agent(fleet):
    rows, outcomes = _fleet_test(fleet, 2, "two-workers")
    assert set(outcomes.values()) == {"passed"} and len(outcomes) == 6, outcomes
    assert sorted(r["board"] for r in rows) == sorted(b for b in fleet["roots"] for _ in (1, 2))
    end = time.monotonic() + 10  # an agent exits on its own once its session is closed
    while (left := [p for r in fleet["roots"].values() for p in agent_pids(r)]) and time.monotonic() < end:
        time.sleep(0.1)
    assert not left, f"agents still running after fleet test: {left}"
