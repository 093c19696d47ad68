"""The controller ends the agent it started (fleet/remote/session.py) and the agent ends itself
when nobody reads its replies (device_agent.agent.watch_reply_reader), over a real emulated board:
an OpenSSH sshd in a network namespace (when root), the agent run from this checkout's venv
(`python -m device_agent.cli serve`; no deploy needed). Emulated boards share this machine's
process table, so an agent's fate is read from /proc by pid.

Hangs are made two ways: SIGSTOP (as tests/test_faults.py does; the process cannot run at all),
and an agent whose ``telemetry`` op sleeps for an hour (the process runs, the request never ends).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.inventory import load_inventory
from fleet.remote import session as session_mod
from fleet.remote.session import AgentSession, BoardLost, kill_command
from fleet.sim import lifecycle
from fleet.sim.state import load_state

pytestmark = pytest.mark.slow

#: an agent whose telemetry request never ends (the rest of the agent is the real one)
HANGING = ("import sys, time\n"
           "from device_agent import agent, cli\n"
           "agent.Agent.telemetry = lambda self: time.sleep(3600)\n"
           "sys.exit(cli.main(sys.argv[1:]))\n")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One emulated board with an agent.yml in its fleet_root (the agent runs from this venv)."""
    base = tmp_path_factory.mktemp("cleanup")
    state_dir, inv = base / "sim", base / "sim.yml"
    try:
        lifecycle.up(state_dir, inv, mix="rk3588:1", use_netns=os.geteuid() == 0)
        b = load_inventory(inv)[0]
        root = Path(b.fleet_root)
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "agent.yml").write_text(f"board: rk3588\naccelerator: rk3588\nemulated: true\nfleet_root: {root}\n")
        yield {"board": b, "state_dir": state_dir, "sim": load_state(state_dir).boards[0]}
    finally:
        lifecycle.down(state_dir)


def agent_cmd(b, hanging: bool = False) -> str:
    args = f"--root {shlex.quote(b.fleet_root)} serve"
    if hanging:
        return f"{shlex.quote(sys.executable)} -c {shlex.quote(HANGING)} {args}"
    return f"{shlex.quote(sys.executable)} -m device_agent.cli {args}"


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no memory, files or NPU)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def reap():
    """Pids to SIGCONT + SIGKILL after the test, whatever happened (no process outlives a test);
    the agents a test left unended are forgotten (no later test's open() inherits them)."""
    pids: list[int] = []
    yield pids
    session_mod._UNENDED.clear()
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def opened(b, reap, hanging: bool = False, timeout: float = 2.0) -> AgentSession:
    s = AgentSession(b, request_timeout_s=timeout, command=agent_cmd(b, hanging)).open()
    assert s.info()["board"] == "rk3588"
    assert s.agent_pid and running(s.agent_pid)
    reap.append(s.agent_pid)
    return s


@pytest.mark.parametrize("hang", ["sigstop", "stuck_request"])
def test_timed_out_agent_is_ended_and_the_next_session_works(board, reap, hang):
    b = board["board"]
    s = opened(b, reap, hanging=hang == "stuck_request")
    pid = s.agent_pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"device_agent" in cmdline and b"serve" in cmdline   # the pid is the agent, not its shell
    if hang == "sigstop":
        os.kill(pid, signal.SIGSTOP)
    with pytest.raises(BoardLost) as e:
        s.request("telemetry")
    msg = str(e.value)
    assert "no reply to 'telemetry' within 2 s" in msg and f"agent pid {pid} terminated" in msg, msg
    assert s.agent_end == "terminated" and s.lost_reason == msg
    assert not running(pid)                         # gone by the time request() raised
    s2 = opened(b, reap)                            # a fresh agent serves the next request
    assert s2.agent_pid != pid
    assert s2.request("telemetry").result is not None
    s2.close()


def test_close_of_a_healthy_session_leaves_no_agent(board, reap):
    s = opened(board["board"], reap)
    pid = s.agent_pid
    s.close()
    assert s.agent_end == "exited"                  # it exited after shutdown: nothing killed
    assert wait_until(lambda: not running(pid), 5)


