"""Results store basics; concurrent writers are tests/test_faults_store.py (8 x 500)."""

import xml.etree.ElementTree as ET

from fleet.results.junit import write_junit
from fleet.results.store import Metric, Result, Store, new_run_id


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
