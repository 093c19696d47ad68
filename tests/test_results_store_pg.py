"""The results store on a real PostgreSQL server (tests/pg_server.py), beyond the behaviour that
tests/test_results_store.py checks on both backends: concurrent writers and controllers, the
outputs derived from a PostgreSQL store (same bytes as from SQLite), and the errors people see."""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import threading
import urllib.request

import pytest

from fleet.cli import main
from fleet.errors import FleetError
from fleet.report.sample import build_sample_store
from fleet.results.dburl import parse_target
from fleet.results.junit import write_junit
from fleet.results.store import Metric, Result, Store

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

WORKERS, PER_WORKER = 8, 500


def _writer(url, run_id, worker, n, go):
    s = Store(url)  # every worker creates the schema on a fresh database at the same moment
    go.wait(60)
    for i in range(n):
        s.add_result(Result(run_id=run_id, board=f"b{worker}", test=f"t{i}", outcome="passed",
                            metrics=[Metric("latency_ms", i, "ms"), Metric("wer", 0.1, "ratio")],
                            telemetry=[{"label": f"c{i}", "summary": {"x": i}, "trace": None}]))
    s.close()


def _controller(url, n, out):
    s = Store(url)
    ids = [s.new_run("suite", argv=["fleet", "test"]) for _ in range(n)]
    s.close()
    out.put(ids)


