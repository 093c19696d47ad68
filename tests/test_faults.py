"""Fault matrix on an emulated fleet (docs/faults.md): real sshd boards in network namespaces
(when root), the real agent deployed by Ansible, `fleet test` as a user runs it.

A tiny suite (tmp folder) keeps each fault to seconds: test_a asks `info`; test_b_busy sends
`telemetry` requests in a loop until the test here says stop (the fault is injected while it
runs, so it hits a request in flight or the next one); test_c and test_d ask `info` afterwards.
request_timeout_s is 3 s, so a hung agent or a dead link is noticed in 3 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sim_fleet import agent_pids, deployed_fleet

from fleet.leases import LeaseStore
from fleet.remote import session as session_mod
from fleet.results.store import Store
from fleet.sim import lifecycle
from fleet.sim.state import load_state

ROOT = Path(__file__).resolve().parents[1]
VICTIM, OTHER = "sim-rk3588-1", "sim-pi5-1"

pytestmark = pytest.mark.slow

SUITE_YML = """name: faults
pipeline: asr.whisper_hybrid
model: whisper-tiny.en
dataset: speech
request_timeout_s: 3
"""

SUITE_TESTS = '''
import os, time
from pathlib import Path

CTL = Path(os.environ["FLEET_FAULT_DIR"])


def test_a_info(agent):
    assert agent.info()["board"]


def test_b_busy(agent, board):
    (CTL / f"busy-{board.name}").touch()
    end = time.time() + 60
    while time.time() < end and not (CTL / f"stop-{board.name}").exists():
        agent.request("telemetry")
        time.sleep(0.05)


def test_c_info(agent):
    assert agent.info()["board"]


def test_d_info(agent):
    assert agent.info()["board"]
'''


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two emulated boards, deployed once for every fault test."""
    base = tmp_path_factory.mktemp("faults")
    suite = base / "suite"
    suite.mkdir()
    (suite / "suite.yml").write_text(SUITE_YML)
    (suite / "test_faults_suite.py").write_text(SUITE_TESTS)
    with deployed_fleet(base, "pi5-hailo8l:1,rk3588:1", ("whisper-tiny.en",)) as (state_dir, inv):
        try:
            yield {"state_dir": state_dir, "inventory": inv, "base": base, "suite": suite,
                   "boards": {b.name: b for b in load_state(state_dir).boards}}
        finally:  # before the boards go down: stopped agents and downed links a test left behind
            for b in (load_state(state_dir).boards if load_state(state_dir) else []):
                for pid in agent_pids(b.root):
                    _signal(pid, signal.SIGCONT)
                    _signal(pid, signal.SIGKILL)
                if b.host_if:
                    subprocess.run(["ip", "link", "set", b.host_if, "up"], check=False)


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Run:
    """`fleet test` (or `--resume`) as a subprocess, with the controls the suite listens to."""

    def __init__(self, fleet, name: str, *extra: str):
        self.ctl = fleet["base"] / f"ctl-{name}"
        self.ctl.mkdir()
        self.db = fleet["base"] / f"{name}.db"
        env = {**os.environ, "FLEET_FAULT_DIR": str(self.ctl), "FLEET_HOME": str(fleet["base"])}
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        self.cmd = [sys.executable, "-m", "fleet.cli", "test", str(fleet["suite"]), "--inventory",
                    str(fleet["inventory"]), "--db", str(self.db), *extra]
        self.env = env
        self.proc = None

    def start(self, *extra: str) -> "Run":
        self.proc = subprocess.Popen(self.cmd + list(extra), env=self.env, cwd=ROOT, start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self

    def wait_busy(self, board: str, timeout: float = 60) -> None:
        _wait_for(lambda: (self.ctl / f"busy-{board}").exists() or self.proc.poll() is not None, timeout,
                  f"test_b_busy on {board}")
        assert self.proc.poll() is None, self.proc.stdout.read()

    def stop_busy(self, *boards: str) -> None:
        for b in boards:
            (self.ctl / f"stop-{b}").touch()

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def results(self, run_id: str | None = None) -> tuple[str, dict]:
        s = Store(self.db)
        run_id = run_id or s.latest_run()
        return run_id, {(r.board, r.test): r for r in s.results(run_id)}


def _outcomes(res: dict) -> dict:
    return {k: r.outcome for k, r in res.items()}


def test_board_lost_mid_suite_then_resume(fleet):
    """Item 2: the victim's link goes down while test_b_busy is mid-request."""
    victim = fleet["boards"][VICTIM]
    run = Run(fleet, "lost").start()
    run.wait_busy(VICTIM)
    if victim.host_if:
        subprocess.run(["ip", "link", "set", victim.host_if, "down"], check=True)
    else:  # no namespaces (not root): kill the board's sshd, agent and all
        for pid in agent_pids(victim.root):
            _signal(pid, signal.SIGKILL)
        lifecycle.stop_board(fleet["state_dir"], VICTIM)
    t0 = time.monotonic()
    run.stop_busy(OTHER)
    try:
        rc, out = run.finish()
    finally:
        if victim.host_if:  # the board comes back whatever happens (the next tests use it)
            subprocess.run(["ip", "link", "set", victim.host_if, "up"], check=True)
    took = time.monotonic() - t0
    run_id, res = run.results()
    oc = _outcomes(res)
    assert rc == 3, out
    assert {k: v for k, v in oc.items() if k[0] == OTHER} == {
        (OTHER, t): "passed" for t in ("test_a_info", "test_b_busy", "test_c_info", "test_d_info")}, out
    assert oc[(VICTIM, "test_a_info")] == "passed"                 # finished before the fault: kept
    assert oc[(VICTIM, "test_b_busy")] == "error"
    assert "no reply to 'telemetry' within 3 s" in res[(VICTIM, "test_b_busy")].message
    if victim.host_if:  # the link is down: the agent could not be ended, and the message says so
        assert "may still run on the board" in res[(VICTIM, "test_b_busy")].message
    for t in ("test_c_info", "test_d_info"):                        # remaining: board lost, at once
        assert oc[(VICTIM, t)] == "error" and "board lost: sim-rk3588-1" in res[(VICTIM, t)].message, res[(VICTIM, t)]
        assert res[(VICTIM, t)].duration_s < 10.0   # no 15 s SSH timeout per test
    assert took < 40, took                                          # a lost board never stalls the run
    assert Store(run.db).run(run_id)["status"] == "error"
    assert LeaseStore(run.db).list() == []

    # the board is back (link up above); --resume re-runs only what did not complete
    if not victim.host_if:
        pytest.skip("resume after a restarted sshd needs namespaces")
    run.stop_busy(VICTIM)
    kept_ids = {k: r.id for k, r in res.items() if r.outcome == "passed"}
    rc2, out2 = run.start("--resume", run_id).finish()
    assert rc2 == 0, out2
    _, res2 = run.results(run_id)
    assert {k: r.outcome for k, r in res2.items()} == {(b, t): "passed" for b in (OTHER, VICTIM)
                                                       for t in ("test_a_info", "test_b_busy", "test_c_info", "test_d_info")}
    assert {k: res2[k].id for k in kept_ids} == kept_ids            # finished rows untouched, not re-run
    rerun = {k for k, r in res2.items() if k not in kept_ids}
    assert rerun == {(VICTIM, t) for t in ("test_b_busy", "test_c_info", "test_d_info")}
    meta = Store(run.db).run(run_id)
    assert meta["status"] == "passed" and "--resume" in meta["argv"]
    assert (fleet["base"] / "runs" / run_id / "resumes.json").exists()
    # The agent the controller could not end (link down) goes once the link is back: the dropped
    # connection's FIN, retransmitted by the controller's kernel with backoff (0.2 s doubling, ~50 s
    # in all), reaches sshd, which closes the agent's pipes (EOF, or its reply-reader watchdog).
    _wait_for(lambda: not agent_pids(victim.root), 60, "the agent left behind by the link failure to exit")


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_agent_killed_or_hung_errors_that_test_and_restarts(fleet, fault):
    """Item 4: SIGKILL (or SIGSTOP = hung) the victim's agent during test_b_busy's requests."""
    victim = fleet["boards"][VICTIM]
    run = Run(fleet, f"agent-{fault}").start()
    run.wait_busy(VICTIM)
    old = _wait_for(lambda: agent_pids(victim.root), 10, "the victim's agent")
    assert len(old) == 1
    _signal(old[0], signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
    try:
        # test_b errors; test_c starts a new agent; then let test_b on the other board finish
        _wait_for(lambda: set(agent_pids(victim.root)) - set(old), 30, "a restarted agent")
        run.stop_busy(OTHER, VICTIM)
        rc, out = run.finish()
    finally:
        _signal(old[0], signal.SIGCONT)
        _signal(old[0], signal.SIGKILL)
    run_id, res = run.results()
    oc = _outcomes(res)
    assert oc.pop((VICTIM, "test_b_busy")) == "error", out
    msg = res[(VICTIM, "test_b_busy")].message
    if fault == "killed":
        # EOF on the channel, or the channel already closed when the next request is written
        assert ("agent closed the session during 'telemetry'" in msg
                or "connection lost during 'telemetry'" in msg), msg
    else:
        assert "no reply to 'telemetry' within 3 s (agent hung" in msg, msg
        # the controller ended the hung agent by pid (SIGTERM + SIGCONT) before reconnecting
        assert f"agent pid {old[0]} terminated" in msg, msg
        assert old[0] not in agent_pids(victim.root)
    assert set(oc.values()) == {"passed"} and len(oc) == 7, out    # the agent was restarted
    assert rc == 3
    _wait_for(lambda: not agent_pids(victim.root) and not agent_pids(fleet["boards"][OTHER].root), 15,
              "agents to exit after the run")


def test_sigint_mid_run_keeps_results_marks_interrupted_releases_everything(fleet):
    """Item 6: Ctrl-C (SIGINT to the controller's process group) while both boards are busy."""
    run = Run(fleet, "sigint").start()
    for b in (OTHER, VICTIM):
        run.wait_busy(b)
    # the victim's agent is stuck when Ctrl-C comes: it cannot obey `shutdown`, the controller
    # ends it by pid after the grace (fleet.remote.session.SHUTDOWN_GRACE_S)
    stuck = _wait_for(lambda: agent_pids(fleet["boards"][VICTIM].root), 10, "the victim's agent")
    _signal(stuck[0], signal.SIGSTOP)
    os.killpg(run.proc.pid, signal.SIGINT)
    rc, out = run.finish(timeout=90)
    assert rc == 130, out
    run_id, res = run.results()
    assert Store(run.db).run(run_id)["status"] == "interrupted"
    for b in (OTHER, VICTIM):
        assert res[(b, "test_a_info")].outcome == "passed"        # finished before Ctrl-C: kept
        assert (b, "test_c_info") not in res                        # never started
    assert LeaseStore(run.db).list() == []                          # boards released
    _wait_for(lambda: not any(agent_pids(b.root) for b in fleet["boards"].values()), 15,
              "no agent left on any board")
    # and it can be finished later
    run.stop_busy(OTHER, VICTIM)
    rc2, out2 = run.start("--resume", run_id).finish()
    assert rc2 == 0, out2
    assert {r.outcome for r in run.results(run_id)[1].values()} == {"passed"}


def _metrics(r) -> dict:
    return {m.name: m.value for m in r.metrics}


def test_board_rebooting_mid_suite_is_retried_not_failed(fleet):
    """Issue 13 §3: the victim goes away as in a reboot (its sshd, listener and connections, then
    its agent) while test_b_busy is mid-request, and its sshd is started again 3 s later. The
    request's SSH link drops; the session reconnects with backoff within the suite's
    reconnect_timeout_s (30 s here), starts a new agent and sends the request again: the suite
    completes with no error and the retries are on test_b_busy's result."""
    victim = fleet["boards"][VICTIM]
    suite = fleet["base"] / "suite-reboot"
    suite.mkdir()
    (suite / "suite.yml").write_text(SUITE_YML + "reconnect_timeout_s: 30\n")
    (suite / "test_faults_suite.py").write_text(SUITE_TESTS)
    run = Run({**fleet, "suite": suite}, "reboot").start()
    try:
        run.wait_busy(VICTIM)
        old = _wait_for(lambda: agent_pids(victim.root), 10, "the victim's agent")
        assert lifecycle.stop_board(fleet["state_dir"], VICTIM)
        for pid in old:  # the sshd first: killed with its sshd up, the agent would be an agent crash
            _signal(pid, signal.SIGKILL)
        time.sleep(3)
    finally:
        lifecycle.start_board(fleet["state_dir"], VICTIM)
    _wait_for(lambda: set(agent_pids(victim.root)) - set(old), 30, "the agent of the reconnected session")
    run.stop_busy(OTHER, VICTIM)
    rc, out = run.finish()
    run_id, res = run.results()
    assert {k: r.outcome for k, r in res.items()} == {
        (b, t): "passed" for b in (OTHER, VICTIM) for t in ("test_a_info", "test_b_busy", "test_c_info", "test_d_info")}, out
    assert rc == 0, out
    busy = res[(VICTIM, "test_b_busy")]
    m = _metrics(busy)
    assert m["reconnects"] == 1 and m["connect_retries"] >= 1, (m, busy.message)   # sshd down 3 s: refused
    assert busy.message.startswith("reconnected 1x after the SSH link dropped (board sim-rk3588-1: "), busy.message
    assert "during 'telemetry'" in busy.message and "SSH connect retr" in busy.message, busy.message
    for k, r in res.items():                                        # nothing retried anywhere else
        if k != (VICTIM, "test_b_busy"):
            assert "reconnects" not in _metrics(r) and not r.message, (k, r.message)
    assert Store(run.db).run(run_id)["status"] == "passed"


def test_board_lost_when_its_sshd_is_killed_mid_request(fleet):
    """Item 2, the other way to lose a board: its sshd (listener and connection processes) is
    killed while test_b_busy is mid-request. Last in the module: the board stays down."""
    run = Run(fleet, "sshd-killed").start()
    run.wait_busy(VICTIM)
    assert lifecycle.stop_board(fleet["state_dir"], VICTIM)
    run.stop_busy(OTHER)
    rc, out = run.finish()
    run_id, res = run.results()
    oc = _outcomes(res)
    assert rc == 3, out
    assert all(oc[(OTHER, t)] == "passed" for t in ("test_a_info", "test_b_busy", "test_c_info", "test_d_info"))
    assert oc[(VICTIM, "test_a_info")] == "passed"
    assert oc[(VICTIM, "test_b_busy")] == "error"
    busy = res[(VICTIM, "test_b_busy")]
    assert "during 'telemetry'" in busy.message
    # it never comes back: the reconnect with backoff gives up within the bound (default 5 s)
    bound = session_mod.RECONNECT_TIMEOUT_S
    assert busy.message.startswith("infrastructure: BoardLost: board lost: sim-rk3588-1 ("), busy.message
    assert "reconnect failed: " in busy.message and f"connect attempts in {bound:g} s)" in busy.message, busy.message
    assert busy.duration_s < bound + session_mod.RECONNECT_MIN_ATTEMPT_S + 5, busy.duration_s
    for t in ("test_c_info", "test_d_info"):
        assert oc[(VICTIM, t)] == "error" and "board lost: sim-rk3588-1" in res[(VICTIM, t)].message
        assert res[(VICTIM, t)].duration_s < bound                   # lost once, not retried per test
    assert Store(run.db).run(run_id)["status"] == "error"
    # the agent on the lost board went with its SSH connection
    _wait_for(lambda: not agent_pids(fleet["boards"][VICTIM].root), 15, "the lost board's agent to exit")
