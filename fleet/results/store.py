"""The results store: every run, board and test result, written as soon as it is known.

Where it lives (:mod:`fleet.results.dburl`): a SQLite file by default (WAL mode, so several
pytest-xdist workers, one process each, write at once), or a shared PostgreSQL server named by a
SQLAlchemy URL (``postgresql+psycopg://fleet@db.lab/fleet``) for a lab with several controllers.
Both go through SQLAlchemy 2.0 Core with one schema (:data:`METADATA`). Each write is its own
short transaction, so a crash loses nothing already recorded and concurrent writers lose no row.
JUnit XML, ``fleet results``, the metrics JSON, Prometheus text, ``fleet report`` and the dashboard
are derived from it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError

from fleet.errors import EXIT_INFRA, FleetError
from fleet.results.dburl import DRIVER_FIX, DbTarget, parse_target, redact, redact_argv

# Keys compare and sort byte-wise on both backends: SQLite's default BINARY collation, and "C" on
# PostgreSQL (whose default collation follows the server's locale), so listings come out in the
# same order from either store.
KEY = Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
# 64-bit row ids on PostgreSQL; on SQLite it must be INTEGER to be the rowid alias (SQLAlchemy 2.0
# "SQLite auto incrementing behavior").
ROW_ID = BigInteger().with_variant(Integer(), "sqlite")

METADATA = MetaData()

RUNS = Table(
    "runs", METADATA,
    Column("id", KEY, primary_key=True),
    Column("suite", KEY, nullable=False),
    Column("started", Float, nullable=False),        # s since the epoch
    Column("finished", Float),
    Column("status", Text, nullable=False),          # running | passed | failed | error | interrupted
    Column("inventory", Text),
    Column("controller", Text),                      # host name of the controller that ran it
    Column("argv", Text),                            # JSON list, database passwords as ***
)
BOARDS = Table(
    "boards", METADATA,
    Column("run_id", KEY, primary_key=True),
    Column("name", KEY, primary_key=True),
    Column("board", Text), Column("accelerator", Text), Column("emulated", Integer),
    Column("info_json", Text),                       # the agent's `info` reply (backends, models with sha256)
)
RESULTS = Table(
    "results", METADATA,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("run_id", KEY, nullable=False),
    Column("board", KEY, nullable=False),
    # the result's key on its board: the pytest test name with its parameters, the board's own
    # parameter left out ("test_retrieval_quality[cisi]"); see Result.test
    Column("test", KEY, nullable=False),
    Column("outcome", Text, nullable=False),         # passed | failed | error (infrastructure) | skipped | not-run
    Column("message", Text),
    Column("duration_s", Float),
    Column("emulated", Integer),
    Column("backends_json", Text),                   # stage -> backend that really ran
    Column("models_json", Text),                     # artifact -> sha256
    Column("outputs_json", Text),                    # per-item outputs (e.g. per clip ref/hyp/ms)
    Column("finished", Float, nullable=False),
    # the pytest node id as run, relative to the suite folder, board included
    # ("test_rag_embedder.py::test_retrieval_quality[pi5-a-cisi]"); NULL in rows written before
    # it existed (schema v2, see Store._migrate_results_v2)
    Column("nodeid", Text),
    Index("results_run", "run_id"),
    sqlite_autoincrement=True,
)
METRICS = Table(
    "metrics", METADATA,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),  # keeps the order they were recorded in
    Column("result_id", ROW_ID, nullable=False),
    Column("name", KEY, nullable=False),
    Column("value", Float),
    Column("unit", Text),
    Column("direction", Text),                       # lower | higher (which way is better)
    Index("metrics_result", "result_id"),
)
TELEMETRY = Table(
    "telemetry", METADATA,
    Column("result_id", ROW_ID, primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),  # -1: the aggregate; 0..n-1: per request
    Column("label", Text),                           # e.g. the clip id ('aggregate' for seq -1)
    Column("summary_json", Text),                    # device_agent.telemetry.summary, or for seq -1
                                                     # {"summary": merged, "measurement": verdict, latency, reasons}
    Column("trace_json", Text),                      # device_agent.protocol `run` telemetry; NULL for -1
)

#: pg_advisory_xact_lock key that serialises schema creation among controllers (any fixed int64).
SCHEMA_LOCK_KEY = 0x666C656574  # "fleet"
#: seconds to wait for a PostgreSQL server to answer before giving up (libpq connect_timeout).
PG_CONNECT_TIMEOUT_S = 10

@dataclass
class Metric:
    """A measured value with its unit and which direction is better ("lower" | "higher")."""

    name: str
    value: float
    unit: str = ""
    direction: str = "lower"


@dataclass
class Result:
    """One test on one board: the record a dashboard or CI job reads.

    ``test`` is the result's key on its board everywhere (the store, JUnit, ``--resume``, the
    regression baselines, Prometheus, ``fleet results``, the report and the dashboard): the pytest
    test name with its parameters, the board's parameter left out, e.g.
    ``test_retrieval_quality[cisi]`` (:func:`fleet.runner.plugin.result_key`); a test without other
    parameters is its bare name (``test_wer``). Stores written before parameters were kept hold
    the bare function name for every variant (their rows are kept as they were). ``nodeid`` is the
    full pytest node id (module, board parameter included; "" when unknown). ``duration_s`` is
    setup + call + teardown (s): the measurements of a suite run in its fixtures.
    """

    run_id: str
    board: str
    test: str
    outcome: str
    message: str = ""
    duration_s: float = 0.0
    emulated: bool | None = None
    backends: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    outputs: list | dict = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    finished: float = 0.0
    id: int | None = None
    #: per-request traces: [{"label", "summary", "trace"}] (written with the result)
    telemetry: list = field(default_factory=list)
    #: the result's aggregate: {"summary": merged summary, "measurement": {...}} or None
    telemetry_summary: dict | None = None
    nodeid: str = ""

    @property
    def module(self) -> str:
        """The test's file relative to the suite folder (from ``nodeid``; "" when unknown)."""
        return self.nodeid.split("::", 1)[0] if "::" in self.nodeid else ""


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 4 hex digits, e.g. 20261121-233500-ab12."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:4]


