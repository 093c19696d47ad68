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
    (d / "test_s.py").write_text("def test_s():\n    pass\n")
    return d


BASE = "pipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\ndataset: speech\n"


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
    (BASE + "thresholds: {gpu: {wer_max: 0.1}}\n", "unknown key 'thresholds.gpu'"),
    (BASE + "bogus: 1\n", "unknown key 'bogus'"),
    (BASE + "request_timeout_s: -1\n", "request_timeout_s must be > 0, got -1"),
    (BASE + "request_timeout_s: true\n", "request_timeout_s must be a number, got True"),
    (BASE + "warmup_requests: 1.5\n", "warmup_requests must be a whole number, got 1.5"),
    (BASE + "requires: {boards: [pi5]}\n", "requires.boards[0]: unknown board 'pi5'"),
    (BASE + "requires: [cpu]\n", "requires must be a mapping or null"),
    (BASE + "requires: {accelerators: cpu}\n", "requires.accelerators must be a list or null, got 'cpu'"),
    (BASE + "requires: {accelerators: [5]}\n", "requires.accelerators[0] must be a string, got 5"),
    (BASE + "options: [precision]\n", "options must be a mapping or null"),
    (BASE + "measurement: {max_queries: 60}\n", "'measurement.max_queries' is no longer a key"),
    (BASE + "measurement: {min_queries: x}\n", "measurement.min_queries must be a whole number, got 'x'"),
    (BASE + "options: {threads: many}\n", "options.threads: option threads='many' is not a valid int"),
    (BASE + "parity: {bounds: {emulated: {cos_min: 0.9}}}\n", "unknown key 'parity.bounds.emulated.cos_min'"),
    (BASE + "measurement: {cooldown: {below_c: 60, zone: ''}}\n", "measurement.cooldown.zone must not be empty"),
    (BASE + "measurement: {sample_hz: 500}\n", "measurement.sample_hz must be <= 100, got 500"),
    (BASE + "measurement: {min_duration_s: 20, max_duration_s: 10}\n", "max_duration_s"),
    (BASE.replace("asr.whisper_hybrid", "rag.hybrid") + "options: {fusion: rff}\n", "did you mean 'rrf'?"),
    ("model: whisper-tiny.en\ndataset: speech\n", "missing key 'pipeline'"),
    ("- a\n- b\n", "expected a mapping, found list"),
])
def test_bad_suite_files_name_the_problem(tmp_path, bad, needle):
    with pytest.raises(FleetError) as e:
        load_suite(_suite(tmp_path, bad))
    assert needle in str(e.value)
    assert e.value.fix and e.value.exit_code == 2


def test_missing_suite_yml(tmp_path):
    with pytest.raises(FleetError, match="suite.yml not found"):
        load_suite(tmp_path)


def test_no_test_files(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "suite.yml").write_text(BASE)
    with pytest.raises(FleetError, match="no test files"):
        load_suite(d)
    (d / "check_test.py").write_text("")  # pytest's other default pattern, *_test.py
    assert load_suite(d).model == "whisper-tiny.en"


def test_unknown_option_names_the_closest_and_the_pipeline(tmp_path):
    with pytest.raises(FleetError) as e:
        load_suite(_suite(tmp_path, BASE + "options: {precison: int8}\n"))
    assert e.value.message.endswith("unknown option 'options.precison' of pipeline asr.whisper_hybrid")
    assert e.value.fix.startswith("did you mean 'precision'? options of asr.whisper_hybrid: precision, ")
