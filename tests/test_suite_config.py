from pathlib import Path

import pytest

from fleet.errors import FleetError
from fleet.inventory import Board
from fleet.runner.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
GOOD = (ROOT / "suites" / "whisper_hybrid" / "suite.yml").read_text()


def _suite(tmp_path, text):
    d = tmp_path / "suites" / "s"
    d.mkdir(parents=True)
    (d / "suite.yml").write_text(text)
    return d


def test_shipped_suite_loads_and_matches_boards():
    s = load_suite(ROOT / "suites" / "whisper_hybrid")
    assert s.pipeline == "asr.whisper_hybrid"
    b = Board("x", "rk3588", "rk3588", True, "/opt/fleet", "h", 22, "root")
    assert s.matches(b)
    assert set(s.thresholds_for(b)) >= {"wer_max"}
    assert len(s.dataset_items()) == 20


# unknown pipeline, unknown threshold key, wrong types and a truncated suite.yml are cases of the
# bad-input corpus (tests/test_bad_input_corpus.py, through `fleet test`); these are the rest.
@pytest.mark.parametrize("bad, needle", [
    ("pipeline: asr.whisper_hybrid\nmodel: m\ndataset: d\nthresholds: {gpu: {wer_max: 0.1}}\n",
     "unknown threshold class 'gpu'"),
    ("pipeline: asr.whisper_hybrid\nmodel: m\ndataset: d\nbogus: 1\n", "unknown key(s) bogus"),
    ("pipeline: asr.whisper_hybrid\nmodel: m\ndataset: d\nrequest_timeout_s: -1\n", "positive number"),
    ("model: m\ndataset: d\n", "'pipeline' must be a non-empty string"),
])
def test_bad_suite_files_name_the_problem(tmp_path, bad, needle):
    with pytest.raises(FleetError) as e:
        load_suite(_suite(tmp_path, bad))
    assert needle in str(e.value)
    assert e.value.fix


def test_missing_suite_yml(tmp_path):
    with pytest.raises(FleetError, match="suite.yml not found"):
        load_suite(tmp_path)
