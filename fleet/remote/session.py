"""One long-lived agent session per board over one SSH channel.

The controller starts ``fleet-agent serve`` on the board (fabric/paramiko, host key pinned by the
inventory's known_hosts, never auto-added) and speaks the JSON-lines protocol of
``device_agent.protocol`` over the channel's stdin/stdout. Models stay loaded between requests, so a
test's latency is the pipeline's and not the SSH handshake's.
"""

from __future__ import annotations

import json
import socket
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


def connect(board: Board, timeout_s: float = 15.0):
    """Open a fabric Connection to ``board`` with strict host key checking.

    Returns:
        fabric.Connection, already open.

    Raises:
        BoardUnreachable: with the board name, address and the underlying reason.
    """
    import paramiko
    from fabric import Connection

    kwargs = {"look_for_keys": not board.key_file, "allow_agent": not board.key_file,
              "banner_timeout": timeout_s, "auth_timeout": timeout_s}
    if board.key_file:
        kwargs["key_filename"] = board.key_file
    conn = Connection(board.host, user=board.user, port=board.port,
                      connect_timeout=timeout_s, connect_kwargs=kwargs)
    # fabric defaults to AutoAddPolicy; a HIL lab must never trust an unknown host key.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    known = Path(board.known_hosts).expanduser() if board.known_hosts else Path.home() / ".ssh" / "known_hosts"
    if known.exists():
        conn.client.load_host_keys(str(known))
    try:
        conn.open()
    except paramiko.BadHostKeyException as e:
        raise BoardUnreachable(
            f"board {board.name} ({board.host}:{board.port}): host key does not match {known}: {e}"
        ) from None
    except paramiko.SSHException as e:
        raise BoardUnreachable(f"board {board.name} ({board.host}:{board.port}): SSH failed: {e} "
                               f"(known_hosts {known})") from None
    except (OSError, EOFError) as e:
        raise BoardUnreachable(f"board {board.name} ({board.host}:{board.port}) unreachable: {e}") from None
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
        command: override the remote command (default ``board.agent_command``).
    """

    def __init__(self, board: Board, request_timeout_s: float = 120.0, command: str | None = None):
        self.board = board
        self.request_timeout_s = request_timeout_s
        self._command = command or board.agent_command
        self._conn = None
        self._chan = None
        self._rfile = None
        self._next_id = 1
        #: why the session died (the BoardLost message), "" while it lives
        self.lost_reason = ""

    # -- lifecycle -------------------------------------------------------------------------
    def open(self, connect_timeout_s: float = 15.0) -> "AgentSession":
        """Connect and start the agent. Raises BoardUnreachable."""
        self.lost_reason = ""
        self._conn = connect(self.board, timeout_s=connect_timeout_s)
        try:
            transport = self._conn.client.get_transport()
            self._chan = transport.open_session()
            self._chan.exec_command(self._command)
        except Exception as e:  # paramiko raises a zoo of types here
            self.close()
            raise BoardUnreachable(f"board {self.board.name}: could not start agent: {e}") from None
        self._rfile = self._chan.makefile("r")
        return self

    def close(self) -> None:
        """Ask the agent to shut down (best effort) and close the channel and connection."""
        if self._chan is not None and not self._chan.closed:
            try:
                self._send({"id": 0, "op": "shutdown", "args": {}})
                self._chan.shutdown_write()
            except Exception:
                pass
            self._chan.close()
        if self._conn is not None:
            self._conn.close()
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
        """Send one request and wait for its reply.

        Raises:
            BoardLost: the channel closed, the agent exited, or no reply within the timeout.
            AgentError: the agent replied ``ok: false``.
        """
        if self._chan is None:
            self.open()
        rid = self._next_id
        self._next_id += 1
        timeout = timeout_s or self.request_timeout_s
        t0 = time.perf_counter()
        try:
            self._chan.settimeout(timeout)
            self._send({"id": rid, "op": op, "args": args or {}})
            line = self._rfile.readline()
        except (socket.timeout, TimeoutError):
            raise self._lost(f"board {self.board.name}: no reply to '{op}' within {timeout:g} s "
                             "(agent hung or link down); session closed") from None
        except (OSError, EOFError) as e:
            raise self._lost(f"board {self.board.name}: connection lost during '{op}': {e}") from None
        rtt_ms = (time.perf_counter() - t0) * 1000.0
        if not line:
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

    def _lost(self, reason: str) -> BoardLost:
        """Close the session, remember why, and return the BoardLost to raise."""
        self.close()
        self.lost_reason = reason
        return BoardLost(reason)

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
