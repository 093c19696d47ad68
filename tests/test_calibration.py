"""Calibration sets (fleet.models.calibration): real suite data, laid out as the graph's inputs
declare, deterministic bytes, and disjoint from the evaluation items."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from emulation_artifacts import ARTIFACTS, nhwc_encoder
from onnx import TensorProto, helper

from fleet.errors import FleetError
from fleet.models.calibration import (
    EOT,
    NO_TIMESTAMPS,
    SOT,
    build_calibration_set,
    in_calibration_split,
    load_calibration,
    rag_texts,
    speech_items,
    split_key,
)

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

ENC = ARTIFACTS / "cpu" / "whisper-tiny.en" / "encoder.onnx"
MINILM = ARTIFACTS / "cpu" / "minilm-l6-v2" / "encoder_static.onnx"


def test_split_is_disjoint_and_covers_everything():
    cal, ev = speech_items(split="calibration"), speech_items(split="evaluation")
    assert cal and ev and not {c["id"] for c in cal} & {c["id"] for c in ev}
    assert len(cal) + len(ev) == 20  # the speech data set
    tc, te = rag_texts(split="calibration"), rag_texts(split="evaluation")
    assert not {t["key"] for t in tc} & {t["key"] for t in te}
    assert 0.15 < len(tc) / (len(tc) + len(te)) < 0.35  # about 1 in 4
    assert all(in_calibration_split(t["key"]) for t in tc)
    assert in_calibration_split(split_key("speech", "clip", "x")) == in_calibration_split("speech:clip:x")


def test_whisper_encoder_set_is_real_log_mel_deterministic(tmp_path):
    a = build_calibration_set("whisper-tiny.en", ENC, tmp_path / "a", n=6)
    b = build_calibration_set("whisper-tiny.en", ENC, tmp_path / "b", n=6)
    assert a.sha256 == b.sha256 == hashlib.sha256(a.path.read_bytes()).hexdigest()
    assert a.n == 6 and "speech clips" in a.source
    arr = load_calibration(a)
    assert set(arr) == {"mel"} and arr["mel"].shape == (6, 1, 80, 1000) and arr["mel"].dtype == np.float32
    m = arr["mel"]
    assert -1.6 < m.min() and m.max() < 2.5 and m.std() > 0.1  # Whisper log-mel range, not zeros/noise
    side = json.loads(a.path.with_suffix(".json").read_text())
    cal_ids = {c["id"] for c in speech_items(split="calibration")}
    assert {i["clip"] for i in side["items"]} <= cal_ids  # never an evaluation clip
    # a stale set is refused
    a.path.write_bytes(a.path.read_bytes()[:-1] + b"x")
    with pytest.raises(FleetError, match="sha256"):
        load_calibration(a)


def test_nhwc_encoder_gets_the_transposed_layout(tmp_path):
    nhwc = tmp_path / "encoder_npu.onnx"
    nhwc_encoder(ENC, nhwc)
    a = load_calibration(build_calibration_set("whisper-tiny.en", ENC, tmp_path / "a", n=3))["mel"]
    b = load_calibration(build_calibration_set("whisper-tiny.en", nhwc, tmp_path / "b", n=3))["mel"]
    assert b.shape == (3, 1, 1, 1000, 80)
    assert np.array_equal(b[:, 0, 0], a[:, 0].transpose(0, 2, 1))


def test_decoder_set_pairs_encoder_outputs_with_reference_prefixes(tmp_path):
    # a graph with the full-NPU decoder's inputs (fleet.models.npu_graphs decoder_npu)
    g = helper.make_graph([helper.make_node("Identity", ["encoder_out"], ["y"])], "dec",
                          [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, 32]),
                           helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, [1, 500, 384])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 500, 384])])
    p = tmp_path / "decoder_npu.onnx"
    onnx.save(helper.make_model(g), str(p))
    arr = load_calibration(build_calibration_set("whisper-tiny.en", p, tmp_path / "c", n=8))
    ids, enc = arr["tokens"], arr["encoder_out"]
    assert ids.shape == (8, 1, 32) and ids.dtype == np.int64 and enc.shape == (8, 1, 500, 384)
    assert (ids[:, 0, :2] == [SOT, NO_TIMESTAMPS]).all()
    lengths = [(row != EOT).sum() for row in ids[:, 0]]
    assert len(set(lengths)) > 1  # several prefix lengths
    assert float(np.abs(enc).max()) > 1.0  # real encoder activations


def test_minilm_set_is_tokenized_text(tmp_path):
    c = build_calibration_set("minilm-l6-v2", MINILM, tmp_path, n=10)
    arr = load_calibration(c)
    ids, mask = arr["input_ids"], arr["attention_mask"]
    assert ids.shape == mask.shape == (10, 1, 256) and ids.dtype == np.int64
    assert ((ids != 0) == (mask == 1)).all() and (ids[:, 0, 0] == 101).all()  # [CLS], right-padded
    assert mask.sum(-1).max() == 256 and mask.sum(-1).min() < 64  # long documents and short queries


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(FleetError, match="no calibration data recipe"):
        build_calibration_set("resnet50", MINILM, tmp_path)
    with pytest.raises(FleetError, match="n=0"):
        build_calibration_set("minilm-l6-v2", MINILM, tmp_path, n=0)
    with pytest.raises(FleetError, match="not found"):
        build_calibration_set("minilm-l6-v2", tmp_path / "nope.onnx", tmp_path)
    with pytest.raises(FleetError, match="neither a Whisper encoder"):
        build_calibration_set("whisper-tiny.en", MINILM, tmp_path)
    assert not list(tmp_path.glob("*.npz"))  # nothing half-written
