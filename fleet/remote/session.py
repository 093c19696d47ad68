"""One long-lived agent session per board over one SSH channel.

The controller starts ``fleet-agent serve`` on the board (fabric/paramiko, host key pinned by the
inventory's known_hosts, never auto-added) and speaks the JSON-lines protocol of
``device_agent.protocol`` over the channel's stdin/stdout. Models stay loaded between requests, so a
test's latency is the pipeline's and not the SSH handshake's.

The session knows its agent by pid and by a random token in the agent's environment (the remote
command is wrapped so the shell prints its pid and ``exec``s the agent under it). When the session
is given up on (no reply in time, a reply out of order, the link lost) or the agent does not exit
after ``shutdown``, the controller ends that one process over a new short exec channel
(:func:`kill_command`): a hung agent must not keep holding the board's NPU (a Hailo VDevice or an
RKNN context admits one process; docs/reference/device_apis.md §5.2), or the next agent could
not open it.
"""

from __future__ import annotations

import json
import secrets
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from device_agent import protocol
from fleet.inventory import Board


class InfrastructureError(Exception):
    """A board problem, not a test failure: unreachable, lost mid-suite, agent crashed or hung.

    Tests that raise it are recorded with outcome ``error`` (infrastructure), never ``failed``.
    """


class BoardUnreachable(InfrastructureError):
    """SSH to the board failed (connection refused, timeout, host key mismatch, auth)."""


class BoardLost(InfrastructureError):
    """The board or its agent went away during a session (channel closed, EOF, timeout)."""


class LinkLost(BoardLost):
    """The session's SSH connection itself went away mid-request (the board rebooted, its sshd was
    restarted), not only its agent: a session with a reconnect bound reconnects and resends."""


#: First stdout line of the wrapped agent command, before any protocol line: ``fleet-agent-pid N``.
PID_MARK = "fleet-agent-pid"
#: Environment variable naming the session's token in the agent's environment (/proc/PID/environ):
#: a pid alone could have been reused by another process after the agent died.
TOKEN_VAR = "FLEET_AGENT_SESSION"
#: Prefix of the kill command's one output line: ``fleet-agent-kill gone|terminated|killed|survived``.
KILL_MARK = "fleet-agent-kill"
#: How long close() waits for the agent to exit after ``shutdown`` (s) before killing it. A
#: healthy agent unloads and exits well within it (tests/test_agent_cleanup.py: close() of a
#: healthy session sees the exit, ``agent_end == "exited"``); a stuck one costs this much more.
SHUTDOWN_GRACE_S = 3.0
#: Budget for the whole kill (s): new channel (or new connection) + SIGTERM, ~1 s, SIGKILL, ~1 s.
KILL_BUDGET_S = 6.0
#: Default bound (s) on getting a board back (suite.yml ``reconnect_timeout_s``, inventory
#: ``fleet_reconnect_timeout_s``): connect attempts with backoff stop this long after the first.
#: Short, so a board that is gone costs seconds; a lab whose boards reboot mid-suite sets it to
#: their reboot time.
RECONNECT_TIMEOUT_S = 5.0
#: First wait between connect attempts (s), doubled after each failed one up to
#: RECONNECT_BACKOFF_MAX_S: a restarted sshd is back within the first waits, a rebooting board is
#: not asked more than every few seconds.
RECONNECT_BACKOFF_S = 0.5
RECONNECT_BACKOFF_MAX_S = 4.0
#: Shortest timeout (s) of one connect attempt while retrying, however little of the bound is left:
#: TCP + SSH handshake + auth on a loaded controller (the plugin's reconnect timeout before retries).
RECONNECT_MIN_ATTEMPT_S = 5.0

#: Agents this process gave up on but could not end (board unreachable), by board (host, port,
#: fleet_root): [(pid, token)]. The next session opened to that board ends them before it starts
#: its own agent, which could not open the NPU while they hold it.
_UNENDED: dict[tuple, list[tuple[int, str]]] = {}
_UNENDED_LOCK = threading.Lock()


def _board_key(board: Board) -> tuple:
    return (board.host, board.port, board.fleet_root)


