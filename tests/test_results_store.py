import multiprocessing as mp
import xml.etree.ElementTree as ET

from fleet.results.junit import write_junit
from fleet.results.store import Metric, Result, Store, new_run_id


def _writer(path, run_id, worker, n):
    s = Store(path)
    for i in range(n):
        s.add_result(Result(run_id=run_id, board=f"b{worker}", test=f"t{i}", outcome="passed",
                            metrics=[Metric("x", i, "ms")]))
    s.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    db = tmp_path / "r.db"
    s = Store(db)
    run = new_run_id()
    s.start_run(run, "suite")
    procs = [mp.get_context("spawn").Process(target=_writer, args=(db, run, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    res = s.results(run)
    assert len(res) == 200
    assert {(r.board, r.test) for r in res} == {(f"b{w}", f"t{i}") for w in range(4) for i in range(50)}
    assert all(len(r.metrics) == 1 for r in res)


def test_junit_separates_errors_from_failures(tmp_path):
    s = Store(tmp_path / "r.db")
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
