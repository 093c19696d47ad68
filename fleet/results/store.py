"""The results store: every run, board and test result, written as soon as it is known.

SQLite in WAL mode, so several pytest-xdist workers (one process each) write at once; each write
is its own short transaction, so a crash loses nothing already recorded. JUnit XML and
``fleet results`` are derived from it.
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,            -- running | passed | failed | error | interrupted
    inventory TEXT,
    controller TEXT,
    argv TEXT
);
CREATE TABLE IF NOT EXISTS boards (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    board TEXT, accelerator TEXT, emulated INTEGER,
    info_json TEXT,                  -- the agent's `info` reply (backends, models with sha256)
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    board TEXT NOT NULL,
    test TEXT NOT NULL,
    outcome TEXT NOT NULL,           -- passed | failed | error (infrastructure) | skipped
    message TEXT,
    duration_s REAL,
    emulated INTEGER,
    backends_json TEXT,              -- stage -> backend that really ran
    models_json TEXT,                -- artifact -> sha256
    outputs_json TEXT,               -- per-item outputs (e.g. per clip ref/hyp/ms)
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    result_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    unit TEXT,
    direction TEXT                   -- lower | higher (which way is better)
);
CREATE TABLE IF NOT EXISTS telemetry (
    result_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,            -- -1: the result's aggregate; 0..n-1: one trace per request
    label TEXT,                      -- e.g. the clip id ('aggregate' for seq -1)
    summary_json TEXT,               -- summary (device_agent.telemetry.summary), or for seq -1
                                     -- {"summary": merged, "measurement": verdict, latency, reasons}
    trace_json TEXT,                 -- the trace (device_agent.protocol `run` telemetry); NULL for -1
    PRIMARY KEY (result_id, seq)
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
CREATE INDEX IF NOT EXISTS metrics_result ON metrics(result_id);
"""


@dataclass
class Metric:
    """A measured value with its unit and which direction is better ("lower" | "higher")."""

    name: str
    value: float
    unit: str = ""
    direction: str = "lower"


@dataclass
class Result:
    """One test on one board: the record a dashboard or CI job reads."""

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


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 4 hex digits, e.g. 20261121-233500-ab12."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:4]


class Store:
    """SQLite results store. One instance per process; safe with concurrent writer processes.

    Args:
        path: database file (created with its parent folder if missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=60000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- writes ----------------------------------------------------------------------------
    def start_run(self, run_id: str, suite: str, inventory: str = "", argv: list[str] | None = None) -> None:
        self.db.execute(
            "INSERT INTO runs(id, suite, started, status, inventory, controller, argv) VALUES (?,?,?,?,?,?,?)",
            (run_id, suite, time.time(), "running", inventory, socket.gethostname(), json.dumps(argv or [])),
        )

    def finish_run(self, run_id: str, status: str) -> None:
        self.db.execute("UPDATE runs SET finished=?, status=? WHERE id=?", (time.time(), status, run_id))

    def add_board(self, run_id: str, name: str, board: str, accelerator: str, emulated: bool,
                  info: dict | None = None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO boards(run_id, name, board, accelerator, emulated, info_json) VALUES (?,?,?,?,?,?)",
            (run_id, name, board, accelerator, int(emulated), json.dumps(info or {})),
        )

    def add_result(self, r: Result) -> int:
        """Insert a result and its metrics in one transaction; returns the result id."""
        r.finished = r.finished or time.time()
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(
                "INSERT INTO results(run_id, board, test, outcome, message, duration_s, emulated, "
                "backends_json, models_json, outputs_json, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (r.run_id, r.board, r.test, r.outcome, r.message, r.duration_s,
                 None if r.emulated is None else int(r.emulated), json.dumps(r.backends),
                 json.dumps(r.models), json.dumps(r.outputs), r.finished),
            )
            rid = cur.lastrowid
            cur.executemany(
                "INSERT INTO metrics(result_id, name, value, unit, direction) VALUES (?,?,?,?,?)",
                [(rid, m.name, m.value, m.unit, m.direction) for m in r.metrics],
            )
            rows = [(rid, i, t.get("label"), json.dumps(t.get("summary")), json.dumps(t.get("trace")))
                    for i, t in enumerate(r.telemetry)]
            if r.telemetry_summary is not None:
                rows.append((rid, -1, "aggregate", json.dumps(r.telemetry_summary), None))
            cur.executemany(
                "INSERT INTO telemetry(result_id, seq, label, summary_json, trace_json) VALUES (?,?,?,?,?)", rows)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        r.id = rid
        return rid

    # -- reads -----------------------------------------------------------------------------
    def latest_run(self) -> str | None:
        row = self.db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()
        return row["id"] if row else None

    def run(self, run_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def runs(self, limit: int = 20) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT ?", (limit,))]

    def boards(self, run_id: str) -> list[dict]:
        out = []
        for r in self.db.execute("SELECT * FROM boards WHERE run_id=? ORDER BY name", (run_id,)):
            d = dict(r)
            d["info"] = json.loads(d.pop("info_json") or "{}")
            d["emulated"] = bool(d["emulated"])
            out.append(d)
        return out

    def results(self, run_id: str) -> list[Result]:
        rows = self.db.execute("SELECT * FROM results WHERE run_id=? ORDER BY board, id", (run_id,)).fetchall()
        out = []
        for row in rows:
            ms = [Metric(m["name"], m["value"], m["unit"], m["direction"]) for m in
                  self.db.execute("SELECT * FROM metrics WHERE result_id=? ORDER BY rowid", (row["id"],))]
            out.append(Result(
                run_id=row["run_id"], board=row["board"], test=row["test"], outcome=row["outcome"],
                message=row["message"] or "", duration_s=row["duration_s"] or 0.0,
                emulated=None if row["emulated"] is None else bool(row["emulated"]),
                backends=json.loads(row["backends_json"] or "{}"), models=json.loads(row["models_json"] or "{}"),
                outputs=json.loads(row["outputs_json"] or "[]"), metrics=ms, finished=row["finished"], id=row["id"],
            ))
        return out


    def telemetry(self, result_id: int, traces: bool = True) -> dict:
        """A result's telemetry: {"aggregate": {...} | None, "traces": [{"seq", "label", "summary",
        "trace"}]} (``trace`` omitted unless ``traces``)."""
        cols = "seq, label, summary_json" + (", trace_json" if traces else "")
        out: dict = {"aggregate": None, "traces": []}
        for row in self.db.execute(f"SELECT {cols} FROM telemetry WHERE result_id=? ORDER BY seq", (result_id,)):
            summary = json.loads(row["summary_json"] or "null")
            if row["seq"] == -1:
                out["aggregate"] = summary
                continue
            t = {"seq": row["seq"], "label": row["label"], "summary": summary}
            if traces:
                t["trace"] = json.loads(row["trace_json"] or "null")
            out["traces"].append(t)
        return out


def open_store(path: str | Path | None = None) -> Store:
    """Open the store at ``path``, $FLEET_DB, or results/fleet.db under the project."""
    from fleet.paths import default_db

    return Store(path or os.environ.get("FLEET_DB") or default_db())