def wrap_command(command: str, token: str) -> str:
    """The remote command that starts ``command`` (the agent) so the session can find it later.

    ``env`` puts ``FLEET_AGENT_SESSION=token`` in the environment and ``exec``s ``/bin/sh``, which
    prints ``fleet-agent-pid $$`` on stdout and ``exec``s the agent, which keeps that pid. The
    token is in the process's environment from before the pid line is printed (not exported by the
    shell, which would put it there only at the agent's exec), so a kill sent before the agent
    started still finds its process. The outer ``exec`` makes it the same whatever the user's login
    shell is (sshd runs the command with ``$SHELL -c``).
    """
    script = f'echo "{PID_MARK} $$"; exec {command}'
    return f"exec env {TOKEN_VAR}={token} /bin/sh -c " + shlex.quote(script)


def kill_command(pid: int, token: str) -> str:
    """A shell command that ends process ``pid`` only if it is the agent this session started, and
    says it ended only once it has seen it gone.

    "It is" means the environ of one of its threads (``/proc/PID/task/TID/environ``: a leader
    thread that exited before the others has none) holds ``FLEET_AGENT_SESSION=token`` (a random
    128-bit token, so no other process, an agent of another session included, can match). Then
    SIGTERM (+ SIGCONT, so a stopped process gets it), up to 1 s for it to go, else SIGKILL and up
    to 1 s more. A process that does not match but is exiting (``PF_EXITING``, 0x4 in field 9 of
    its stat: its environ is empty once its memory is freed) gets no signal; it is waited for, up
    to 1 s. Prints one line ``fleet-agent-kill gone|terminated|killed|survived``: gone = not (or
    no longer) this session's agent; survived = still there after SIGKILL (e.g. stuck in the
    kernel in an NPU driver call), or exiting for more than 1 s: it may still run.

    "Gone" is read from ``/proc/PID/stat`` (proc(5)), not from the environ: an exiting process
    has no environ from the moment its memory is released (``exit_mm`` in the kernel's
    ``do_exit``) until it is a zombie, and freeing a large address space under load takes long
    enough for the controller to see the process still running (the cause of issue 13 §7,
    tests/test_agent_cleanup.py ``[sigstop]``; tests/test_kill_command.py shows it). The process
    counts as gone when the pid is free, holds another process (start time, field 22, differs),
    or is a zombie whose threads have all exited (``/proc/PID/task`` lists only the leader: a
    leader that exits before its threads is a zombie while they still run and hold the NPU's
    file descriptors).
    """
    if not isinstance(pid, int) or pid <= 1:
        raise ValueError(f"refusing to kill pid {pid!r}")
    if not token or not all(c in "0123456789abcdef" for c in token):
        raise ValueError("the session token must be lowercase hex")
    script = f"""p={pid}; t={TOKEN_VAR}={token}
ours() {{ for e in /proc/$p/task/*/environ; do
  {{ tr '\\000' '\\n' < "$e"; }} 2>/dev/null | grep -qxF "$t" && return 0; done; return 1; }}
pstat() {{ s=$(cat /proc/$p/stat 2>/dev/null) && set -- ${{s##*)}} && echo "$1 $7 ${{20}}"; }}
gone() {{ f=$(pstat) || return 0; set -- $f; [ "$3" = "$t0" ] || return 0
  case $1 in Z|X) ;; *) return 1;; esac
  [ ! -d /proc/$p/task ] || [ "$(ls /proc/$p/task 2>/dev/null)" = "$p" ]; }}
waitgone() {{ i=0; while [ $i -lt 10 ]; do gone && return 0; sleep 0.1; i=$((i+1)); done; gone; }}
f=$(pstat) || {{ echo "{KILL_MARK} gone"; exit 0; }}; set -- $f; t0=$3
if ! ours; then
  [ $(($2 & 4)) -eq 0 ] || waitgone || {{ echo "{KILL_MARK} survived"; exit 0; }}
  echo "{KILL_MARK} gone"; exit 0
fi
kill -TERM $p 2>/dev/null; kill -CONT $p 2>/dev/null
waitgone && {{ echo "{KILL_MARK} terminated"; exit 0; }}
kill -KILL $p 2>/dev/null
waitgone && {{ echo "{KILL_MARK} killed"; exit 0; }}
echo "{KILL_MARK} survived"
"""
    return "exec /bin/sh -c " + shlex.quote(script)


class AgentError(Exception):
    """The agent answered a request with an error reply (bad input, unknown pipeline, model error).

    Attributes:
        type: the protocol error type (e.g. ``BadInput``), message and fix as the agent sent them.
    """

    def __init__(self, type_: str, message: str, fix: str = ""):
        super().__init__(f"{type_}: {message}" + (f" (fix: {fix})" if fix else ""))
        self.type = type_
        self.message = message
        self.fix = fix