def test_close_ends_an_agent_that_does_not_exit_after_shutdown(board, reap):
    """The controller is interrupted while the agent is stuck (Ctrl-C closes every session)."""
    s = opened(board["board"], reap)
    pid = s.agent_pid
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    s.close(grace_s=1.0)
    assert s.agent_end == "terminated"
    assert not running(pid)
    assert time.monotonic() - t0 < 1.0 + session_mod.KILL_BUDGET_S


def test_kill_never_hits_a_process_that_is_not_this_sessions_agent(board, reap):
    """Another agent on the same board (same command line, other token) and an unrelated process
    are left alone; only the pid with this session's token in its environment is ended."""
    b = board["board"]
    mine, other = opened(b, reap), opened(b, reap)
    unrelated = subprocess.Popen(["sleep", "60"])
    reap.append(unrelated.pid)
    try:
        for victim in (other.agent_pid, unrelated.pid):
            mine_pid = mine.agent_pid
            mine.agent_pid = victim                      # as if the agent died and the pid was reused
            assert mine._kill_agent() == "gone"
            mine.agent_pid = mine_pid
            assert running(victim)
        assert other.info()["board"] == "rk3588"         # the other agent still answers
        assert mine.info()["board"] == "rk3588"
    finally:
        unrelated.kill()
        unrelated.wait()
        mine.close()
        other.close()
    with pytest.raises(ValueError):
        kill_command(1, "ab")                            # init is never a target
    with pytest.raises(ValueError):
        kill_command(1234, "x; rm -rf /")                # the token goes into a shell: hex only


def test_agent_exits_by_itself_when_the_controller_cannot_kill_it(board, reap, monkeypatch):
    """Defence in depth: the board could not be asked (monkeypatched kill), the session is closed;
    the stuck agent notices nobody reads its replies and exits (ORPHAN_GRACE_S, 5 s)."""
    s = opened(board["board"], reap, hanging=True)
    pid = s.agent_pid
    monkeypatch.setattr(s, "_kill_agent", lambda budget_s=None: "unknown: the test took the board away")
    with pytest.raises(BoardLost, match=f"agent pid {pid} may still run on the board"):
        s.request("telemetry")
    assert running(pid)                              # nobody killed it...
    assert wait_until(lambda: not running(pid), 10)  # ...it went by itself (5 s grace + 1 s poll)


def test_unreachable_board_is_reported_not_waited_for(board, reap):
    """The link dies while a request is in flight: the kill cannot reach the board; the BoardLost
    says the agent may still run, within the request timeout + the kill budget (2 s here); the
    next session this process opens to the board ends it before starting its agent. Last in the module: without namespaces the board's sshd is stopped for good."""
    sim, b = board["sim"], board["board"]
    s = opened(b, reap, hanging=True)
    pid = s.agent_pid
    s._kill_agent = lambda budget_s=None: AgentSession._kill_agent(s, 2.0)
    if sim.host_if:
        subprocess.run(["ip", "link", "set", sim.host_if, "down"], check=True)
    else:  # no namespaces (not root): take the board's sshd away instead
        lifecycle.stop_board(board["state_dir"], sim.name)
    t0 = time.monotonic()
    try:
        with pytest.raises(BoardLost) as e:
            s.request("telemetry")
        took = time.monotonic() - t0
    finally:
        if sim.host_if:
            subprocess.run(["ip", "link", "set", sim.host_if, "up"], check=True)
    assert f"agent pid {pid} may still run on the board" in str(e.value), str(e.value)
    assert s.agent_end.startswith("unknown")
    assert took < 2.0 + 2.0 + 1.5, took
    if sim.host_if:  # the board is back: the next session ends the left-behind agent first
        assert running(pid)
        s2 = opened(b, reap)
        assert s2.ended_stale == [(pid, "terminated")]
        assert not running(pid)
        s2.close()
        s3 = AgentSession(b, command=agent_cmd(b)).open()
        assert s3.ended_stale == []                      # ended once, then forgotten
        s3.close()
