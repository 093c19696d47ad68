"""One result per test, keyed by its name with its parameters, with its real duration (issue 13 §2).

A suite with one test parametrised over two data sets (a parametrised fixture, as suites/rag_embedder
does, and a parametrize mark) runs on two boards through `fleet test` (real plugin, real xdist
workers; the tests use no agent, so the boards need no SSH): four distinct rows in the store,
JUnit, `fleet results --json`, the report, the dashboard, Prometheus and the regression baselines,
metrics never mixed; durations count the fixtures' setup and teardown; `--resume` after one row is
deleted re-runs exactly that parameter on that board.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from fleet.cli import main
from fleet.inventory import Board
from fleet.report.html import render_report
from fleet.results import export, regress
from fleet.results.store import Store
from fleet.runner.cli import run_suite
from fleet.runner.plugin import result_key

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

SETUP_S, TEARDOWN_S = 0.3, 0.2

SUITE_TESTS = f'''
import os, time
import pytest

NDCG = {{"cranfield": 0.41, "cisi": 0.17}}


def _log(line):
    with open(os.environ["FLEET_KEYS_LOG"], "a") as f:
        f.write(line + "\\n")


@pytest.fixture(params=sorted(NDCG))
def dataset(request):
    time.sleep({SETUP_S})  # the measurement runs in the fixture: it is part of the test's duration
    yield request.param
    time.sleep({TEARDOWN_S})


@pytest.mark.parametrize("mode", ["hybrid"])
def test_retrieval(board, dataset, mode, record):
    _log(f"{{board.name}} {{dataset}}")
    bump = 0.01 if board.name == "lab-2" else 0.0
    record.metric("ndcg_at_10", NDCG[dataset] + bump, "ratio", "higher")
    record.metric("latency_p50_ms", (20.0 if dataset == "cranfield" else 10.0) + 100 * bump, "ms", "lower")


def test_plain(board, record):
    _log(f"{{board.name}} plain")
    record.metric("ndcg_at_10", 0.99, "ratio", "higher")
'''

KEYS = {"test_retrieval[cisi-hybrid]": "cisi", "test_retrieval[cranfield-hybrid]": "cranfield"}
NDCG = {"cranfield": 0.41, "cisi": 0.17}
BOARDS = ("lab-1", "lab-2")


def _fleet(tmp_path, tests: dict[str, str] | None = None):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "suite.yml").write_text("name: keys\npipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\n"
                                     "dataset: speech\nrequest_timeout_s: 5\n")
    for name, text in (tests or {"test_keys.py": SUITE_TESTS}).items():
        (suite / name).write_text(text)
    hosts = {b: {"board": "cpu", "accelerator": "cpu", "emulated": True, "fleet_root": "/nonexistent",
                 "ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "nobody"} for b in BOARDS}
    inv = tmp_path / "inv.yml"
    inv.write_text(json.dumps({"all": {"hosts": hosts}}))
    return suite, inv


def _ran(log) -> list[str]:
    return sorted(log.read_text().splitlines()) if log.exists() else []


def _ndcg(r) -> float:
    return next(m.value for m in r.metrics if m.name == "ndcg_at_10")


def _want(board: str, key: str) -> float:
    return NDCG[KEYS[key]] + (0.01 if board == "lab-2" else 0.0)


def test_a_parametrised_test_gives_one_row_per_parameter_and_board_everywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    log = tmp_path / "ran.log"
    monkeypatch.setenv("FLEET_KEYS_LOG", str(log))
    suite, inv = _fleet(tmp_path)
    db = tmp_path / "r.db"
    run_id, rc = run_suite(str(suite), str(inv), db=str(db), workers="2", quiet=True)
    assert rc == 0
    assert _ran(log) == sorted(f"{b} {d}" for b in BOARDS for d in ("cisi", "cranfield", "plain"))

    # the store: four distinct rows of test_retrieval, each with its own value
    s = Store(db)
    rows = [r for r in s.results(run_id) if r.test.startswith("test_retrieval")]
    assert sorted((r.board, r.test) for r in rows) == sorted((b, k) for b in BOARDS for k in KEYS)
    for r in rows:
        assert _ndcg(r) == pytest.approx(_want(r.board, r.test))
        # pytest's node id as run: the fixture's parameter, the board's, the mark's
        assert r.nodeid == f"test_keys.py::test_retrieval[{KEYS[r.test]}-{r.board}-hybrid]"
        assert r.module == "test_keys.py"
        # setup + call + teardown: the fixture's sleeps are in it (the call alone takes ~0 s)
        assert r.duration_s >= SETUP_S + TEARDOWN_S
    assert {r.test for r in s.results(run_id)} - set(KEYS) == {"test_plain"}

    # JUnit: classname suite.board.module, name the test with its parameters, real time
    junit = ET.parse(tmp_path / "runs" / run_id / "junit.xml").getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in junit.iter("testcase")}
    assert len(cases) == 6
    for b in BOARDS:
        for k in KEYS:
            c = cases[(f"keys.{b}.test_keys", k)]
            assert float(c.get("time")) >= SETUP_S + TEARDOWN_S
            props = {p.get("name"): float(p.get("value")) for p in c.iter("property")}
            assert props["ndcg_at_10[ratio]"] == pytest.approx(_want(b, k), abs=1e-5)

    # `fleet results --json`: the tests, and the board's metrics kept apart per parameter
    assert main(["results", run_id, "--db", str(db), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for b in data["boards"]:
        assert sorted(t["test"] for t in b["tests"]) == sorted([*KEYS, "test_plain"])
        for k in KEYS:
            params = k[len("test_retrieval"):]
            assert b["metrics"][f"ndcg_at_10{params}"]["value"] == pytest.approx(_want(b["name"], k))
        assert b["metrics"]["ndcg_at_10"]["value"] == 0.99  # test_plain's, unparametrised

    # the report: a matrix row and a detail per key, each cell its own
    page = render_report(s, run_id)
    for b in BOARDS:
        for k in KEYS:
            assert f'data-board="{b}" data-test="{k}" data-outcome="passed"' in page
    anchors = [part.split('"', 1)[0] for part in page.split('<h3 id="')[1:]]
    assert len(anchors) == len(set(anchors)) == 6
    shown = [float(x.split('"', 1)[0]) for x in page.split('data-duration-s="')[1:]]
    assert len(shown) == 6 and sum(d >= SETUP_S + TEARDOWN_S for d in shown) == 4

    # the dashboard's test page shows that result only
    from fleet.dashboard.server import compare_page, test_page

    one = test_page(s, run_id, "lab-2", "test_retrieval[cisi]")
    assert one is None  # the bare or partial name is no key
    one = test_page(s, run_id, "lab-2", "test_retrieval[cisi-hybrid]")
    assert "0.18" in one and "0.42" not in one and "0.17" not in one
    assert float(one.split('data-duration-s="')[1].split('"')[0]) >= SETUP_S + TEARDOWN_S
    assert "test_keys.py::test_retrieval[cisi-lab-2-hybrid]" in one
    cmp_rows = compare_page(s, run_id, run_id).count("<tr><td>lab-")
    assert cmp_rows == 2 * (2 * 2 + 1)  # (board, test, metric) rows: 2 metrics x 2 keys + test_plain's, per board

    # Prometheus: one series per board and key, in base units
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(export.prometheus_text(s, run_id))}
    got = {(x.labels["board"], x.labels["test"]): x.value for x in fams["fleet_ndcg_at_10"].samples}
    assert got == {**{(b, k): pytest.approx(_want(b, k)) for b in BOARDS for k in KEYS},
                   **{(b, "test_plain"): 0.99 for b in BOARDS}}
    lat = {(x.labels["board"], x.labels["test"]): x.value for x in fams["fleet_latency_p50_seconds"].samples}
    assert lat[("lab-1", "test_retrieval[cranfield-hybrid]")] == pytest.approx(0.020)
    assert lat[("lab-1", "test_retrieval[cisi-hybrid]")] == pytest.approx(0.010)
    dur = {(x.labels["board"], x.labels["test"]): x.value for x in fams["fleet_test_duration_seconds"].samples}
    assert all(dur[(b, k)] >= SETUP_S + TEARDOWN_S for b in BOARDS for k in KEYS)

    # regression baselines and trends: per key, never pooled
    verdicts = {(v.board, v.test, v.metric) for v in regress.regressions(s, run_id)}
    assert {(b, k, "ndcg_at_10") for b in BOARDS for k in KEYS} <= verdicts
    ser = regress.series(s, "keys", "ndcg_at_10")
    assert sorted(ser) == sorted(f"{b} · {k}" for b in BOARDS for k in [*KEYS, "test_plain"])
    assert all(len(v) == 1 for v in ser.values())

    # --resume after one row is deleted re-runs exactly that parameter on that board
    gone = next(r for r in rows if (r.board, r.test) == ("lab-2", "test_retrieval[cisi-hybrid]"))
    s.delete_results([gone.id])
    s.close()
    log.unlink()
    again, rc = run_suite(str(suite), str(inv), db=str(db), workers="2", quiet=True, resume=run_id)
    assert (again, rc) == (run_id, 0)
    assert _ran(log) == ["lab-2 cisi"]
    s = Store(db)
    rows = [r for r in s.results(run_id) if r.test.startswith("test_retrieval")]
    assert sorted((r.board, r.test) for r in rows) == sorted((b, k) for b in BOARDS for k in KEYS)
    assert all(_ndcg(r) == pytest.approx(_want(r.board, r.test)) for r in rows)
    s.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_two_modules_with_one_key_error_before_either_runs(tmp_path, monkeypatch, workers):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_KEYS_LOG", str(tmp_path / "ran.log"))
    body = "def test_same(board):\n    open(__import__('os').environ['FLEET_KEYS_LOG'], 'a').write('ran\\n')\n"
    suite, inv = _fleet(tmp_path, {"test_a.py": body, "test_b.py": body, "test_c.py": "def test_other(board):\n    pass\n"})
    run_id, rc = run_suite(str(suite), str(inv), db=str(tmp_path / "r.db"), workers=workers, quiet=True)
    assert rc == 3 and not (tmp_path / "ran.log").exists()
    s = Store(tmp_path / "r.db")
    got = s.results(run_id)
    assert s.run(run_id)["status"] == "error"
    s.close()
    clash = [r for r in got if r.test == "test_same"]
    assert sorted((r.board, r.module, r.outcome) for r in clash) == sorted(
        (b, m, "error") for b in BOARDS for m in ("test_a.py", "test_b.py"))
    assert all("test_a.py::test_same" in r.message and "test_b.py::test_same" in r.message
               and "would all be stored as 'test_same'" in r.message for r in clash)
    assert sorted((r.board, r.outcome) for r in got if r.test == "test_other") == [("lab-1", "passed"), ("lab-2", "passed")]


def _item(name: str, ids: list[str], board: Board | None):
    params = {"board": board} if board else {}
    cs = SimpleNamespace(_idlist=ids, params=params, id="-".join(ids))
    return SimpleNamespace(originalname=name, name=f"{name}[{'-'.join(ids)}]", callspec=cs)


def test_result_key_leaves_the_board_out_and_keeps_the_other_parameters():
    b = Board("pi5-a", "pi5-hailo8l", "hailo8l", True, "/opt/fleet", "h", 22, "root")
    assert result_key(_item("test_wer", ["pi5-a"], b)) == "test_wer"
    assert result_key(_item("test_q", ["pi5-a", "cisi"], b)) == "test_q[cisi]"
    assert result_key(_item("test_q", ["cisi", "pi5-a", "hybrid"], b)) == "test_q[cisi-hybrid]"
    # a parameter equal to the board name: one occurrence goes, which one does not matter
    assert result_key(_item("test_q", ["pi5-a", "pi5-a"], b)) == "test_q[pi5-a]"
    # without pytest's id list (only the joined id): the board's id is cut from either end
    item = _item("test_q", ["pi5-a", "cisi"], b)
    del item.callspec._idlist
    assert result_key(item) == "test_q[cisi]"
    assert result_key(SimpleNamespace(originalname="test_x", name="test_x")) == "test_x"


PHASES = '''
import time
import pytest


@pytest.fixture
def breaks_in_setup():
    time.sleep(0.1)
    raise RuntimeError("setup broke")


@pytest.fixture
def breaks_in_teardown():
    yield
    time.sleep(0.2)
    raise RuntimeError("teardown broke")


def test_setup_fails(board, breaks_in_setup):
    pass


def test_teardown_fails(board, breaks_in_teardown, record):
    record.metric("m", 1.0)


def test_fails_then_teardown_fails(board, breaks_in_teardown):
    assert False, "the call failed first"


def test_skips(board):
    pytest.skip("nothing to do here")
'''


def test_each_phase_counts_once_and_the_first_problem_is_the_outcome(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    suite, inv = _fleet(tmp_path, {"test_phases.py": PHASES})
    run_id, rc = run_suite(str(suite), str(inv), db=str(tmp_path / "r.db"), workers="1", quiet=True, limit="lab-1")
    assert rc == 1  # a test failed
    s = Store(tmp_path / "r.db")
    got = {r.test: r for r in s.results(run_id)}
    s.close()
    assert sorted(got) == ["test_fails_then_teardown_fails", "test_setup_fails", "test_skips", "test_teardown_fails"]
    assert (got["test_setup_fails"].outcome, got["test_setup_fails"].message) == ("error", "RuntimeError: setup broke")
    assert got["test_setup_fails"].duration_s >= 0.1
    # a passed call whose teardown breaks is an error, with what it recorded kept
    t = got["test_teardown_fails"]
    assert (t.outcome, t.message) == ("error", "in teardown: RuntimeError: teardown broke")
    assert [m.name for m in t.metrics] == ["m"] and t.duration_s >= 0.2
    f = got["test_fails_then_teardown_fails"]
    assert f.outcome == "failed" and "the call failed first" in f.message and f.duration_s >= 0.2
    assert got["test_skips"].outcome == "skipped" and "nothing to do here" in got["test_skips"].message