@dataclass
class Reply:
    """A successful agent reply: ``result`` (op-specific dict), ``timings`` (ms), and the
    controller-side round trip ``rtt_ms`` (request written → reply parsed, ms)."""

    result: dict
    timings: dict = field(default_factory=dict)
    rtt_ms: float = 0.0


@dataclass
class RetryEvent:
    """One thing a session did to get its board back, for the result of the test it happened in.

    Attributes:
        kind: ``connect`` (an SSH connect attempt failed and is tried again after ``wait_s``) or
            ``reconnect`` (the SSH link dropped mid-request: the session reconnected, started a new
            agent and resent the request; ``wait_s`` is how long getting back took).
        at: when (``time.time()``, s).
        error: the failed attempt's error, or how the link was lost.
        wait_s: s, see ``kind``.
    """

    kind: str
    at: float
    error: str
    wait_s: float


def retry_note(events: list[RetryEvent]) -> str:
    """One line for a result's message saying what was retried, "" for no events; e.g.
    ``reconnected 1x after the SSH link dropped (...; back in 2.1 s); 3 SSH connect retries
    (backoff 0.5+1+2 s; last error: ...)``."""
    rec = [e for e in events if e.kind == "reconnect"]
    con = [e for e in events if e.kind == "connect"]
    parts = []
    if rec:
        parts.append(f"reconnected {len(rec)}x after the SSH link dropped ("
                     + "; ".join(f"{e.error[:300]}; back in {e.wait_s:.1f} s" for e in rec) + ")")
    if con:
        parts.append(f"{len(con)} SSH connect retr{'y' if len(con) == 1 else 'ies'} (backoff "
                     + "+".join(f"{e.wait_s:.3g}" for e in con) + f" s; last error: {con[-1].error[:300]})")
    return "; ".join(parts)


def connect_with_retry(board: Board, timeout_s: float = 15.0, retry_s: float = 0.0, on_retry=None):
    """:func:`connect`, tried again with backoff while the board does not answer (it is rebooting,
    its sshd restarting), for up to ``retry_s`` (s) after the first attempt started.

    Waits ``RECONNECT_BACKOFF_S`` doubling to ``RECONNECT_BACKOFF_MAX_S`` between attempts; the first
    attempt has ``timeout_s``, later ones the bound's remaining time (at least
    ``RECONNECT_MIN_ATTEMPT_S``, at most ``timeout_s``). ``on_retry(RetryEvent)`` is called before
    each wait. ``retry_s`` 0 = one attempt, as connect().

    Returns:
        fabric.Connection, already open.

    Raises:
        BoardUnreachable: the last attempt's error, with the attempt count and the bound; at once for
            a host key mismatch or an authentication failure (a reboot fixes neither).
    """
    import paramiko

    deadline = time.monotonic() + retry_s
    wait, attempt, attempt_timeout = RECONNECT_BACKOFF_S, 1, timeout_s
    while True:
        try:
            return connect(board, timeout_s=attempt_timeout)
        except BoardUnreachable as e:
            # connect() raises "from None": the paramiko exception is still the context
            if isinstance(e.__context__, (paramiko.BadHostKeyException, paramiko.AuthenticationException)):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                if retry_s <= 0:
                    raise
                raise BoardUnreachable(f"{e} (gave up after {attempt} connect attempt"
                                       f"{'s' if attempt > 1 else ''} in {retry_s:g} s)") from None
            pause = min(wait, left)
            if on_retry is not None:
                on_retry(RetryEvent("connect", time.time(), str(e), pause))
            time.sleep(pause)
            wait = min(wait * 2, RECONNECT_BACKOFF_MAX_S)
            attempt += 1
            attempt_timeout = min(timeout_s, max(deadline - time.monotonic(), RECONNECT_MIN_ATTEMPT_S))


def _connection_class():
    """fabric.Connection that also closes its gateway (fabric 3's close() leaves a ProxyJump
    gateway's connection open)."""
    from fabric import Connection

    class _Connection(Connection):
        def close(self):
            super().close()
            if isinstance(self.gateway, Connection):
                self.gateway.close()

    return _Connection


