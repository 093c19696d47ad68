"""Retrying a board that is rebooting (issue 13 §3): connect_with_retry's backoff and bound, the
bound's sources (suite.yml ``reconnect_timeout_s``, inventory ``fleet_reconnect_timeout_s``) and
the note a result gets. No board needed: SSH to a closed local port, or connect() replaced.
The emulated-board run (sshd stopped and started mid-suite) is in tests/test_faults.py."""

from __future__ import annotations

import json
import socket
import time

import paramiko
import pytest

from fleet.errors import FleetError
from fleet.inventory import Board, load_inventory
from fleet.remote import session as session_mod
from fleet.remote.session import BoardUnreachable, RetryEvent, connect_with_retry, retry_note
from fleet.runner.suite import load_suite

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

BOARD = Board("b1", "rk3588", "rk3588", True, "/opt/fleet", "127.0.0.1", 1, "root")
SUITE = "pipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\ndataset: speech\n"


def closed_port() -> int:
    """A local TCP port nobody listens on (bound and released: connect() is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failing(times: int, cause: Exception):
    """A connect() that fails ``times`` times as connect() does (BoardUnreachable from ``cause``),
    then returns "conn"; ``calls`` counts the attempts."""
    calls = []

    def connect(board, timeout_s=15.0):
        calls.append(timeout_s)
        if len(calls) <= times:
            try:
                raise cause
            except Exception as e:
                raise BoardUnreachable(f"board {board.name}: {e}") from None
        return "conn"
    return connect, calls


def test_connect_is_retried_with_backoff_until_the_board_answers(monkeypatch):
    connect, calls = failing(3, ConnectionRefusedError(111, "Connection refused"))
    monkeypatch.setattr(session_mod, "connect", connect)
    events: list[RetryEvent] = []
    assert connect_with_retry(BOARD, timeout_s=15.0, retry_s=30.0, on_retry=events.append) == "conn"
    assert len(calls) == 4
    assert [e.kind for e in events] == ["connect"] * 3
    assert [e.wait_s for e in events] == [0.5, 1.0, 2.0]         # doubling backoff
    assert all("Connection refused" in e.error for e in events)
    assert calls[0] == 15.0 and all(5.0 <= t <= 15.0 for t in calls[1:])


def test_a_board_that_never_answers_is_given_up_within_the_bound():
    b = Board("gone", "rk3588", "rk3588", True, "/opt/fleet", "127.0.0.1", closed_port(), "root")
    events: list[RetryEvent] = []
    t0 = time.monotonic()
    with pytest.raises(BoardUnreachable) as e:
        connect_with_retry(b, timeout_s=15.0, retry_s=2.0, on_retry=events.append)
    took = time.monotonic() - t0
    assert "unreachable" in str(e.value) and "in 2 s)" in str(e.value), str(e.value)
    assert f"gave up after {len(events) + 1} connect attempts" in str(e.value)
    assert len(events) >= 2                                      # 0.5 + 1 s of backoff fit in 2 s
    assert 2.0 <= took < 2.0 + session_mod.RECONNECT_BACKOFF_MAX_S, took


def test_no_bound_means_one_attempt(monkeypatch):
    connect, calls = failing(1, ConnectionRefusedError(111, "Connection refused"))
    monkeypatch.setattr(session_mod, "connect", connect)
    with pytest.raises(BoardUnreachable) as e:
        connect_with_retry(BOARD, retry_s=0.0)
    assert len(calls) == 1 and "gave up" not in str(e.value)


@pytest.mark.parametrize("cause", [paramiko.AuthenticationException("Authentication failed."),
                                   paramiko.BadHostKeyException("h", paramiko.RSAKey.generate(1024),
                                                                paramiko.RSAKey.generate(1024))])
def test_host_key_or_auth_failures_are_not_retried(monkeypatch, cause):
    """A reboot fixes neither: fail at once instead of spending the bound."""
    connect, calls = failing(5, cause)
    monkeypatch.setattr(session_mod, "connect", connect)
    with pytest.raises(BoardUnreachable):
        connect_with_retry(BOARD, retry_s=30.0)
    assert len(calls) == 1


def test_retry_note_says_what_was_retried():
    assert retry_note([]) == ""
    note = retry_note([RetryEvent("connect", 0.0, "refused", 0.5), RetryEvent("connect", 0.0, "refused again", 1.0),
                       RetryEvent("reconnect", 0.0, "SSH connection lost during 'run'", 2.25)])
    assert note.startswith("reconnected 1x after the SSH link dropped (SSH connection lost during 'run'; back in 2.2 s)")
    assert "2 SSH connect retries (backoff 0.5+1 s; last error: refused again)" in note


def _suite(tmp_path, extra: str):
    d = tmp_path / "s"
    d.mkdir(exist_ok=True)
    (d / "suite.yml").write_text(SUITE + extra)
    (d / "test_s.py").write_text("def test_x():\n    pass\n")
    return d


def test_suite_reconnect_timeout(tmp_path):
    assert load_suite(_suite(tmp_path, "")).reconnect_timeout_s == session_mod.RECONNECT_TIMEOUT_S
    assert load_suite(_suite(tmp_path, "reconnect_timeout_s: 90\n")).reconnect_timeout_s == 90.0
    assert load_suite(_suite(tmp_path, "reconnect_timeout_s: 0\n")).reconnect_timeout_s == 0.0
    for bad in ("-1", "soon", "true", ".nan"):
        with pytest.raises(FleetError, match="reconnect_timeout_s"):
            load_suite(_suite(tmp_path, f"reconnect_timeout_s: {bad}\n"))


def _inventory(tmp_path, value) -> list[Board]:
    host = {"board": "rk3588", "accelerator": "rk3588", "fleet_root": "/opt/fleet"}
    if value is not None:
        host["fleet_reconnect_timeout_s"] = value
    p = tmp_path / "inv.yml"
    p.write_text(json.dumps({"all": {"hosts": {"r1": host}}}))
    return load_inventory(p)


def test_inventory_reconnect_timeout_wins_over_the_suite(tmp_path):
    from fleet.runner.plugin import FleetContext

    class Config:
        def getoption(self, name, default=None):
            return default

    assert _inventory(tmp_path, None)[0].reconnect_timeout_s is None
    (b,) = _inventory(tmp_path, "120")                            # INI inventories give strings
    assert b.reconnect_timeout_s == 120.0
    ctx = FleetContext(Config())
    assert ctx.reconnect_bound(BOARD) == session_mod.RECONNECT_TIMEOUT_S
    ctx.suite = load_suite(_suite(tmp_path, "reconnect_timeout_s: 30\n"))
    assert ctx.reconnect_bound(BOARD) == 30.0
    assert ctx.reconnect_bound(b) == 120.0
    with pytest.raises(FleetError, match="fleet_reconnect_timeout_s='later'"):
        _inventory(tmp_path, "later")
