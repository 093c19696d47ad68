"""Fault matrix item 7: 8 pytest-xdist-like writer processes, 500 results each, into one store at
once: every row is present (no lost write, no duplicate)."""

from __future__ import annotations

import multiprocessing as mp

from fleet.results.store import Metric, Result, Store, new_run_id
import pytest

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

WORKERS, PER_WORKER = 8, 500


def _writer(path, run_id, worker, n, go):
    s = Store(path)
    go.wait(60)
    for i in range(n):
        s.add_result(Result(run_id=run_id, board=f"b{worker}", test=f"t{i}", outcome="passed",
                            metrics=[Metric("latency_ms", i, "ms"), Metric("wer", 0.1, "ratio")],
                            telemetry=[{"label": f"c{i}", "summary": {"x": i}, "trace": None}]))
    s.close()


def test_eight_writers_500_results_each_lose_nothing(tmp_path):
    db = tmp_path / "r.db"
    s = Store(db)
    run = new_run_id()
    s.start_run(run, "suite")
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(db, run, w, PER_WORKER, go)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    go.set()  # all writers start together
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    n = s.db.execute("SELECT COUNT(*) FROM results WHERE run_id=?", (run,)).fetchone()[0]
    assert n == WORKERS * PER_WORKER
    pairs = {(r["board"], r["test"]) for r in s.db.execute("SELECT board, test FROM results WHERE run_id=?", (run,))}
    assert pairs == {(f"b{w}", f"t{i}") for w in range(WORKERS) for i in range(PER_WORKER)}
    assert s.db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 2 * WORKERS * PER_WORKER
    assert s.db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == WORKERS * PER_WORKER
    assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