def _strict(host: str, port: int, user: str, key_file: str, known_hosts: str, timeout_s: float,
            gateway=None, sock=None):
    """An unopened fabric Connection that refuses unknown host keys (``known_hosts`` or
    ~/.ssh/known_hosts) and reads no ssh_config: fleet.remote.ssh_target already applied it."""
    import paramiko
    from fabric import Config

    kwargs = {"look_for_keys": not key_file, "allow_agent": not key_file,
              "banner_timeout": timeout_s, "auth_timeout": timeout_s}
    if key_file:
        kwargs["key_filename"] = key_file
    if sock is not None:
        kwargs["sock"] = sock
    conn = _connection_class()(host, user=user, port=port, connect_timeout=timeout_s, connect_kwargs=kwargs,
                               gateway=gateway, config=Config(ssh_config=paramiko.SSHConfig()))
    # fabric defaults to AutoAddPolicy; a HIL lab must never trust an unknown host key.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    known = Path(known_hosts).expanduser() if known_hosts else Path.home() / ".ssh" / "known_hosts"
    if known.exists():
        conn.client.load_host_keys(str(known))
    return conn, known


def _open_hops(board: Board, timeout_s: float):
    """Open the board's ProxyJump hops in order (each through the one before, each host key
    checked); returns the last hop's Connection (the board's gateway), None without hops.

    Raises:
        BoardUnreachable: naming the hop that failed and why.
    """
    import paramiko

    gateway = None
    for i, hop in enumerate(board.jump):
        conn, known = _strict(hop.host, hop.port, hop.user, hop.key_file, hop.known_hosts, timeout_s, gateway=gateway)
        where = f"board {board.name}: jump host {hop.name} ({hop.user}@{hop.host}:{hop.port}, hop {i + 1} of {len(board.jump)})"
        try:
            try:
                conn.open()
            except BaseException:
                conn.close()  # and the hops before it
                raise
        except paramiko.BadHostKeyException as e:
            raise BoardUnreachable(f"{where}: host key does not match {known}: {e}") from None
        except paramiko.SSHException as e:
            raise BoardUnreachable(f"{where}: SSH failed: {e} (known_hosts {known})") from None
        except (OSError, EOFError) as e:
            raise BoardUnreachable(f"{where} unreachable: {e}") from None
        gateway = conn
    return gateway


def connect(board: Board, timeout_s: float = 15.0):
    """Open a fabric Connection to ``board`` with strict host key checking, the way Ansible's ssh
    connection reaches it: directly, through its ProxyJump hops (each hop's host key checked too),
    or through its ProxyCommand (``board.jump``/``board.proxy_command``, from the inventory's
    ``ansible_ssh_common_args``/``ansible_ssh_extra_args`` or ssh_config; fleet.remote.ssh_target).

    Returns:
        fabric.Connection, already open; close() closes its hops too.

    Raises:
        BoardUnreachable: with the board name, address (and the hop that failed) and the reason.
    """
    import paramiko

    via = ""
    sock = None
    gateway = None
    if board.jump:
        via = " via " + ",".join(h.name for h in board.jump)
        gateway = _open_hops(board, timeout_s)
    elif board.proxy_command:
        via = f" via ProxyCommand {board.proxy_command!r}"
        try:
            sock = paramiko.ProxyCommand(board.proxy_command)
        except paramiko.SSHException as e:
            raise BoardUnreachable(f"board {board.name}{via}: {e}") from None
    conn, known = _strict(board.host, board.port, board.user, board.key_file, board.known_hosts, timeout_s,
                          gateway=gateway, sock=sock)
    where = f"board {board.name} ({board.host}:{board.port}{via})"
    try:
        conn.open()
    except paramiko.BadHostKeyException as e:
        conn.close()
        raise BoardUnreachable(f"{where}: host key does not match {known}: {e}") from None
    except paramiko.SSHException as e:
        conn.close()
        raise BoardUnreachable(f"{where}: SSH failed: {e} (known_hosts {known})") from None
    except (OSError, EOFError) as e:
        conn.close()
        raise BoardUnreachable(f"{where} unreachable: {e}") from None
    # Requests are small lines answered at once: with Nagle on, ~6 % of them waited for a 40 ms
    # delayed ACK (benchmarks/fleet_scale.py: overhead p99 41-47 ms, 4-11 ms with TCP_NODELAY).
    sock = conn.client.get_transport().sock
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


