"""Board leases: two `fleet test` runs never use one board at the same time.

A lease is a row per board (owner, run, expiry) in its own ``leases`` table inside the results
store's SQLite file (WAL, so every controller process sharing that file sees the same leases).
``fleet test`` takes a lease on each of its boards before the first agent session, renews them
from a heartbeat thread while the run lives, and releases them when the run ends (however it
ends). A lease whose expiry has passed -- its holder died and stopped renewing -- is taken over;
so is one held by a process on this host that no longer exists.
"""

from __future__ import annotations

import getpass
import os
import socket
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    board TEXT PRIMARY KEY,
    owner TEXT NOT NULL,             -- user@host pid N
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired REAL NOT NULL,
    renewed REAL NOT NULL,
    expires REAL NOT NULL
);
"""

DEFAULT_TTL_S = 60.0


def default_owner(pid: int | None = None) -> str:
    """``user@host pid N`` for this process."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {pid or os.getpid()}"


@dataclass
class Lease:
    board: str
    owner: str
    run_id: str
    host: str
    pid: int
    acquired: float
    renewed: float
    expires: float

    @property
    def expired(self) -> bool:
        return self.expires <= time.time()

    def holder_dead(self) -> bool:
        """True when the holder ran on this host and its process is gone."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    @property
    def until(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.expires))

    def describe(self) -> str:
        return f"leased by {self.owner} (run {self.run_id}) until {self.until}"

    def to_dict(self) -> dict:
        return {**asdict(self), "expired": self.expired, "until": self.until}


class LeaseStore:
    """The ``leases`` table in the SQLite file at ``path`` (created if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=60000")
        self.db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def _row(self, board: str) -> Lease | None:
        row = self.db.execute("SELECT * FROM leases WHERE board=?", (board,)).fetchone()
        return Lease(**dict(row)) if row else None

    def get(self, board: str) -> Lease | None:
        with self._lock:
            return self._row(board)

    def list(self) -> list[Lease]:
        with self._lock:
            return [Lease(**dict(r)) for r in self.db.execute("SELECT * FROM leases ORDER BY board")]

    def acquire(self, board: str, run_id: str, owner: str | None = None, ttl_s: float = DEFAULT_TTL_S,
                pid: int | None = None) -> tuple[bool, Lease]:
        """Take the board's lease for ``run_id``, atomically.

        Returns:
            (True, our lease) when it was free, expired, its holder is dead, or already ours;
            (False, the holder's lease) otherwise.
        """
        pid = pid or os.getpid()
        owner = owner or default_owner(pid)
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                held = self._row(board)
                if held is not None and held.run_id != run_id and not held.expired and not held.holder_dead():
                    cur.execute("COMMIT")
                    return False, held
                now = time.time()
                lease = Lease(board, owner, run_id, socket.gethostname(), pid, now, now, now + ttl_s)
                cur.execute("INSERT OR REPLACE INTO leases(board, owner, run_id, host, pid, acquired, renewed, expires) "
                            "VALUES (?,?,?,?,?,?,?,?)", (lease.board, lease.owner, lease.run_id, lease.host,
                                                         lease.pid, lease.acquired, lease.renewed, lease.expires))
                cur.execute("COMMIT")
                return True, lease
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def renew(self, run_id: str, ttl_s: float = DEFAULT_TTL_S) -> int:
        """Push the expiry of every lease held by ``run_id`` to now + ttl; returns how many."""
        now = time.time()
        with self._lock:
            return self.db.execute("UPDATE leases SET renewed=?, expires=? WHERE run_id=?",
                                   (now, now + ttl_s, run_id)).rowcount

    def release(self, board: str | None = None, run_id: str | None = None) -> int:
        """Free one board's lease (any holder), or every lease of ``run_id``; returns how many."""
        with self._lock:
            if board is not None and run_id is not None:
                return self.db.execute("DELETE FROM leases WHERE board=? AND run_id=?", (board, run_id)).rowcount
            if board is not None:
                return self.db.execute("DELETE FROM leases WHERE board=?", (board,)).rowcount
            if run_id is not None:
                return self.db.execute("DELETE FROM leases WHERE run_id=?", (run_id,)).rowcount
        raise ValueError("release needs a board or a run id")


class RunLeases:
    """The leases of one run: acquire for its boards (waiting up to ``wait_s``), renew from a
    heartbeat thread every ttl/3, release all on ``release()``.

    Attributes:
        held: boards leased by this run.
        refused: board -> "leased by <owner> (run <id>) until <time>" for boards another live run holds.
    """

    def __init__(self, path: str | Path, run_id: str, ttl_s: float = DEFAULT_TTL_S, owner: str | None = None):
        self.store = LeaseStore(path)
        self.run_id = run_id
        self.ttl_s = float(ttl_s)
        self.owner = owner or default_owner()
        self.held: list[str] = []
        self.refused: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, boards: list[str], wait_s: float = 0.0, poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + max(0.0, wait_s)
        pending = list(boards)
        while True:
            still = []
            for b in pending:
                ok, lease = self.store.acquire(b, self.run_id, self.owner, self.ttl_s)
                if ok:
                    self.held.append(b)
                    self.refused.pop(b, None)
                else:
                    still.append(b)
                    self.refused[b] = lease.describe()
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            if not self._thread and self.held:
                self.start_heartbeat()  # keep what we hold while waiting for the rest
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        if self.held:
            self.start_heartbeat()

    def start_heartbeat(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._beat, name="fleet-lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(0.2, self.ttl_s / 3.0)):
            try:
                self.store.renew(self.run_id, self.ttl_s)
            except Exception:  # a busy database must not kill the run; the next beat retries
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.store.release(run_id=self.run_id)
        finally:
            self.store.close()