class Store:
    """The results store. One instance per process; safe with concurrent writer processes (and, on
    PostgreSQL, concurrent controllers).

    Args:
        path: a SQLite file (created with its parent folder if missing), or a SQLAlchemy URL:
            ``sqlite:///PATH`` or ``postgresql+psycopg://USER@HOST[:PORT]/DB``.
        read_only: open an existing store without creating anything (the dashboard).

    Attributes:
        target: the parsed location (:class:`fleet.results.dburl.DbTarget`).
        path: the SQLite file (``Path``), or for a server the URL with its password as ``***``:
            what messages name.
        engine: the SQLAlchemy engine.

    Raises:
        FleetError: malformed URL, missing driver, unreachable server, unusable file (exit 3 for
            the infrastructure ones); FileNotFoundError: ``read_only`` and no SQLite file there.
    """

    def __init__(self, path: str | Path, read_only: bool = False):
        self.target: DbTarget = parse_target(path)
        self.read_only = read_only
        self.path = self.target.path if self.target.path is not None else self.target.display
        self._raw: sqlite3.Connection | None = None
        #: columns of RESULTS the store has: all of them, except in a read-only store of an older
        #: schema (which cannot be migrated; its rows are read without the missing columns)
        self._result_cols = list(RESULTS.c)
        if self.target.backend == "sqlite":
            if read_only and not self.target.path.exists():
                raise FileNotFoundError(f"no results store at {self.target.path}")
            self.engine = self._sqlite_engine()
        else:
            self.engine = self._server_engine()
        # writes take SQLite's write lock at BEGIN (see _sqlite_engine); no effect on PostgreSQL
        self._writer = self.engine.execution_options(fleet_begin="IMMEDIATE")
        try:
            if read_only:
                with self.engine.connect() as conn:
                    insp = inspect(conn)
                    if not insp.has_table("runs"):
                        raise FleetError(f"no results store at {self.target.display} (it has no runs table)",
                                         "run `fleet test` with this --db first")
                    have = {c["name"] for c in insp.get_columns("results")}
                    self._result_cols = [c for c in RESULTS.c if c.name in have]
            else:
                self._create_schema()
        except (DBAPIError, sqlite3.Error) as e:
            self.engine.dispose()
            raise self._unreachable(e) from None
        except BaseException:
            self.engine.dispose()
            raise

    # -- connecting --------------------------------------------------------------------------
    def _sqlite_engine(self):
        """A pysqlite engine in WAL mode whose write transactions start with BEGIN IMMEDIATE: two
        writers then queue on the busy timeout instead of deadlocking on a lock upgrade. (Python's
        sqlite3 module would BEGIN on its own; the recipe in SQLAlchemy 2.0 "Serializable isolation
        / Savepoints / Transactional DDL" turns that off and emits BEGIN from SQLAlchemy's event.)"""
        from sqlalchemy.engine import URL

        path = self.target.path
        if self.read_only:
            import urllib.parse

            url = URL.create("sqlite", database="file:" + urllib.parse.quote(str(path.resolve())),
                             query={"mode": "ro", "uri": "true"})
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            url = URL.create("sqlite", database=str(path))
        engine = create_engine(url, connect_args={"timeout": 60.0, "check_same_thread": False})
        read_only = self.read_only

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            if not read_only:
                dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=60000")

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get("fleet_begin", "DEFERRED"))

        return engine

    def _server_engine(self):
        url = self.target.url
        args: dict = {"application_name": "fleet"}
        if "connect_timeout" not in url.query:
            args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        if self.read_only:
            args["options"] = "-c default_transaction_read_only=on"
        try:
            return create_engine(url, connect_args=args, pool_pre_ping=True)
        except ModuleNotFoundError as e:
            raise FleetError(f"no driver for the results store {self.target.display}: {e}", DRIVER_FIX) from None

    def _unreachable(self, e: Exception) -> FleetError:
        reason = redact(str(getattr(e, "orig", None) or e)).strip().splitlines()
        password = self.target.url.password
        msg = " ".join(" ".join(reason).split())[:400]
        if password:
            msg = msg.replace(str(password), "***")
        if self.target.backend == "sqlite":
            return FleetError(f"cannot use the results store {self.target.display}: {msg}",
                              "check the file and its folder are writable, or give another --db", EXIT_INFRA)
        return FleetError(f"cannot use the results store {self.target.display}: {msg}",
                          "check that PostgreSQL runs there and accepts this user (host, port, database name; "
                          "the password goes in PGPASSWORD or ~/.pgpass), or give another --db", EXIT_INFRA)

    def _create_schema(self) -> None:
        """Create the tables if missing: idempotent, and safe when several processes or
        controllers do it at once (SQLite: under the write lock; PostgreSQL: DDL is transactional,
        and an advisory lock makes concurrent creators wait for each other)."""
        with self._writer.begin() as conn:
            if self.target.backend == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
            self._migrate_metrics_v1(conn)
            self._migrate_results_v2(conn)
            METADATA.create_all(conn, checkfirst=True)

    @staticmethod
    def _migrate_metrics_v1(conn) -> None:
        """Stores written before metrics had an ``id`` column (SQLite only) get one: their rowid,
        which is the order the metrics were recorded in."""
        insp = inspect(conn)
        if not insp.has_table("metrics") or "id" in {c["name"] for c in insp.get_columns("metrics")}:
            return
        conn.exec_driver_sql("ALTER TABLE metrics RENAME TO metrics_v1")
        conn.exec_driver_sql("DROP INDEX IF EXISTS metrics_result")
        METRICS.create(conn)
        conn.exec_driver_sql("INSERT INTO metrics(id, result_id, name, value, unit, direction) "
                             "SELECT rowid, result_id, name, value, unit, direction FROM metrics_v1")
        conn.exec_driver_sql("DROP TABLE metrics_v1")

    @staticmethod
    def _migrate_results_v2(conn) -> None:
        """Stores written before results had a ``nodeid`` column (both backends) get it, NULL in
        the rows already there: they were keyed by the bare test function name, which stays their
        ``test`` (parametrised variants of one test share it: nothing tells them apart)."""
        insp = inspect(conn)
        if insp.has_table("results") and "nodeid" not in {c["name"] for c in insp.get_columns("results")}:
            conn.exec_driver_sql("ALTER TABLE results ADD COLUMN nodeid TEXT")

    @property
    def db(self) -> sqlite3.Connection:
        """A plain ``sqlite3`` connection to a SQLite store (rows as ``sqlite3.Row``), for ad-hoc
        SQL in scripts and tests. Code that must also run on PostgreSQL uses the methods below.

        Raises:
            FleetError: the store is not SQLite.
        """
        if self.target.backend != "sqlite":
            raise FleetError(f"the results store {self.target.display} is not SQLite: no sqlite3 connection",
                             "use the Store methods (they run on both backends)")
        if self._raw is None:
            self._raw = sqlite3.connect(str(self.target.path), timeout=60.0, isolation_level=None,
                                        check_same_thread=False)
            self._raw.row_factory = sqlite3.Row
            self._raw.execute("PRAGMA busy_timeout=60000")
        return self._raw

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.engine.dispose()

    def _rows(self, stmt) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    # -- writes ----------------------------------------------------------------------------
    def start_run(self, run_id: str, suite: str, inventory: str = "", argv: list[str] | None = None) -> None:
        """Record a new run as ``running``. ``argv`` is stored with database passwords as ``***``.

        Raises:
            FleetError: ``run_id`` is in the store already.
        """
        try:
            with self._writer.begin() as conn:
                conn.execute(RUNS.insert().values(
                    id=run_id, suite=suite, started=time.time(), status="running", inventory=inventory,
                    controller=socket.gethostname(), argv=json.dumps(redact_argv(argv or []))))
        except IntegrityError:
            raise FleetError(f"run id {run_id} is in the results store {self.target.display} already",
                             "use a new run id (fleet.results.store.new_run_id)") from None

    def new_run(self, suite: str, inventory: str = "", argv: list[str] | None = None) -> str:
        """Start a run under a fresh :func:`new_run_id`, drawing again on the (1 in 65536 within
        one second) chance that another controller took the same id; returns the id."""
        for _ in range(20):
            run_id = new_run_id()
            try:
                self.start_run(run_id, suite, inventory=inventory, argv=argv)
                return run_id
            except FleetError:
                continue
        raise FleetError(f"no free run id in {self.target.display} after 20 tries", "try again", EXIT_INFRA)

    def finish_run(self, run_id: str, status: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(finished=time.time(), status=status))

    def reopen_run(self, run_id: str, argv: list[str]) -> None:
        """Mark a run ``running`` again (``fleet test --resume``), with its new command line."""
        with self._writer.begin() as conn:
            conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
                status="running", finished=None, argv=json.dumps(redact_argv(argv))))

    def set_run_times(self, run_id: str, started: float | None = None, finished: float | None = None) -> None:
        """Overwrite a run's start and/or finish time (s since the epoch): sample stores, imports."""
        values = {k: v for k, v in (("started", started), ("finished", finished)) if v is not None}
        if values:
            with self._writer.begin() as conn:
                conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))

    def add_board(self, run_id: str, name: str, board: str, accelerator: str, emulated: bool,
                  info: dict | None = None) -> None:
        """Record (or replace) a board of a run and its ``info`` reply."""
        values = {"run_id": run_id, "name": name, "board": board, "accelerator": accelerator,
                  "emulated": int(emulated), "info_json": json.dumps(info or {})}
        # INSERT ... ON CONFLICT DO UPDATE: both dialects have it, under the same API
        if self.target.backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(BOARDS).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "name"],
                                          set_={k: stmt.excluded[k] for k in ("board", "accelerator", "emulated",
                                                                              "info_json")})
        with self._writer.begin() as conn:
            conn.execute(stmt)

    def add_result(self, r: Result) -> int:
        """Insert a result with its metrics and telemetry in one transaction; returns the result id."""
        r.finished = r.finished or time.time()
        # everything serialised before the transaction: the write lock is held for the inserts only
        row = {"run_id": r.run_id, "board": r.board, "test": r.test, "outcome": r.outcome, "message": r.message,
               "duration_s": r.duration_s, "emulated": None if r.emulated is None else int(r.emulated),
               "backends_json": json.dumps(r.backends), "models_json": json.dumps(r.models),
               "outputs_json": json.dumps(r.outputs), "finished": r.finished, "nodeid": r.nodeid or None}
        metrics = [{"name": m.name, "value": m.value, "unit": m.unit, "direction": m.direction} for m in r.metrics]
        tel = [{"seq": i, "label": t.get("label"), "summary_json": json.dumps(t.get("summary")),
                "trace_json": json.dumps(t.get("trace"))} for i, t in enumerate(r.telemetry)]
        if r.telemetry_summary is not None:
            tel.append({"seq": -1, "label": "aggregate", "summary_json": json.dumps(r.telemetry_summary),
                        "trace_json": None})
        with self._writer.begin() as conn:
            rid = conn.execute(RESULTS.insert(), row).inserted_primary_key[0]
            if metrics:
                conn.execute(METRICS.insert(), [{**m, "result_id": rid} for m in metrics])
            if tel:
                conn.execute(TELEMETRY.insert(), [{**t, "result_id": rid} for t in tel])
        r.id = rid
        return rid

    def delete_results(self, result_ids: list[int]) -> None:
        """Delete results with their metrics and telemetry, in one transaction (``--resume``)."""
        if not result_ids:
            return
        ids = list(result_ids)
        with self._writer.begin() as conn:
            conn.execute(delete(METRICS).where(METRICS.c.result_id.in_(ids)))
            conn.execute(delete(TELEMETRY).where(TELEMETRY.c.result_id.in_(ids)))
            conn.execute(delete(RESULTS).where(RESULTS.c.id.in_(ids)))

    # -- reads -----------------------------------------------------------------------------
    def latest_run(self) -> str | None:
        rows = self._rows(select(RUNS.c.id).order_by(RUNS.c.started.desc()).limit(1))
        return rows[0]["id"] if rows else None

    def run(self, run_id: str) -> dict | None:
        rows = self._rows(select(RUNS).where(RUNS.c.id == run_id))
        return rows[0] if rows else None

    def runs(self, limit: int = 20, suite: str | None = None, status: str | None = None) -> list[dict]:
        """The newest ``limit`` runs (of ``suite``, with ``status`` when given), newest first."""
        stmt = select(RUNS)
        if suite is not None:
            stmt = stmt.where(RUNS.c.suite == suite)
        if status is not None:
            stmt = stmt.where(RUNS.c.status == status)
        return self._rows(stmt.order_by(RUNS.c.started.desc()).limit(limit))

    def boards(self, run_id: str) -> list[dict]:
        out = []
        for d in self._rows(select(BOARDS).where(BOARDS.c.run_id == run_id).order_by(BOARDS.c.name)):
            d["info"] = json.loads(d.pop("info_json") or "{}")
            d["emulated"] = bool(d["emulated"])
            out.append(d)
        return out

    def results(self, run_id: str) -> list[Result]:
        with self.engine.connect() as conn:  # one snapshot for results and their metrics
            rows = conn.execute(select(*self._result_cols).where(RESULTS.c.run_id == run_id)
                                .order_by(RESULTS.c.board, RESULTS.c.id)).mappings().all()
            metrics: dict[int, list[Metric]] = {}
            for m in conn.execute(select(METRICS).join(RESULTS, METRICS.c.result_id == RESULTS.c.id)
                                  .where(RESULTS.c.run_id == run_id).order_by(METRICS.c.id)).mappings():
                metrics.setdefault(m["result_id"], []).append(Metric(m["name"], m["value"], m["unit"], m["direction"]))
        return [Result(
            run_id=row["run_id"], board=row["board"], test=row["test"], outcome=row["outcome"],
            message=row["message"] or "", duration_s=row["duration_s"] or 0.0,
            emulated=None if row["emulated"] is None else bool(row["emulated"]),
            backends=json.loads(row["backends_json"] or "{}"), models=json.loads(row["models_json"] or "{}"),
            outputs=json.loads(row["outputs_json"] or "[]"), metrics=metrics.get(row["id"], []),
            finished=row["finished"], id=row["id"], nodeid=row.get("nodeid") or "") for row in rows]

    def telemetry(self, result_id: int, traces: bool = True) -> dict:
        """A result's telemetry: {"aggregate": {...} | None, "traces": [{"seq", "label", "summary",
        "trace"}]} (``trace`` omitted unless ``traces``)."""
        cols = [TELEMETRY.c.seq, TELEMETRY.c.label, TELEMETRY.c.summary_json] + ([TELEMETRY.c.trace_json] if traces else [])
        out: dict = {"aggregate": None, "traces": []}
        for row in self._rows(select(*cols).where(TELEMETRY.c.result_id == result_id).order_by(TELEMETRY.c.seq)):
            summary = json.loads(row["summary_json"] or "null")
            if row["seq"] == -1:
                out["aggregate"] = summary
                continue
            t = {"seq": row["seq"], "label": row["label"], "summary": summary}
            if traces:
                t["trace"] = json.loads(row["trace_json"] or "null")
            out["traces"].append(t)
        return out

    def previous_runs(self, suite: str, before: float, exclude: str, n: int) -> list[dict]:
        """The ``n`` runs of ``suite`` that started before ``before`` (s), other than ``exclude``, newest first."""
        return self._rows(select(RUNS).where(RUNS.c.suite == suite, RUNS.c.started < before, RUNS.c.id != exclude)
                          .order_by(RUNS.c.started.desc()).limit(n))

    def metric_values(self, run_ids: list[str]) -> list[tuple[str, str, str, str, float]]:
        """(run_id, board, test, metric, value) of every metric with a value in ``run_ids``,
        results with outcome ``error`` left out (the regression baseline)."""
        if not run_ids:
            return []
        stmt = (select(RESULTS.c.run_id, RESULTS.c.board, RESULTS.c.test, METRICS.c.name, METRICS.c.value)
                .join(METRICS, METRICS.c.result_id == RESULTS.c.id)
                .where(RESULTS.c.run_id.in_(list(run_ids)), RESULTS.c.outcome != "error", METRICS.c.value.is_not(None))
                .order_by(METRICS.c.id))
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(stmt)]

    def metric_series(self, suite: str, metric: str, limit: int = 50, test: str | None = None) -> list[dict]:
        """``metric`` over the last ``limit`` runs of ``suite``, oldest first: [{run, started, board,
        test, value, unit, direction}] (results with outcome ``error`` left out)."""
        last = select(RUNS.c.id).where(RUNS.c.suite == suite).order_by(RUNS.c.started.desc()).limit(limit)
        stmt = (select(RUNS.c.id.label("run"), RUNS.c.started, RESULTS.c.board, RESULTS.c.test, METRICS.c.value,
                       METRICS.c.unit, METRICS.c.direction)
                .join(RESULTS, RESULTS.c.run_id == RUNS.c.id).join(METRICS, METRICS.c.result_id == RESULTS.c.id)
                .where(RUNS.c.id.in_(last.scalar_subquery()), METRICS.c.name == metric, RESULTS.c.outcome != "error"))
        if test:
            stmt = stmt.where(RESULTS.c.test == test)
        return self._rows(stmt.order_by(RUNS.c.started, METRICS.c.id))

    def suites(self) -> list[str]:
        """Every suite name with a run, sorted."""
        return [r["suite"] for r in self._rows(select(RUNS.c.suite).distinct().order_by(RUNS.c.suite))]

    def metric_names(self, suite: str) -> list[str]:
        """Every metric name recorded in a run of ``suite``, sorted."""
        stmt = (select(METRICS.c.name).distinct().join(RESULTS, RESULTS.c.id == METRICS.c.result_id)
                .join(RUNS, RUNS.c.id == RESULTS.c.run_id).where(RUNS.c.suite == suite).order_by(METRICS.c.name))
        return [r["name"] for r in self._rows(stmt)]

    def counts(self, run_id: str | None = None) -> dict[str, int]:
        """Rows per table ({"runs", "results", "metrics", "telemetry"}), of one run if ``run_id``."""
        with self.engine.connect() as conn:
            if run_id is None:
                return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                        for t in (RUNS, RESULTS, METRICS, TELEMETRY)}
            ids = select(RESULTS.c.id).where(RESULTS.c.run_id == run_id).scalar_subquery()
            return {
                "runs": conn.execute(select(func.count()).select_from(RUNS).where(RUNS.c.id == run_id)).scalar_one(),
                "results": conn.execute(select(func.count()).select_from(RESULTS)
                                        .where(RESULTS.c.run_id == run_id)).scalar_one(),
                "metrics": conn.execute(select(func.count()).select_from(METRICS)
                                        .where(METRICS.c.result_id.in_(ids))).scalar_one(),
                "telemetry": conn.execute(select(func.count()).select_from(TELEMETRY)
                                          .where(TELEMETRY.c.result_id.in_(ids))).scalar_one(),
            }


def open_store(path: str | Path | None = None, read_only: bool = False) -> Store:
    """Open the store at ``path`` (a SQLite file or a SQLAlchemy URL), $FLEET_DB, or
    results/fleet.db under the project."""
    return Store(db_location(path), read_only=read_only)


def db_location(path: str | Path | None = None) -> str | Path:
    """``path``, else $FLEET_DB, else results/fleet.db under the project: what every ``--db`` means."""
    from fleet.paths import default_db

    return path or os.environ.get("FLEET_DB") or default_db()