def test_eight_writers_500_results_each_lose_nothing(pg_url):
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    run = "20260101-000000-pg00"
    procs = [ctx.Process(target=_writer, args=(pg_url, run, w, PER_WORKER, go)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    s = Store(pg_url)
    assert s.counts() == {"runs": 0, "results": WORKERS * PER_WORKER, "metrics": 2 * WORKERS * PER_WORKER,
                          "telemetry": WORKERS * PER_WORKER}
    rs = s.results(run)
    assert {(r.board, r.test) for r in rs} == {(f"b{w}", f"t{i}") for w in range(WORKERS) for i in range(PER_WORKER)}
    assert len({r.id for r in rs}) == len(rs)
    assert all([m.name for m in r.metrics] == ["latency_ms", "wer"] for r in rs)
    s.close()


def test_controllers_starting_runs_at_once_get_unique_ids(pg_url):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_controller, args=(pg_url, 40, out)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in out.get(timeout=180)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(ids) == len(set(ids)) == 160
    s = Store(pg_url)
    assert s.counts()["runs"] == 160
    s.close()


def _cli(capsys, *args) -> str:
    assert main(list(args)) == 0, args
    return capsys.readouterr().out


def test_outputs_from_postgresql_equal_those_from_sqlite(pg_url, tmp_path, capsys):
    lite, ids = build_sample_store(tmp_path / "r.db", runs=4)
    pg, pg_ids = build_sample_store(pg_url, runs=4)
    assert pg_ids == ids
    for s in (lite, pg):
        s.close()
    outputs = {}
    for name, db in (("sqlite", str(tmp_path / "r.db")), ("postgresql", pg_url)):
        out = {
            "results": json.loads(_cli(capsys, "results", ids[-1], "--db", db, "--json")),
            "metrics": json.loads(_cli(capsys, "results", ids[-1], "--db", db, "--metrics-json", "-")),
            "prometheus": _cli(capsys, "results", ids[-1], "--db", db, "--prometheus"),
            "regressions": _cli(capsys, "results", ids[-1], "--db", db, "--regressions", "--json"),
            "table": _cli(capsys, "results", ids[-1], "--db", db),
        }
        store = Store(db)
        write_junit(store, ids[-1], tmp_path / name / "junit.xml")
        store.close()
        out["junit"] = (tmp_path / name / "junit.xml").read_bytes()
        outputs[name] = out
    for key in ("results", "metrics", "prometheus", "regressions", "table", "junit"):
        assert outputs["postgresql"][key] == outputs["sqlite"][key], key
    assert "fleet_latency_p50_seconds{" in outputs["postgresql"]["prometheus"]
    assert b"<testsuite" in outputs["postgresql"]["junit"]
    assert any(r["status"] == "regression" for r in json.loads(outputs["postgresql"]["regressions"]))


def test_report_and_dashboard_over_postgresql(pg_url, tmp_path, capsys):
    from fleet.dashboard.server import make_server

    s, ids = build_sample_store(pg_url, runs=3)
    s.close()
    out = tmp_path / "report.html"
    assert main(["report", ids[-1], "--db", pg_url, "--out", str(out)]) == 0
    html = out.read_text()
    assert "sim-pi5-1" in html and "latency_p50_ms" in html
    srv = make_server(pg_url, "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        base = f"http://127.0.0.1:{srv.server_port}"
        for path in ("/", f"/run/{ids[-1]}", "/trends?suite=whisper_hybrid&metric=wer", f"/compare?a={ids[0]}&b={ids[-1]}"):
            with urllib.request.urlopen(base + path, timeout=30) as r:
                assert r.status == 200, path
    finally:
        srv.shutdown()
        srv.server_close()


# -- errors ------------------------------------------------------------------------------------
def test_unreachable_server_names_the_url_without_its_password(pg_server):
    import socket

    with socket.socket() as sk:  # a port nothing listens on
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    url = f"postgresql+psycopg://fleet:s3cr3t-pw@127.0.0.1:{port}/fleet"
    with pytest.raises(FleetError) as e:
        Store(url)
    text = str(e.value)
    assert e.value.exit_code == 3
    assert f"postgresql+psycopg://fleet:***@127.0.0.1:{port}/fleet" in text and "s3cr3t-pw" not in text
    assert "PostgreSQL runs there" in e.value.fix


def test_wrong_password_and_missing_database(pg_server):
    role, db = pg_server.password_role("right-pw-123")
    tcp = f"postgresql+psycopg://{role}:%s@127.0.0.1:{pg_server.port}/%s"
    if pg_server.port is None:
        pytest.fail("FLEET_TEST_PG_URL servers are not used for the password checks; run without it")
    Store(tcp % ("right-pw-123", db)).close()  # the role really logs in with its password
    with pytest.raises(FleetError) as e:
        Store(tcp % ("wrong-pw-456", db))
    assert "wrong-pw-456" not in str(e.value) and "password authentication failed" in str(e.value)
    with pytest.raises(FleetError) as e:
        Store(tcp % ("right-pw-123", "no_such_db"))
    assert "right-pw-123" not in str(e.value) and "no_such_db" in str(e.value)


@pytest.mark.parametrize("url, says", [
    ("postgresql+psycopg://fleet:pw-in-url@host:notaport/db", "malformed database URL"),
    ("mysql://fleet:pw-in-url@host/db", "SQLite or PostgreSQL"),
    ("postgresql+psycopg://fleet:pw-in-url@host", "names no database"),
    ("sqlite://", "names no SQLite file"),
])
def test_malformed_urls(url, says):
    with pytest.raises(FleetError, match=says) as e:
        Store(url)
    assert "pw-in-url" not in str(e.value) and e.value.fix


def test_missing_driver_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(FleetError, match="no driver") as e:
        Store("postgresql+psycopg://fleet:pw-xyz@127.0.0.1/fleet")
    assert "psycopg[binary]" in e.value.fix and "pw-xyz" not in str(e.value)


def test_bare_postgresql_url_uses_psycopg3():
    t = parse_target("postgresql://fleet@db.lab/fleet")
    assert t.url.drivername == "postgresql+psycopg" and t.path is None
    assert t.display == "postgresql+psycopg://fleet@db.lab/fleet"
    assert parse_target("postgresql://u:p@h/d?password=q").display == "postgresql+psycopg://u:***@h/d?password=***"


def test_cli_error_output_has_no_password(capsys):
    rc = main(["results", "--db", "postgresql+psycopg://fleet:cli-pw-789@127.0.0.1:1/fleet"])
    err = capsys.readouterr()
    assert rc == 3 and "cli-pw-789" not in err.out + err.err and "fleet:***@127.0.0.1:1/fleet" in err.err
