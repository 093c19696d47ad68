"""The bad-input corpus (tests/bad_input/): one real bad file per case, fed through the entry point a
user hits, layer by layer. This module is the one list of every case; each asserts

- the documented failure: exit status 2 (bad input) from `fleet`, or an error reply of the
  documented ``error.type`` from `fleet-agent serve` (and exit 2/3 from `fleet-agent run`);
- a message that names the thing (path, line number for YAML, host, key, file) AND a fix;
- nothing half-written: no results store, no run folder, the board's fleet_root and the
  controller's artifacts byte-for-byte as before.

Layers and entry points:
    inventory  `fleet deploy --inventory F` (and `fleet test`, `fleet doctor` agree), in-process
    suite      `fleet test SUITE --inventory inventory/lab.yml` with the bad suite.yml in a tmp suite
    audio      `fleet-agent serve`: run asr.whisper_hybrid on the file
    artifacts  `fleet-agent serve`: run asr.whisper_hybrid with model_dir = a broken model folder
    corpus     `fleet-agent serve`: run rag.hybrid on the collection folder
    protocol   `fleet-agent serve`: the raw line
    models     `fleet models import FILE --name N --target T --out TMP`

Cases also covered at unit level elsewhere: protocol decoding (test_agent_protocol.py), more
collection checks (test_rag_collection.py: qrels, ids, malformed lines), HEF arch in `fleet doctor`
(test_doctor.py::test_hailo8_hef_on_hailo8l_refused), sha256 mismatch in-process
(test_agent_pipeline.py::test_sha256_mismatch_is_refused).

Needs the built artifacts (whisper-tiny.en, minilm-l6-v2: `fleet models build`); no emulated fleet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device_agent.manifest import sha256_file
from device_agent.protocol import MAX_MESSAGE_BYTES, decode_reply
from fleet.cli import main as fleet_main
from fleet.deploy.local import lay_out_board

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "bad_input"
ARTIFACTS = Path(os.environ.get("FLEET_ARTIFACTS", REPO / "artifacts"))
FLEET_AGENT = [sys.executable, "-m", "device_agent.cli"]


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` → sha256 of a file's bytes, or the target of a symlink (targets
    are the controller's artifacts, digested separately)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


# =============================================================================================
# inventory: `fleet deploy --inventory F`
# =============================================================================================
INVENTORY_CASES = [
    # (file, words the message must hold, words the fix must hold)
    ("yaml_syntax.yml", ["YAML syntax error at line 6"], "fix the YAML at that line"),
    ("unknown_board.yml", ["host 'jetson-a' has unknown board 'jetson-orin'"],
     "use one of: cpu, pi5-hailo10h, pi5-hailo8l, rk3588"),
    ("missing_fleet_root.yml", ["host 'rock5b-a' has no 'fleet_root'"], "set fleet_root for 'rock5b-a'"),
    ("duplicate_hosts.yml", ["'pi5-a' appears twice", "at line 4 and at line 9"], "list each host once"),
    ("unknown_accelerator.yml", ["host 'pi5-a' has unknown accelerator 'hailo15h'"],
     "use one of: cpu, hailo10h, hailo8, hailo8l, rk3588"),
]


def _fleet(capsys, *argv) -> tuple[int, str]:
    rc = fleet_main([str(a) for a in argv])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("name, words, fix", INVENTORY_CASES, ids=[c[0] for c in INVENTORY_CASES])
def test_inventory(name, words, fix, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))   # runs/, .fleet/ would go here
    inv = CORPUS / "inventory" / name
    before = inv.read_bytes()
    rc, err = _fleet(capsys, "deploy", "--inventory", inv, "--runs-dir", tmp_path / "runs")
    assert rc == 2, err
    msg, _, fix_line = err.partition("\n  fix: ")
    assert msg.startswith(f"fleet: error: inventory {inv}"), err
    for w in words:
        assert w in msg, err
    assert fix in fix_line, err
    assert inv.read_bytes() == before and list(tmp_path.iterdir()) == []   # nothing written


def test_inventory_every_command_says_the_same(tmp_path):
    """`fleet test` and `fleet doctor` (real `fleet` processes) refuse a bad inventory the same way,
    before anything is written: no results store, no run folder."""
    inv = CORPUS / "inventory" / "yaml_syntax.yml"
    env = {**os.environ, "FLEET_HOME": str(tmp_path)}
    fleet = [sys.executable, "-m", "fleet.cli"]
    for cmd in (["test", REPO / "suites" / "whisper_hybrid", "--inventory", inv, "--db", tmp_path / "r.db"],
                ["doctor", "--inventory", inv]):
        p = subprocess.run(fleet + [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 2, p.stderr
        assert f"inventory {inv}: YAML syntax error at line 6" in p.stderr and "\n  fix: " in p.stderr
    assert list(tmp_path.iterdir()) == []


# =============================================================================================
# suite.yml: `fleet test SUITE --inventory inventory/lab.yml`
# =============================================================================================
SUITE_CASES = [
    # (file, words the message must hold, words the fix must hold); each fails on its own problem:
    # the suite folder gets a test file, except for no_tests.yml
    ("unknown_pipeline.yml", ["pipeline: unknown pipeline 'asr.whisper_large'"],
     "did you mean 'asr.whisper_hybrid'? known pipelines: asr.whisper_hybrid, model.bench, rag.hybrid"),
    ("unknown_model.yml", ["model: unknown model 'whisper-tiny'"], "did you mean 'whisper-tiny.en'? known models: "),
    ("unknown_dataset.yml", ["dataset: unknown dataset 'speach'"], "did you mean 'speech'? known datasets: "),
    ("unknown_option.yml", ["unknown option 'options.precison' of pipeline asr.whisper_hybrid"],
     "did you mean 'precision'? options of asr.whisper_hybrid: precision, "),
    ("bad_option_value.yml", ["options.precision: option precision='int4' is not one of ['fp32', 'int8']"],
     "did you mean 'int8'?"),
    ("unknown_threshold_key.yml", ["unknown key 'thresholds.emulated.wer_maximum'"],
     "did you mean 'wer_max'? known keys of thresholds.emulated: wer_max, cer_max"),
    ("unknown_measurement_key.yml", ["unknown key 'measurement.min_duraton_s'"],
     "did you mean 'min_duration_s'? known keys of measurement: min_queries"),
    ("wrong_types.yml", ["thresholds.emulated.wer_max must be a number or null, got '5%'"],
     "write a number or null (e.g. wer_max: 0.05)"),
    ("wrong_type_timeout.yml", ["request_timeout_s must be a number, got 'two minutes'"],
     "request_timeout_s: per-request timeout (s)"),
    ("several_problems.yml", ["4 problems:", "missing key 'pipeline'",
                              "unknown key 'pipline' (did you mean 'pipeline'?",
                              "requires.accelerators[0]: unknown accelerator 'hailo8x' (did you mean 'hailo8'?",
                              "warmup_requests must be >= 0, got -1"], "correct each key named above"),
    ("no_tests.yml", ["no test files (test_*.py) beside suite.yml"], "add the suite's tests as "),
    ("truncated.yml", ["YAML syntax error at line 5"], "fix the YAML at that line"),
]


@pytest.mark.parametrize("name, words, fix", SUITE_CASES, ids=[c[0] for c in SUITE_CASES])
def test_suite_yml(name, words, fix, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FLEET_HOME", str(home))
    suite = tmp_path / "suites" / "bad"
    suite.mkdir(parents=True)
    shutil.copy(CORPUS / "suite" / name, suite / "suite.yml")
    if name != "no_tests.yml":
        (suite / "test_bad.py").write_text("def test_nothing():\n    pass\n")
    before = tree_digest(suite)
    rc, err = _fleet(capsys, "test", suite, "--inventory", REPO / "inventory" / "lab.yml", "--db", home / "r.db")
    assert rc == 2, err
    msg, _, fix_line = err.partition("\n  fix: ")
    where = suite if name == "no_tests.yml" else suite / "suite.yml"
    assert msg.startswith(f"fleet: error: {where}: "), err
    for w in words:
        assert w in msg, err
    assert fix in fix_line, err
    assert tree_digest(suite) == before and list(home.iterdir()) == []   # no store, no runs/, no lease


# =============================================================================================
# the agent: audio, artifacts, corpus, protocol over one `fleet-agent serve` session
# =============================================================================================
WHISPER, MINILM = "whisper-tiny.en", "minilm-l6-v2"
ASR, RAG = "asr.whisper_hybrid", "rag.hybrid"


def _run(input: str, pipeline: str = ASR, **extra) -> dict:
    return {"op": "run", "args": {"pipeline": pipeline, "input": input, "telemetry": False, **extra}}


#: (layer, case, request (dict, or raw bytes), error type, words in message, words in fix)
AGENT_CASES = [
    ("audio", "empty", _run("data/bad_audio/empty.wav"), "BadInput",
     ["empty.wav", "holds no audio samples"], "give a non-empty recording"),
    ("audio", "not_audio", _run("data/bad_audio/not_audio.wav"), "BadInput",
     ["not_audio.wav", "is not a readable audio file", "Format not recognised"], "give a WAV or FLAC file"),
    ("audio", "zero_length", _run("data/bad_audio/zero_length.wav"), "BadInput",
     ["zero_length.wav", "is empty (0 bytes)"], "redeploy the dataset"),
    ("audio", "nan_samples", _run("data/bad_audio/nan_samples.wav"), "BadInput",
     ["nan_samples.wav", "contains NaN or infinite samples (10 of 1600 frames)"], "re-export the recording"),
    ("audio", "over_limit", _run("data/bad_audio/three_seconds.flac", options={"max_audio_s": 2}), "BadInput",
     ["three_seconds.flac", "is 3.0 s long, over the 2 s limit"], "raise the option max_audio_s"),
    ("artifacts", "corrupt_file", _run("data/bad_audio/nan_samples.wav", model_dir="models/whisper-corrupt"),
     "ModelError", ["sha256 mismatch for", "models/whisper-corrupt/generation.json", "manifest expects"],
     "redeploy the models (fleet deploy)"),
    ("artifacts", "manifest_without_entry",
     _run("data/bad_audio/nan_samples.wav", model_dir="models/whisper-noentry"), "ModelError",
     ["models/whisper-noentry", "manifest has no tokenizer"], "deploy that artifact (fleet deploy)"),
    ("artifacts", "hef_wrong_arch", _run("data/bad_audio/nan_samples.wav", model_dir="models/whisper-hef8"),
     "ModelError", ["models/whisper-hef8/encoder.hef is a HEF compiled for hailo8",
                    "this board's accelerator is hailo8l", "HAILO_INVALID_HEF"], 'hw_arch="hailo8l"'),
    ("corpus", "empty_documents", _run("data/empty_corpus", RAG), "BadInput",
     ["empty_corpus/corpus.jsonl has no documents (only 2 blank lines)"], 'write one document a line'),
    ("corpus", "all_documents_empty", _run("data/all_documents_empty", RAG), "BadInput",
     ["all_documents_empty/corpus.jsonl: all 3 documents are empty (no title or text)"], 'fill in "title"/"text"'),
    ("corpus", "non_utf8", _run("data/non_utf8", RAG), "BadInput",
     ["non_utf8/corpus.jsonl:2: not UTF-8 (byte 0xe9"], "re-encode the file as UTF-8"),
    ("protocol", "not_json", (CORPUS / "protocol" / "not_json.jsonl").read_bytes(), "BadInput",
     ["line is not valid JSON: Expecting value at character 1"], "send one JSON object per line"),
    ("protocol", "truncated_json", (CORPUS / "protocol" / "truncated_json.jsonl").read_bytes() + b"\n",
     "BadInput", ["line is not valid JSON", "the line ends before the JSON does: truncated?"],
     "send one JSON object per line"),
    ("protocol", "unknown_op", (CORPUS / "protocol" / "unknown_op.jsonl").read_bytes(), "UnknownOp",
     ["unknown op 'transcribe'"], "use one of info, load, run, telemetry, unload, shutdown"),
    ("protocol", "oversized", b'{"id": 9, "op": "info", "args": {"pad": "' + b"x" * (MAX_MESSAGE_BYTES + 10)
     + b'"}}\n', "Oversized", [f"over the {MAX_MESSAGE_BYTES}-byte limit"], "send smaller requests"),
]


def _model_copy(root: Path, name: str) -> Path:
    """models/<name>: the deployed whisper folder's symlinks and manifest, to be broken."""
    src, dst = root / "models" / WHISPER, root / "models" / name
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _make_board(root: Path) -> Path:
    """An emulated Pi 5 + Hailo-8L fleet_root laid out as `fleet deploy` does (models as symlinks
    into artifacts/), plus the corpus's bad data and three broken model folders."""
    lay_out_board(root, ARTIFACTS, board="pi5-hailo8l", accelerator="hailo8l", emulated=True,
                  models=(WHISPER, MINILM))
    shutil.copytree(CORPUS / "audio", root / "data" / "bad_audio")
    for col in ("empty_corpus", "all_documents_empty", "non_utf8"):
        shutil.copytree(CORPUS / "corpus" / col, root / "data" / col)
    # corrupt file: a generation.json cut short in the copy (the manifest's sha256 is the real one's)
    d = _model_copy(root, "whisper-corrupt")
    (d / "generation.json").unlink()
    shutil.copy(CORPUS / "artifacts" / "generation_truncated.json", d / "generation.json")
    # manifest without the tokenizer entry (the file is there, the manifest does not list it)
    d = _model_copy(root, "whisper-noentry")
    man = json.loads((d / "manifest.json").read_text())
    man["artifacts"] = [a for a in man["artifacts"] if a.get("role") != "tokenizer"]
    (d / "manifest.json").unlink()
    (d / "manifest.json").write_text(json.dumps(man, indent=2))
    # a HEF encoder compiled for Hailo-8 (hw_arch hailo8) deployed on a Hailo-8L board
    d = _model_copy(root, "whisper-hef8")
    hef = CORPUS / "artifacts" / "encoder_hailo8.hef"
    shutil.copy(hef, d / "encoder.hef")
    man = json.loads((d / "manifest.json").read_text())
    man["artifacts"].append({"model": WHISPER, "role": "encoder", "variant": "int8", "target": "hailo8",
                             "format": "hef", "path": "encoder.hef", "sha256": sha256_file(hef),
                             "bytes": hef.stat().st_size, "hw_arch": "hailo8",
                             "inputs": [{"name": "mel", "shape": [1, 80, 1000], "dtype": "float32"}],
                             "outputs": [{"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}]})
    (d / "manifest.json").unlink()
    (d / "manifest.json").write_text(json.dumps(man, indent=2))
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One `fleet-agent serve` session fed every agent case in turn (then shutdown); yields the
    board root, the replies by case, the exit status and the before/after digests."""
    root = _make_board(tmp_path_factory.mktemp("bad-board") / "fleet")
    linked = sorted({p.resolve() for p in root.rglob("*") if p.is_symlink() and p.resolve().is_file()})
    artifacts_before = {str(p): sha256_file(p) for p in linked}   # the artifacts the board links to
    before = tree_digest(root)
    lines = []
    for i, (_, _, req, *_rest) in enumerate(AGENT_CASES, 1):
        lines.append(req if isinstance(req, bytes) else json.dumps({"id": i, **req}).encode() + b"\n")
    lines.append(b'{"id": 999, "op": "shutdown"}\n')
    p = subprocess.run(FLEET_AGENT + ["--root", str(root), "serve"], input=b"".join(lines),
                       capture_output=True, timeout=300)
    replies = [decode_reply(ln) for ln in p.stdout.splitlines()]
    assert len(replies) == len(lines), p.stderr.decode()[-3000:]
    yield {"root": root, "replies": {(c[0], c[1]): r for c, r in zip(AGENT_CASES, replies)},
           "last": replies[-1], "rc": p.returncode, "before": before, "after": tree_digest(root),
           "artifacts_before": artifacts_before, "artifacts_after": {str(p): sha256_file(p) for p in linked}}


@pytest.mark.parametrize("layer, case, req, etype, words, fix", AGENT_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in AGENT_CASES])
def test_agent(served, layer, case, req, etype, words, fix):
    r = served["replies"][(layer, case)]
    assert r["ok"] is False, r
    err = r["error"]
    assert err["type"] == etype, err
    for w in words:
        assert w in err["message"], err
    assert fix in err["fix"], err
    if not isinstance(req, bytes) or case == "unknown_op":
        assert r["id"] is not None       # the controller can match the reply to its request


def test_agent_session_survives_and_writes_nothing(served):
    """After every bad request the agent still answers (shutdown ok, exit 0), and neither the
    board's fleet_root nor the controller's artifacts changed (no cache, no partial file)."""
    assert served["last"] == {**served["last"], "id": 999, "ok": True}
    assert served["rc"] == 0
    assert served["after"] == served["before"]
    assert served["artifacts_after"] == served["artifacts_before"]


@pytest.mark.parametrize("args, rc, etype", [
    (["run", ASR, "--input", "data/bad_audio/nan_samples.wav"], 2, "BadInput"),
    (["run", ASR, "--input", "data/bad_audio/nan_samples.wav", "--model-dir", "models/whisper-hef8"], 3, "ModelError"),
    (["run", RAG, "--collection", "data/non_utf8"], 2, "BadInput"),
], ids=["audio", "artifact", "corpus"])
def test_agent_cli_exit_codes(served, args, rc, etype):
    """`fleet-agent run` (one request from the shell) exits 2 for bad input, 3 for a model error,
    and prints the error with its fix."""
    p = subprocess.run(FLEET_AGENT + ["--root", str(served["root"])] + args + ["--json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == rc, p.stderr
    assert json.loads(p.stdout)["error"]["type"] == etype
    assert f"fleet-agent: {etype}: " in p.stderr and "\n  fix: " in p.stderr


# =============================================================================================
# models: `fleet models import FILE --name N --target T [--inputs SPEC] --out TMP`
# =============================================================================================
MODEL_CASES = [
    # (file, extra args, words the message must hold, words the fix must hold)
    ("models/empty.onnx", [], ["model file", "empty.onnx is empty (0 bytes)"], "pass the model file itself"),
    ("models/not_onnx.onnx", [], ["not_onnx.onnx is not a readable ONNX model"], "pass the .onnx file exported"),
    ("models/model.tflite", [], ["model.tflite: unknown model format '.tflite'"], "import a .onnx, .hef"),
    ("artifacts/encoder_hailo8.hef", [], ["encoder_hailo8.hef is a HEF, which only a Hailo NPU runs, but --target is cpu"],
     "use --target hailo8 | hailo8l | hailo10h"),
    ("models/tiny.onnx", ["--inputs", "pixels:float32[2,4]"], ["--inputs names ['pixels'] but tiny.onnx has ['x']"],
     "use the file's tensor names"),
    ("models/tiny.onnx", ["--inputs", "x:int64[2,4]"], ["--inputs: x is float32 in tiny.onnx, not int64"],
     "write x:float32[...]"),
    ("models/tiny.onnx", ["--name", "whisper-tiny.en"], ["--name 'whisper-tiny.en' is a model fleet builds itself"],
     "import it under another name"),
]


@pytest.mark.parametrize("name, extra, words, fix", MODEL_CASES,
                         ids=[f"{c[0]}{'+' + c[1][0] if c[1] else ''}" for c in MODEL_CASES])
def test_models_import(name, extra, words, fix, tmp_path, capsys):
    f = CORPUS / name
    before = f.read_bytes()
    args = ["models", "import", f, "--target", "cpu", "--out", tmp_path / "artifacts"]
    rc, err = _fleet(capsys, *args, *(extra if "--name" in extra else ["--name", "lab-model", *extra]))
    assert rc == 2, err
    msg, _, fix_line = err.partition("\n  fix: ")
    for w in words:
        assert w in msg, err
    assert fix in fix_line, err
    assert f.read_bytes() == before and list(tmp_path.iterdir()) == []   # nothing written
