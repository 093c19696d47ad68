"""kill_command (fleet/remote/session.py) run on this machine's /proc, no board or sshd needed:
it says ``terminated`` only once the process is gone (freed pid or a zombie with no thread left),
finds its agent by any thread's environ, and leaves other processes alone."""

from __future__ import annotations

import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.remote.session import KILL_MARK, TOKEN_VAR, kill_command

#: exit(2) of one thread only (the leader; the others go on): syscall numbers of the Linux ABIs
SYS_EXIT = {"x86_64": 60, "aarch64": 93}

#: a stand-in agent: big (freeing its memory on exit takes a while: the window in which the old
#: kill command saw no environ and said "terminated" while the process was still running) and
#: threaded like the real one
BIG = ("import threading, time\n"
       "b = bytearray(400 * 1024 * 1024)\n"
       "for i in range(0, len(b), 4096): b[i] = 1\n"
       "for _ in range(4): threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
       "print('ready', flush=True)\n"
       "time.sleep(3600)\n")

#: the leader thread exits, one other thread runs on: the leader is a zombie with no environ
LEADER_GONE = ("import ctypes, threading, time, sys\n"
               "threading.Thread(target=time.sleep, args=(3600,)).start()\n"
               "print('ready', flush=True)\n"
               "ctypes.CDLL(None).syscall(int(sys.argv[1]), 0)\n")


def state(pid: int) -> str:
    """The process's state letter from /proc/PID/stat, "" when the pid is free."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


def threads(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def start(code: str, token: str, *args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                         env=dict(os.environ, **{TOKEN_VAR: token}))
    assert p.stdout.readline().strip() == b"ready"
    return p


def run_kill(pid: int, token: str) -> str:
    out = subprocess.run(["sh", "-c", kill_command(pid, token)], capture_output=True, text=True,
                         timeout=30).stdout.strip()
    mark, _, what = out.rpartition("\n")[2].partition(" ")
    assert mark == KILL_MARK, out
    return what


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
        p.wait()


@pytest.mark.parametrize("attempt", range(3))
def test_terminated_only_once_the_stopped_process_is_gone(procs, attempt):
    token = secrets.token_hex(16)
    p = start(BIG, token)
    procs.append(p)
    os.kill(p.pid, signal.SIGSTOP)
    assert run_kill(p.pid, token) == "terminated"
    assert state(p.pid) in ("Z", "")          # our child: a zombie until we wait() for it
    assert threads(p.pid) in ([str(p.pid)], [])


def test_an_agent_whose_leader_thread_exited_is_still_found_and_ended(procs):
    """Its leader is a zombie without environ while a thread runs on (and would hold the NPU)."""
    if platform.machine() not in SYS_EXIT:
        pytest.skip(f"no exit(2) syscall number known for {platform.machine()}")
    token = secrets.token_hex(16)
    p = start(LEADER_GONE, token, str(SYS_EXIT[platform.machine()]))
    procs.append(p)
    for _ in range(100):                      # the leader's exit(2) follows the 'ready' line
        if state(p.pid) == "Z":
            break
        time.sleep(0.02)
    assert state(p.pid) == "Z" and len(threads(p.pid)) == 2
    assert run_kill(p.pid, token) == "terminated"
    assert threads(p.pid) in ([str(p.pid)], [])


def test_another_process_is_left_alone(procs):
    p = start(BIG, secrets.token_hex(16))
    procs.append(p)
    assert run_kill(p.pid, secrets.token_hex(16)) == "gone"
    assert state(p.pid) not in ("Z", "")
    p.kill()
    p.wait()
    assert run_kill(p.pid, secrets.token_hex(16)) == "gone"     # a freed pid