class AgentSession:
    """A ``fleet-agent serve`` process on one board, spoken to request by request.

    Args:
        board: the board to reach.
        request_timeout_s: default per-request timeout (s); a request not answered in time
            raises BoardLost and closes the session (the agent is hung or the link is gone).
        command: override the remote command (default ``board.agent_command``); it is run
            wrapped (:func:`wrap_command`) and must ``exec`` or be the agent itself.
        reconnect_timeout_s: bound (s) on getting the board back (:func:`connect_with_retry`):
            open() retries its connect that long, and a request whose SSH link drops
            (:class:`LinkLost`) reconnects within it, starts a new agent and is sent once more;
            0 (default) = one connect attempt, no resend. Every retry is kept in ``retries``.

    A session given up on (timeout, reply id mismatch, connection lost, no pid line) or an agent
    that does not exit within ``SHUTDOWN_GRACE_S`` of ``shutdown`` on close() has its agent ended
    by pid (:meth:`_kill_agent`, at most ``KILL_BUDGET_S``); ``agent_end`` says what happened, and
    the BoardLost message says when the agent may still run (the board could not be reached).
    """

    def __init__(self, board: Board, request_timeout_s: float = 120.0, command: str | None = None,
                 reconnect_timeout_s: float = 0.0):
        self.board = board
        self.request_timeout_s = request_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        #: every connect retry and reconnect of this session, oldest first (see take_retries)
        self.retries: list[RetryEvent] = []
        self._retries_taken = 0
        #: "board lost: ..." when a reconnect within the bound failed: the board is gone, the
        #: caller need not try again
        self.board_lost = ""
        self._command = command or board.agent_command
        self._conn = None
        self._chan = None
        self._rfile = None
        self._next_id = 1
        #: the agent's pid on the board (the wrapped command's first line, read with the first
        #: reply), None until then
        self.agent_pid: int | None = None
        self._token = ""
        #: why the session died (the BoardLost message), "" while it lives
        self.lost_reason = ""
        #: what became of the agent when the session ended: "exited", "gone", "terminated",
        #: "killed", "survived" or "unknown: <why>" (the board could not be reached to check)
        self.agent_end = ""
        #: agents of earlier sessions this process could not end, ended by open(): [(pid, outcome)]
        self.ended_stale: list[tuple[int, str]] = []

    # -- lifecycle -------------------------------------------------------------------------
    def open(self, connect_timeout_s: float = 15.0) -> "AgentSession":
        """Connect and start the agent. The agent's pid line is read with the first reply (the
        agent's start-up overlaps with the first request, as before the pid was asked for).

        Raises:
            BoardUnreachable: SSH failed or the agent command could not be started.
        """
        self.lost_reason = self.agent_end = ""
        self.agent_pid = None
        self._token = secrets.token_hex(16)
        self._conn = connect_with_retry(self.board, connect_timeout_s, self.reconnect_timeout_s, self.retries.append)
        self._end_unended()
        try:
            transport = self._conn.client.get_transport()
            self._chan = transport.open_session(timeout=connect_timeout_s)
            self._chan.exec_command(wrap_command(self._command, self._token))
        except Exception as e:  # paramiko raises a zoo of types here
            self._close_quietly()  # nothing started that could be asked to stop
            raise BoardUnreachable(f"board {self.board.name}: could not start agent: {e}") from None
        self._rfile = self._chan.makefile("r")
        return self

    def _read_pid(self, timeout_s: float) -> bool:
        """Read the pid line the wrapped command prints before the agent's first byte into
        ``agent_pid``. Lines before it (a login shell's rc file writing to stdout) are skipped,
        at most 100. Returns False at EOF (the command ended first).

        Raises:
            socket.timeout: no line within ``timeout_s`` (s).
            ValueError: 100 lines and no pid line.
        """
        self._chan.settimeout(timeout_s)
        for _ in range(100):
            line = self._rfile.readline()
            if not line:
                return False
            mark, _, pid = line.strip().partition(" ")
            if mark == PID_MARK and pid.isdigit():
                self.agent_pid = int(pid)
                return True
        raise ValueError(f"no '{PID_MARK}' line before the agent's replies "
                         "(does a login shell rc file print on stdout?)")

    def close(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Ask the agent to shut down, wait up to ``grace_s`` (s) for it to exit, end it by pid if
        it does not (``agent_end`` says how), and close the channel and connection."""
        try:
            if self._chan is not None and not self._chan.closed:
                try:
                    self._send({"id": 0, "op": "shutdown", "args": {}})
                    self._chan.shutdown_write()
                except Exception:
                    pass
                if self._chan.status_event.wait(grace_s):
                    self.agent_end = "exited"
                else:
                    self.agent_end = self._kill_agent()
        finally:  # a second Ctrl-C while waiting still leaves nothing open
            self._close_quietly()
            self._remember_if_unended()

    def _remember_if_unended(self) -> None:
        # "survived" too: a process stuck in a driver call may go later, or need the next try
        if (self.agent_end.startswith("unknown") or self.agent_end == "survived") and self.agent_pid is not None:
            with _UNENDED_LOCK:
                _UNENDED.setdefault(_board_key(self.board), []).append((self.agent_pid, self._token))

    def _end_unended(self) -> None:
        """End the agents earlier sessions of this process could not (see ``_UNENDED``) over the
        fresh connection; those still out of reach stay listed. Sets ``ended_stale`` to
        [(pid, outcome)]."""
        with _UNENDED_LOCK:
            stale = _UNENDED.pop(_board_key(self.board), [])
        self.ended_stale = [(pid, self._kill_pid(pid, token)) for pid, token in stale]
        left = [(pid, tok) for (pid, tok), (_, end) in zip(stale, self.ended_stale)
                if end.startswith("unknown") or end == "survived"]
        if left:
            with _UNENDED_LOCK:
                _UNENDED.setdefault(_board_key(self.board), []).extend(left)

    def _close_quietly(self) -> None:
        """Close the channel and connection without talking to the agent."""
        for closable in (self._chan, self._conn):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    pass
        self._chan = self._conn = self._rfile = None

    def __enter__(self) -> "AgentSession":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._chan is not None and not self._chan.closed and not self._chan.exit_status_ready()

    # -- requests --------------------------------------------------------------------------
    def _send(self, msg: dict) -> None:
        self._chan.sendall((json.dumps(msg) + "\n").encode())

    def _stderr_tail(self, n: int = 2000) -> str:
        try:
            if self._chan is not None and self._chan.recv_stderr_ready():
                return self._chan.recv_stderr(n).decode(errors="replace").strip()
        except Exception:
            pass
        return ""

    def request(self, op: str, args: dict | None = None, timeout_s: float | None = None) -> Reply:
        """Send one request and wait for its reply. When the SSH link drops (:class:`LinkLost`) and
        the session has a reconnect bound, reconnect within it, start a new agent and send the
        request once more (a ``reconnect`` in ``retries``); the ops are answered from the request
        alone (``run`` loads its pipeline if needed), so a resend asks the same question.

        Raises:
            BoardLost: the channel closed, the agent exited, or no reply within the timeout;
                ``board lost: ...`` (and ``board_lost`` set) when the reconnect failed.
            AgentError: the agent replied ``ok: false``.
        """
        try:
            return self._request_once(op, args, timeout_s)
        except LinkLost as e:
            if self.reconnect_timeout_s <= 0:
                raise
            self._reconnect(e)
        return self._request_once(op, args, timeout_s)

    def _reconnect(self, lost: BoardLost) -> None:
        """Open the session again after ``lost`` within ``reconnect_timeout_s``.

        Raises:
            BoardLost: ``board lost: NAME (why; reconnect failed: ...)``, also kept in board_lost.
        """
        t0 = time.monotonic()
        try:
            self.open(connect_timeout_s=min(15.0, max(self.reconnect_timeout_s, RECONNECT_MIN_ATTEMPT_S)))
        except BoardUnreachable as e:
            self.board_lost = self.lost_reason = f"board lost: {self.board.name} ({lost}; reconnect failed: {e})"
            raise BoardLost(self.board_lost) from None
        self.retries.append(RetryEvent("reconnect", time.time(), str(lost), time.monotonic() - t0))

    def take_retries(self) -> list[RetryEvent]:
        """The retries since the last call: what the result of the test now ending records."""
        new = self.retries[self._retries_taken:]
        self._retries_taken = len(self.retries)
        return new

    def _link_lost(self) -> bool:
        """True when the SSH connection itself is gone (board rebooted, sshd gone), not only the
        agent. paramiko's transport thread closes its channels before it marks itself inactive,
        so a channel closed without the server's EOF waits for that thread briefly (0.5 s)."""
        t = self._conn.client.get_transport() if self._conn is not None else None
        if t is None:
            return True
        if t.is_active() and self._chan is not None and not self._chan.eof_received:
            t.join(0.5)
        return not t.is_active()

    def _request_once(self, op: str, args: dict | None, timeout_s: float | None) -> Reply:
        if self._chan is None:
            self.open()
        rid = self._next_id
        self._next_id += 1
        timeout = timeout_s or self.request_timeout_s
        t0 = time.perf_counter()
        try:
            self._chan.settimeout(timeout)
            self._send({"id": rid, "op": op, "args": args or {}})
            if self.agent_pid is None:
                self._read_pid(timeout)
            line = self._rfile.readline()
        except (socket.timeout, TimeoutError):
            raise self._lost(f"board {self.board.name}: no reply to '{op}' within {timeout:g} s "
                             "(agent hung or link down); session closed") from None
        except (OSError, EOFError) as e:
            raise self._lost(f"board {self.board.name}: connection lost during '{op}': {e}",
                             link=self._link_lost()) from None
        except ValueError as e:  # no pid line: something else speaks on the channel
            raise self._lost(f"board {self.board.name}: {e}") from None
        rtt_ms = (time.perf_counter() - t0) * 1000.0
        if not line:
            if self._link_lost():
                raise self._lost(f"board {self.board.name}: SSH connection lost during '{op}'", link=True)
            err = self._stderr_tail()
            code = self._chan.exit_status if self._chan is not None and self._chan.exit_status_ready() else None
            raise self._lost(f"board {self.board.name}: agent closed the session during '{op}'"
                             + (f" (agent exit status {code})" if code is not None else "")
                             + (f"; agent stderr: {err}" if err else ""))
        msg = protocol.decode_reply(line)
        if msg.get("id") != rid:
            raise self._lost(f"board {self.board.name}: reply id {msg.get('id')} != request id {rid}")
        if not msg.get("ok"):
            e = msg.get("error") or {}
            raise AgentError(e.get("type", "Error"), e.get("message", "?"), e.get("fix", ""))
        return Reply(result=msg.get("result") or {}, timings=msg.get("timings") or {}, rtt_ms=rtt_ms)

    def _lost(self, reason: str, link: bool = False) -> BoardLost:
        """Give the session up: end its agent if it may still run, close, remember why, and return
        the BoardLost to raise (its message says what became of the agent; a LinkLost when
        ``link``: the SSH connection itself is gone)."""
        chan = self._chan
        try:
            if link:
                # paramiko marks a channel of a dead connection closed, which looks like an exit; the
                # agent may run on (its sshd gone, not the board): the next open() ends it
                self.agent_end = "unknown: the SSH connection was lost"
            # After EOF the exit status follows within milliseconds when the agent exited (killed,
            # crashed): wait for it briefly rather than asking the board.
            elif chan is not None and (chan.exit_status_ready()
                                     or (chan.eof_received and chan.status_event.wait(0.5))):
                self.agent_end = "exited"
            else:
                self.agent_end = self._kill_agent()
        finally:
            self._close_quietly()
            self._remember_if_unended()
        if self.agent_end.startswith("unknown"):
            reason += (f"; agent pid {self.agent_pid} may still run on the board "
                       f"({self.agent_end.removeprefix('unknown: ')})")
        elif self.agent_end in ("terminated", "killed"):
            reason += f"; agent pid {self.agent_pid} {self.agent_end}"
        elif self.agent_end == "survived":
            reason += (f"; agent pid {self.agent_pid} may still run on the board (still there 1 s "
                       "after SIGKILL: stuck in the kernel?)")
        self.lost_reason = reason
        return LinkLost(reason) if link else BoardLost(reason)

    def _kill_agent(self, budget_s: float | None = None) -> str:
        """End this session's agent by pid (:func:`kill_command`) over a new exec channel on the
        session's connection, or on a new connection if that one is dead. Never takes longer than
        ``budget_s`` (s, default ``KILL_BUDGET_S``): paramiko's exec_command has no timeout of its
        own, so the work runs in a thread and is abandoned (its connection closed) when the budget
        is spent.

        Returns:
            "gone", "terminated", "killed", "survived", or "unknown: <why>" when the board
            could not be asked.
        """
        budget_s = KILL_BUDGET_S if budget_s is None else budget_s
        if self.agent_pid is None and self._chan is not None and not self._chan.closed:
            try:  # the shell prints it at once: it is there unless the link died first
                self._read_pid(min(1.0, budget_s))
            except Exception:
                pass
        if self.agent_pid is None:
            return "unknown: the agent's pid was never read"
        return self._kill_pid(self.agent_pid, self._token, budget_s)

    def _kill_pid(self, pid: int, token: str, budget_s: float | None = None) -> str:
        """Run :func:`kill_command` for (``pid``, ``token``) on the board within ``budget_s`` (s);
        returns as :meth:`_kill_agent`."""
        budget_s = KILL_BUDGET_S if budget_s is None else budget_s
        cmd = kill_command(pid, token)
        own: list = []  # a connection opened for the kill, closed here whatever happens
        out: dict = {}

        def work():
            try:
                transport = self._conn.client.get_transport() if self._conn is not None else None
                if transport is None or not transport.is_active():
                    own.append(connect(self.board, timeout_s=budget_s / 2))
                    transport = own[0].client.get_transport()
                # a live sshd opens a channel in milliseconds; a dead link would use the budget up
                chan = transport.open_session(timeout=min(2.0, budget_s / 2))
                chan.settimeout(budget_s)
                chan.exec_command(cmd)
                data = b""
                while True:
                    chunk = chan.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                chan.close()
                out["line"] = data.decode(errors="replace").strip()
            except Exception as e:  # unreachable, auth, timeout, channel refused: all "unknown"
                out["error"] = f"{type(e).__name__}: {e}"
            finally:
                for conn in own:
                    conn.close()

        t = threading.Thread(target=work, name=f"fleet-kill-{self.board.name}", daemon=True)
        t.start()
        t.join(budget_s)
        for conn in own:  # the thread closes it too when it ends; closing twice is harmless
            conn.close()
        if t.is_alive():
            return f"unknown: the board did not answer the kill within {budget_s:g} s"
        if "error" in out:
            return f"unknown: kill failed: {out['error']}"
        mark, _, what = out["line"].rpartition("\n")[2].partition(" ")
        if mark != KILL_MARK or what not in ("gone", "terminated", "killed", "survived"):
            return f"unknown: unexpected kill output {out['line'][-200:]!r}"
        return what

    def fetch(self, rel_path: str, dest: Path, sha256: str | None = None) -> Path:
        """Copy a file the agent wrote (``rel_path``, relative to the board's fleet_root) to
        ``dest`` on the controller over SFTP on the session's SSH connection.

        Written to ``dest.part`` and renamed, so ``dest`` is whole or absent; with ``sha256`` (hex,
        as the agent reported it) the copy is checked before the rename.

        Raises:
            ValueError: ``rel_path`` is absolute or leaves fleet_root (``..``).
            BoardLost: no open session, or the transfer failed.
            InfrastructureError: the copy's sha256 differs from ``sha256``.
        """
        import hashlib
        from pathlib import PurePosixPath

        rel = PurePosixPath(rel_path)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{rel_path!r}: only paths inside the board's fleet_root can be fetched")
        if self._conn is None:
            raise BoardLost(f"board {self.board.name}: no open session to fetch {rel_path}")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        try:
            self._conn.get(str(PurePosixPath(self.board.fleet_root) / rel), local=str(part))
        except (OSError, EOFError) as e:
            part.unlink(missing_ok=True)
            raise BoardLost(f"board {self.board.name}: fetching {rel_path} failed: {e}") from None
        if sha256 and hashlib.sha256(part.read_bytes()).hexdigest() != sha256:
            part.unlink(missing_ok=True)
            raise InfrastructureError(f"board {self.board.name}: {rel_path} arrived with another sha256 "
                                      f"than the agent reported")
        part.replace(dest)
        return dest

    def info(self) -> dict:
        """The agent's ``info`` (board, backends, models with sha256; docs/contracts.md §4)."""
        return self.request("info").result

    def run(self, pipeline: str, input: str, options: dict | None = None,
            timeout_s: float | None = None) -> dict:
        """Run ``pipeline`` once on ``input`` (a path relative to fleet_root). Returns its result
        dict with ``rtt_ms`` added (controller round trip, ms)."""
        rep = self.request("run", {"pipeline": pipeline, "input": input, "options": options or {}},
                           timeout_s=timeout_s)
        out = dict(rep.result)
        out["rtt_ms"] = rep.rtt_ms
        return out
