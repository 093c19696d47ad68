"""Results store behaviour, on both backends: a SQLite file and a real PostgreSQL server
(tests/pg_server.py). Concurrent writers: tests/test_faults_store.py (SQLite, 8 x 500) and
tests/test_results_store_pg.py (PostgreSQL, 8 x 500 plus several controllers)."""

import json
import shutil
import sqlite3
import xml.etree.ElementTree as ET

from pathlib import Path

import pytest

from fleet.errors import FleetError
from fleet.leases import LeaseStore
from fleet.report.sample import build_sample_store
from fleet.results import regress
from fleet.results.junit import write_junit
from fleet.results.store import Metric, Result, Store, new_run_id


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """A store location: a SQLite file path, or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "r.db")
    return request.getfixturevalue("pg_url")


def test_junit_separates_errors_from_failures(db, tmp_path):
    s = Store(db)
    run = new_run_id()
    s.start_run(run, "whisper_hybrid")
    s.add_board(run, "b1", "rk3588", "rk3588", True)
    s.add_result(Result(run, "b1", "test_wer", "passed", metrics=[Metric("wer", 0.08, "ratio")]))
    s.add_result(Result(run, "b1", "test_latency", "failed", message="p90 900 ms > 800"))
    s.add_result(Result(run, "b2", "test_wer", "error", message="infrastructure: board lost"))
    s.finish_run(run, "failed")
    out = write_junit(s, run, tmp_path / "j" / "junit.xml")
    root = ET.parse(out).getroot()
    suites = {ts.get("name"): ts for ts in root.iter("testsuite")}
    assert suites["whisper_hybrid[b1]"].get("failures") == "1"
    assert suites["whisper_hybrid[b2]"].get("errors") == "1"
    err = root.find(".//testcase[@classname='whisper_hybrid.b2']/error")
    assert err is not None and err.get("type") == "infrastructure"
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["wer[ratio]"] == "0.08"
    assert s.run(run)["status"] == "failed"
    s.close()


def test_round_trip_keeps_values_types_and_order(db):
    s = Store(db)
    run = new_run_id()
    s.start_run(run, "suite", inventory="inv.yml", argv=["fleet", "test"])
    s.add_board(run, "b2", "pi5", "hailo8l", True, {"models": {"m": "ab"}})
    s.add_board(run, "bA", "rk3588", "rk3588", False, {"v": 0})  # byte order: "b2" < "bA" < "b_2"
    s.add_board(run, "b_2", "rk3588", "rk3588", False, {"v": 1})
    s.add_board(run, "b2", "pi5", "hailo8l", False, {"v": 2})  # replaces, no duplicate row
    metrics = [Metric("wer", 0.0298, "ratio", "lower"), Metric("alpha", 1e-12, "", "higher"),
               Metric("temp_max_c", 41.5, "°C"), Metric("nan_free", 3.0, "count")]
    r1 = s.add_result(Result(run, "b2", "test_z", "passed", duration_s=1.25, emulated=True,
                             backends={"encoder": "onnx"}, models={"m": "ab"},
                             outputs=[{"id": "c1", "hyp": "ünïcode ✓"}], metrics=metrics,
                             telemetry=[{"label": "c1", "summary": {"p50": 1.0}, "trace": {"t": [0, 1]}},
                                        {"label": "c2", "summary": {}, "trace": None}],
                             telemetry_summary={"summary": {"n": 2}, "measurement": {"verdict": "VALID"}}))
    r2 = s.add_result(Result(run, "b_2", "test_a", "skipped", emulated=None))
    r3 = s.add_result(Result(run, "b2", "test_a", "failed", message="x" * 5000))
    assert r1 < r3
    assert s.latest_run() == run and s.run(run)["inventory"] == "inv.yml"
    assert json.loads(s.run(run)["argv"]) == ["fleet", "test"]
    assert [(b["name"], b["emulated"], b["info"]) for b in s.boards(run)] == [
        ("b2", False, {"v": 2}), ("bA", False, {"v": 0}), ("b_2", False, {"v": 1})]
    rs = s.results(run)
    assert [(r.board, r.test, r.id) for r in rs] == [("b2", "test_z", r1), ("b2", "test_a", r3), ("b_2", "test_a", r2)]
    got = rs[0]
    assert got.metrics == metrics  # same values (exact doubles), units, directions, in recorded order
    assert isinstance(got.metrics[0].value, float) and got.duration_s == 1.25 and got.emulated is True
    assert got.outputs == [{"id": "c1", "hyp": "ünïcode ✓"}] and got.backends == {"encoder": "onnx"}
    assert rs[2].emulated is None and rs[2].metrics == [] and len(rs[1].message) == 5000
    tel = s.telemetry(r1)
    assert tel["aggregate"] == {"summary": {"n": 2}, "measurement": {"verdict": "VALID"}}
    assert [(t["seq"], t["label"], t["trace"]) for t in tel["traces"]] == [(0, "c1", {"t": [0, 1]}), (1, "c2", None)]
    assert "trace" not in s.telemetry(r1, traces=False)["traces"][0]
    assert s.counts(run) == {"runs": 1, "results": 3, "metrics": 4, "telemetry": 3}
    s.close()


def test_schema_creation_is_idempotent_and_keeps_rows(db):
    a = Store(db)
    run = new_run_id()
    a.start_run(run, "suite")
    a.add_result(Result(run, "b", "t", "passed", metrics=[Metric("m", 1.0)]))
    b = Store(db)  # a second process / controller opening the same store
    c = Store(db)
    assert c.counts() == {"runs": 1, "results": 1, "metrics": 1, "telemetry": 0}
    b.add_result(Result(run, "b", "t2", "passed"))
    assert [r.test for r in a.results(run)] == ["t", "t2"]
    for s in (a, b, c):
        s.close()


def test_run_ids_are_unique(db):
    s = Store(db)
    run = new_run_id()
    s.start_run(run, "suite")
    with pytest.raises(FleetError, match="already"):
        s.start_run(run, "suite")
    ids = {s.new_run("suite") for _ in range(20)}
    assert len(ids) == 20 and run not in ids
    assert s.counts()["runs"] == 21
    s.close()


def test_resume_helpers_and_password_free_argv(db):
    s = Store(db)
    run = s.new_run("suite", argv=["fleet", "test", "--db", "postgresql+psycopg://fleet:hunter2@db.lab/fleet"])
    assert "hunter2" not in s.run(run)["argv"] and "fleet:***@db.lab" in s.run(run)["argv"]
    keep = s.add_result(Result(run, "b", "t1", "passed", metrics=[Metric("m", 1.0)]))
    drop = s.add_result(Result(run, "b", "t2", "error", metrics=[Metric("m", 2.0)],
                               telemetry=[{"label": "c", "summary": {}, "trace": None}]))
    s.finish_run(run, "error")
    s.delete_results([drop])
    assert [r.id for r in s.results(run)] == [keep]
    assert s.counts(run) == {"runs": 1, "results": 1, "metrics": 1, "telemetry": 0}
    s.reopen_run(run, ["fleet", "test", "--resume", run, "--db", "sqlite:///x?password=hunter2"])
    meta = s.run(run)
    assert meta["status"] == "running" and meta["finished"] is None and "hunter2" not in meta["argv"]
    s.set_run_times(run, started=100.0, finished=160.0)
    assert (s.run(run)["started"], s.run(run)["finished"]) == (100.0, 160.0)
    s.close()


def test_regression_queries(db):
    s, ids = build_sample_store(db, runs=6)
    prev = regress.previous_runs(s, ids[-1], 3)
    assert [r["id"] for r in prev] == ids[-2:-5:-1]
    assert s.suites() == ["whisper_hybrid"]
    assert "latency_p50_ms" in s.metric_names("whisper_hybrid") and s.metric_names("nope") == []
    ser = regress.series(s, "whisper_hybrid", "latency_p50_ms", limit=4)
    assert sorted(ser) == ["sim-pi5-1", "sim-pi5-2", "sim-rk3588-1"]
    assert [p["run"] for p in ser["sim-pi5-1"]] == ids[-4:]
    assert {p["unit"] for p in ser["sim-pi5-1"]} == {"ms"}
    flagged = {(v.board, v.metric) for v in regress.regressions(s, ids[-1], runs=5) if v.flagged}
    assert ("sim-pi5-1", "latency_p50_ms") in flagged
    s.close()


def test_leases_live_in_the_store(db):
    a, b = LeaseStore(db), LeaseStore(db)
    ok, _ = a.acquire("board-1", "run-a", ttl_s=300)
    assert ok
    ok, held = b.acquire("board-1", "run-b", ttl_s=300)
    assert not ok and held.run_id == "run-a"
    assert b.renew("run-a", ttl_s=600) == 1
    assert [lz.board for lz in b.list()] == ["board-1"]
    assert a.release(run_id="run-a") == 1
    assert b.acquire("board-1", "run-b")[0] and a.get("board-1").run_id == "run-b"
    a.close()
    b.close()


# -- SQLite only -------------------------------------------------------------------------------
def test_sqlite_is_wal_and_db_gives_a_sqlite3_connection(tmp_path):
    s = Store(tmp_path / "sub" / "r.db")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert Store(f"sqlite:///{tmp_path / 'sub' / 'r.db'}").path == tmp_path / "sub" / "r.db"
    s.close()


def test_sqlite_store_of_the_previous_schema_is_migrated(tmp_path):
    # the schema before metrics had an id column (stores written by earlier fleet versions)
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE runs (id TEXT PRIMARY KEY, suite TEXT NOT NULL, started REAL NOT NULL, finished REAL,
            status TEXT NOT NULL, inventory TEXT, controller TEXT, argv TEXT);
        CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, board TEXT NOT NULL,
            test TEXT NOT NULL, outcome TEXT NOT NULL, message TEXT, duration_s REAL, emulated INTEGER,
            backends_json TEXT, models_json TEXT, outputs_json TEXT, finished REAL NOT NULL);
        CREATE TABLE metrics (result_id INTEGER NOT NULL, name TEXT NOT NULL, value REAL, unit TEXT, direction TEXT);
        CREATE INDEX metrics_result ON metrics(result_id);
        INSERT INTO runs VALUES ('r1', 's', 1.0, 2.0, 'passed', '', 'h', '[]');
        INSERT INTO results(run_id, board, test, outcome, finished) VALUES ('r1', 'b', 't', 'passed', 2.0);
        INSERT INTO metrics VALUES (1, 'zeta', 1.0, 'ms', 'lower'), (1, 'alpha', 2.0, 'ms', 'lower');
    """)
    old.close()
    s = Store(path)
    assert [m.name for m in s.results("r1")[0].metrics] == ["zeta", "alpha"]  # recorded order kept
    s.add_result(Result("r1", "b", "t2", "passed", metrics=[Metric("m", 3.0)]))
    assert s.counts() == {"runs": 1, "results": 2, "metrics": 3, "telemetry": 0}
    s.close()
    assert Store(path).counts()["metrics"] == 3  # the migration runs once


FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"


def _dump(path) -> dict:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    out = {t: [dict(r) for r in db.execute(f"SELECT * FROM {t} ORDER BY rowid")]
           for t in ("runs", "boards", "results", "metrics", "telemetry")}
    db.close()
    return out


def test_store_of_the_previous_release_keeps_every_row(tmp_path):
    # store_v1.db was written by the previous release's store code (tests/fixtures/store_v1/make_store.py)
    path = tmp_path / "v1.db"
    shutil.copyfile(FIXTURE / "store_v1.db", path)
    before = json.loads((FIXTURE / "store_v1.json").read_text())
    assert _dump(path) == before and "nodeid" not in before["results"][0]
    runs = [r["id"] for r in before["runs"]]
    # read-only (the dashboard): read as it is, nothing migrated or written
    ro = Store(path, read_only=True)
    old = {run: ro.results(run) for run in runs}
    ro.close()
    assert _dump(path) == before
    assert sum(len(v) for v in old.values()) == len(before["results"]) and all(
        r.nodeid == "" and r.module == "" for v in old.values() for r in v)
    # first open for writing migrates: every row of every table is still there, unchanged
    s = Store(path)
    after = _dump(path)
    assert {t: len(v) for t, v in after.items()} == {t: len(v) for t, v in before.items()}
    for t in before:
        extra = {"nodeid": None} if t == "results" else {}
        assert after[t] == [{**row, **extra} for row in before[t]], t
    for run in runs:
        got = s.results(run)
        assert [(r.id, r.board, r.test, r.outcome, r.metrics, r.outputs) for r in got] == \
            [(r.id, r.board, r.test, r.outcome, r.metrics, r.outputs) for r in old[run]]
        assert all(r.nodeid == "" for r in got)
    tel = s.telemetry(next(r.id for r in s.results(runs[0]) if r.test == "test_latency"))
    assert tel["aggregate"]["measurement"]["verdict"] == "VALID" and tel["traces"][0]["trace"] == {"t": [0.0, 0.1]}
    # new rows carry the node id next to the old ones; the migration runs once
    rid = s.add_result(Result(runs[1], "pi5-a", "test_retrieval_quality[cisi]", "passed",
                              nodeid="test_rag_embedder.py::test_retrieval_quality[pi5-a-cisi]"))
    s.close()
    s = Store(path)
    new = next(r for r in s.results(runs[1]) if r.id == rid)
    assert new.module == "test_rag_embedder.py" and s.counts()["results"] == len(before["results"]) + 1
    s.close()


def test_postgresql_store_without_nodeid_is_migrated(pg_url):
    s = Store(pg_url)
    run = s.new_run("suite")
    s.add_result(Result(run, "b", "test_a", "passed", metrics=[Metric("m", 1.0)]))
    s.close()
    from sqlalchemy import create_engine

    eng = create_engine(pg_url)  # the previous release's schema: results without nodeid
    with eng.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE results DROP COLUMN nodeid")
    ro = Store(pg_url, read_only=True)
    assert [(r.test, r.nodeid) for r in ro.results(run)] == [("test_a", "")]
    ro.close()
    s = Store(pg_url)
    s.add_result(Result(run, "b", "test_b[x]", "passed", nodeid="t.py::test_b[b-x]"))
    assert [(r.test, r.nodeid, len(r.metrics)) for r in s.results(run)] == [
        ("test_a", "", 1), ("test_b[x]", "t.py::test_b[b-x]", 0)]
    s.close()
    eng.dispose()


def test_read_only_store_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        Store(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()
    Store(tmp_path / "r.db").close()
    ro = Store(tmp_path / "r.db", read_only=True)
    assert ro.runs() == []
    with pytest.raises(Exception, match="readonly"):
        ro.start_run("x", "s")
    ro.close()
