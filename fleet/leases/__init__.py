"""Board leases: two `fleet test` runs never use one board at the same time.

A lease is a row per board (owner, run, expiry) in its own ``leases`` table inside the results
store (SQLite in WAL mode, so every controller process sharing that file sees the same leases; or
the PostgreSQL server several controllers share, see fleet.results.dburl).
``fleet test`` takes a lease on each of its boards before the first agent session, renews them
from a heartbeat thread while the run lives, and releases them when the run ends (however it
ends). A lease whose expiry has passed -- its holder died and stopped renewing -- is taken over;
so is one held by a process on this host that no longer exists.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    func,
    select,
    update,
)

from fleet.results.store import KEY, Store

LEASES = Table(
    "leases", MetaData(),
    Column("board", KEY, primary_key=True),
    Column("owner", Text, nullable=False),            # user@host pid N
    Column("run_id", KEY, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired", Float, nullable=False),        # s since the epoch
    Column("renewed", Float, nullable=False),
    Column("expires", Float, nullable=False),
)
#: pg_advisory_xact_lock key serialising lease check-then-take among controllers (SQLite: BEGIN IMMEDIATE).
LEASE_LOCK_KEY = 0x666C65656C  # any fixed int64

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
    """The ``leases`` table in the results store at ``path``: a SQLite file (created if missing)
    or a SQLAlchemy URL (a PostgreSQL server shared by several controllers), as :class:`Store`.

    Raises:
        FleetError: as :class:`fleet.results.store.Store` (bad URL, unreachable server...).
    """

    def __init__(self, path: str | Path):
        self._store = Store(path)
        self.path = self._store.path
        self._lock = threading.Lock()
        with self._writer() as conn:
            LEASES.create(conn, checkfirst=True)

    def _writer(self):
        """A write transaction that holds the lease lock until it ends."""
        return _LeaseTxn(self._store)

    def close(self) -> None:
        self._store.close()

    @staticmethod
    def _row(conn, board: str) -> Lease | None:
        row = conn.execute(select(LEASES).where(LEASES.c.board == board)).mappings().first()
        return Lease(**dict(row)) if row else None

    def get(self, board: str) -> Lease | None:
        with self._lock, self._store.engine.connect() as conn:
            return self._row(conn, board)

    def list(self) -> list[Lease]:
        with self._lock, self._store.engine.connect() as conn:
            return [Lease(**dict(r)) for r in conn.execute(select(LEASES).order_by(LEASES.c.board)).mappings()]

    def acquire(self, board: str, run_id: str, owner: str | None = None, ttl_s: float = DEFAULT_TTL_S,
                pid: int | None = None) -> tuple[bool, Lease]:
        """Take the board's lease for ``run_id``, atomically.

        Returns:
            (True, our lease) when it was free, expired, its holder is dead, or already ours;
            (False, the holder's lease) otherwise.
        """
        pid = pid or os.getpid()
        owner = owner or default_owner(pid)
        with self._lock, self._writer() as conn:
            held = self._row(conn, board)
            if held is not None and held.run_id != run_id and not held.expired and not held.holder_dead():
                return False, held
            now = time.time()
            lease = Lease(board, owner, run_id, socket.gethostname(), pid, now, now, now + ttl_s)
            conn.execute(delete(LEASES).where(LEASES.c.board == board))
            conn.execute(LEASES.insert().values(**asdict(lease)))
            return True, lease

    def renew(self, run_id: str, ttl_s: float = DEFAULT_TTL_S) -> int:
        """Push the expiry of every lease held by ``run_id`` to now + ttl; returns how many."""
        now = time.time()
        with self._lock, self._store._writer.begin() as conn:
            return conn.execute(update(LEASES).where(LEASES.c.run_id == run_id)
                                .values(renewed=now, expires=now + ttl_s)).rowcount

    def release(self, board: str | None = None, run_id: str | None = None) -> int:
        """Free one board's lease (any holder), or every lease of ``run_id``; returns how many."""
        if board is None and run_id is None:
            raise ValueError("release needs a board or a run id")
        stmt = delete(LEASES)
        if board is not None:
            stmt = stmt.where(LEASES.c.board == board)
        if run_id is not None:
            stmt = stmt.where(LEASES.c.run_id == run_id)
        with self._lock, self._store._writer.begin() as conn:
            return conn.execute(stmt).rowcount


class _LeaseTxn:
    """``with``: a write transaction (SQLite: BEGIN IMMEDIATE, the database's write lock) that on
    PostgreSQL first takes a transaction-scoped advisory lock, so two controllers never both see a
    board free and both take it."""

    def __init__(self, store: Store):
        self._ctx = store._writer.begin()
        self._pg = store.target.backend == "postgresql"

    def __enter__(self):
        conn = self._ctx.__enter__()
        if self._pg:
            conn.execute(select(func.pg_advisory_xact_lock(LEASE_LOCK_KEY)))
        return conn

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


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
