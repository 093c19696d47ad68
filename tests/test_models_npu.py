"""NPU graphs and the target build (`fleet models build MODEL --target hailo8l|hailo8|rk3588`).

Real exports, real calibration sets and real QDQ models from the installed weights; only the
vendor compilers are fakes (test_compile_adapters.py has them), because the Hailo DFC and
rknn-toolkit2 are not installed in CI. The builds are session-scoped in a tmp dir: one whisper
build for hailo8l without a compiler (the real state here), one MiniLM build for rk3588 with the
fake toolkit venv, and one MiniLM hailo8 build with the fake DFC that reuses the exported graph.
Needs the cpu artifacts (the calibration of the decoder reads the cpu encoder and tokenizer).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from fleet.cli import main as fleet_main
from fleet.errors import FleetError
from fleet.models import manifest as mf
from fleet.models.build import Report, build
from fleet.models.npu_graphs import (
    DEC_SEQ,
    NPU_OPSET,
    TOL_ENCODER,
    TOL_LOGITS,
    VOCAB_SPLITS,
    greedy_decode_fixed,
)

pytestmark = pytest.mark.slow
CALIB_N = 8
WHISPER_IO = {
    "encoder_npu": ([{"name": "mel", "shape": [1, 1, 1000, 80], "dtype": "float32"}],
                    [{"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}]),
    "decoder_npu": ([{"name": "tokens", "shape": [1, 32], "dtype": "int64"},
                     {"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}],
                    [{"name": f"logits_{i}", "shape": [1, 32, 12966], "dtype": "float32"}
                     for i in range(4)]),
}


@pytest.fixture(scope="session")
def no_dfc():
    """The Hailo DFC is not importable (as on every machine without the Developer Zone wheel)."""
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "hailo_sdk_client", None)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def whisper_hailo8l(tmp_path_factory, no_dfc):
    out = tmp_path_factory.mktemp("npu") / "artifacts"
    report = Report()
    entries = build("whisper-tiny.en", "hailo8l", out, report=report, calib_n=CALIB_N)
    return out, entries, report.metrics


def by_key(entries):
    return {(e["role"], e["variant"]): e for e in entries}


def test_whisper_entries_without_compiler(whisper_hailo8l):
    out, entries, metrics = whisper_hailo8l
    keys = by_key(entries)
    assert set(keys) == {(r, v) for r in WHISPER_IO for v in ("fp32", "int8")}
    assert metrics["compiled"] is False and "Developer Zone" in metrics["compile_reason"]
    for (role, variant), e in keys.items():
        assert e["target"] == "hailo8l" and e["format"] == "onnx"
        assert e["compiled"] is False and "not on PyPI" in e["compile_reason"]
        assert (e["inputs"], e["outputs"]) == WHISPER_IO[role]
        assert e["exporter"]["opset"] == NPU_OPSET and e["exporter"]["onnxsim"] != "missing"
        mf.verify_artifact(e, out)
        if variant == "fp32":
            assert e["quantization"] == "none" and e["toolchain"]["name"] == "onnxruntime"
            assert "calibration" not in e
        else:
            assert e["quantization"].startswith("int8-static-qdq")
            assert e["toolchain"]["version"]
            cal = e["calibration"]
            assert cal["path"] == f"hailo8l/whisper-tiny.en/calibration/calib_{role}.npz"
            assert mf.sha256_file(out / cal["path"]) == cal["sha256"]
            with np.load(out / cal["path"]) as z:
                for spec in e["inputs"]:
                    assert list(z[spec["name"]].shape) == [cal["n"], *spec["shape"]]
            assert 1 <= cal["n"] <= CALIB_N
    # the manifest on disk validates with the NPU fields
    assert len(mf.read_manifest(out)) == 4


def test_whisper_verification_recorded(whisper_hailo8l):
    _, entries, _ = whisper_hailo8l
    keys = by_key(entries)
    enc = keys[("encoder_npu", "fp32")]["verification"]
    dec = keys[("decoder_npu", "fp32")]["verification"]
    assert 0 < enc["encoder_npu_vs_cpu"] <= TOL_ENCODER
    assert 0 < dec["decoder_npu_vs_cached"] <= TOL_LOGITS
    assert dec["decoder_npu_positions"] > 10
    assert "dormitories" in dec["decoder_npu_text"].lower()


def test_whisper_graphs_are_npu_shaped(whisper_hailo8l):
    out, _, _ = whisper_hailo8l
    root = out / "hailo8l" / "whisper-tiny.en"
    for role in WHISPER_IO:
        m = onnx.load(str(root / f"{role}.onnx"))
        assert m.ir_version == 8
        assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
        ops = {n.op_type for n in m.graph.node}
        # GELU decomposed (Erf), attention written out (MatMul + Softmax), nothing dynamic
        assert "Gelu" not in ops and "Erf" in ops and "Softmax" in ops
        assert not ops & {"Attention", "MultiHeadAttention", "If", "Loop", "Shape"}
        for v in [*m.graph.input, *m.graph.output]:
            assert all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)
    enc = onnx.load(str(root / "encoder_npu.onnx"))
    convs = [n for n in enc.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    for n in convs:
        attrs = {a.name: list(a.ints) for a in n.attribute}
        assert attrs["kernel_shape"] == [1, 3]
    assert [list(a.ints) for n in convs for a in n.attribute if a.name == "strides"] \
        == [[1, 1], [1, 2]]
    dec = onnx.load(str(root / "decoder_npu.onnx"))
    inits = {i.name: list(i.dims) for i in dec.graph.initializer}
    proj = [n for n in dec.graph.node if n.op_type == "MatMul"
            and any(inits.get(x) == [384, 51864 // VOCAB_SPLITS] for x in n.input)]
    assert len(proj) == VOCAB_SPLITS  # the vocabulary projection, split in 4


def test_fixed_decoder_greedy_on_real_clip(whisper_hailo8l):
    """encoder_npu + decoder_npu (fp32, onnxruntime) transcribe the clip like the cpu model."""
    from fleet.models.mel import load_audio, log_mel
    from fleet.models.verify import session, word_error_rate
    from fleet.models.whisper_build import VERIFY_TEXT, find_verify_clip

    out, entries, _ = whisper_hailo8l
    root = out / "hailo8l" / "whisper-tiny.en"
    cpu = Path(__file__).resolve().parents[1] / "artifacts" / "cpu" / "whisper-tiny.en"
    gen = json.loads((cpu / "generation.json").read_text())
    mel = log_mel(load_audio(find_verify_clip()), np.load(cpu / "mel_filters.npy"))
    nhwc = np.ascontiguousarray(mel.T[None, None])  # [1, 1, 1000, 80]
    enc = session(root / "encoder_npu.onnx").run(["encoder_out"], {"mel": nhwc})[0]
    tokens = greedy_decode_fixed(session(root / "decoder_npu.onnx"), enc, gen)
    assert 0 < len(tokens) <= DEC_SEQ - len(gen["prompt"])
    from tokenizers import Tokenizer

    text = Tokenizer.from_file(str(cpu / "tokenizer.json")).decode(tokens,
                                                                   skip_special_tokens=True)
    assert text.strip() == by_key(entries)[("decoder_npu", "fp32")]["verification"][
        "decoder_npu_text"]
    assert word_error_rate(VERIFY_TEXT, text) <= 0.15  # "twenties" vs "20s" costs one word


def test_cached_rebuild_and_require_compiler(whisper_hailo8l):
    out, entries, _ = whisper_hailo8l
    before = (out / mf.MANIFEST).read_bytes()
    report = Report()
    again = build("whisper-tiny.en", "hailo8l", out, report=report, calib_n=CALIB_N)
    assert report.metrics["cached"] is True and again == entries
    with pytest.raises(FleetError) as ei:
        build("whisper-tiny.en", "hailo8l", out, force=True, require_compiler=True)
    assert ei.value.exit_code == 3 and "hailo_sdk_client" in ei.value.message
    assert "--require-compiler" in ei.value.fix
    rc = fleet_main(["models", "build", "whisper-tiny.en", "--target", "hailo8l", "--out",
                     str(out), "--require-compiler", "--force"])
    assert rc == 3
    assert (out / mf.MANIFEST).read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".build-")]


def test_cache_invalidated_by_a_changed_calibration_file(whisper_hailo8l, tmp_path):
    from fleet.models.build import source_info
    from fleet.models.target_build import compiler_state, npu_exporter_info, up_to_date

    out, entries, _ = whisper_hailo8l
    copy = tmp_path / "artifacts"
    shutil.copytree(out, copy)
    args = ("whisper-tiny.en", "hailo8l", copy, source_info("whisper-tiny.en"),
            npu_exporter_info(), compiler_state("hailo8l"))
    assert up_to_date(*args) is not None
    cal = copy / by_key(entries)[("encoder_npu", "int8")]["calibration"]["path"]
    cal.write_bytes(cal.read_bytes() + b"\0")
    assert up_to_date(*args) is None


def test_unknown_model_for_npu_target(tmp_path, no_dfc):
    with pytest.raises(FleetError) as ei:
        build("no-such-model", "rk3588", tmp_path)
    assert ei.value.exit_code == 2
    assert not (tmp_path / "manifest.json").exists()


# ---------------------------------------------------------------- compiled paths (fakes)


@pytest.fixture(scope="session")
def minilm_rk3588(tmp_path_factory):
    from test_compile_adapters import make_fake_rknn_venv

    root = tmp_path_factory.mktemp("rk")
    venv = make_fake_rknn_venv(root / "tc")
    log = root / "calls.jsonl"
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_RKNN_LOG", str(log))
    mp.setenv("FLEET_RKNN_VENV", str(venv))
    try:
        report = Report()
        out = root / "artifacts"
        entries = build("minilm-l6-v2", "rk3588", out, report=report, calib_n=CALIB_N)
    finally:
        mp.undo()
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    return out, entries, report.metrics, calls


def test_minilm_rk3588_compiled_entry(minilm_rk3588):
    out, entries, metrics, calls = minilm_rk3588
    keys = by_key(entries)
    assert set(keys) == {("encoder_npu", v) for v in ("fp32", "int8", "npu")}
    npu, int8 = keys[("encoder_npu", "npu")], keys[("encoder_npu", "int8")]
    assert npu["format"] == "rknn" and npu["path"] == "rk3588/minilm-l6-v2/encoder_npu.rknn"
    assert npu["toolchain"] == {"name": "rknn-toolkit2", "version": "2.5.0"}
    assert npu["quantization"] == "rknn-w8a8-normal-channel-auto-hybrid"
    assert all(e["compiled"] is True and "compile_reason" not in e for e in entries)
    assert npu["calibration"] == int8["calibration"]
    assert (out / npu["path"]).read_bytes() == b"RKNN-FAKE"
    assert metrics["encoder_npu_cos_min"] >= 0.999
    by = {c["call"]: c for c in calls}
    assert by["config"]["target_platform"] == "rk3588"
    assert by["load_onnx"]["input_size_list"] == [[1, 256], [1, 256]]
    assert by["build"]["samples"] == npu["calibration"]["n"]
    assert by["build"]["shapes"] == [[1, 256], [1, 256]]
    assert by["build"]["dtypes"] == ["int64", "int64"]
    assert by["init_runtime"]["target"] is None  # the toolkit's simulator ran
    (row,) = npu["compile_metrics"]["simulator_vs_fp32"]
    assert row["output"] == "sentence_embedding" and -1.0 <= row["cosine"] <= 1.0


def test_minilm_rk3588_rebuilds_when_toolchain_goes(minilm_rk3588, monkeypatch, tmp_path):
    from fleet.models.build import source_info
    from fleet.models.target_build import compiler_state, npu_exporter_info, up_to_date

    out, _, _, _ = minilm_rk3588
    monkeypatch.setenv("FLEET_RKNN_VENV", str(tmp_path / "none"))
    state = compiler_state("rk3588")
    assert state["available"] is False and "fleet toolchain install rknn" in state["reason"]
    assert up_to_date("minilm-l6-v2", "rk3588", out, source_info("minilm-l6-v2"),
                      npu_exporter_info(), state) is None


def test_minilm_hailo8_with_fake_dfc(minilm_rk3588, tmp_path, monkeypatch):
    """The Hailo path of the target build: hw_arch, NHWC-free 2-D calibration, HEF entry."""
    import types

    from test_compile_adapters import FakeRunner

    from fleet.models import npu_graphs

    rk_out = minilm_rk3588[0]

    def reuse_exported(model, work, report):  # the real graph exported by the rk3588 build
        shutil.copyfile(rk_out / "rk3588" / model / "encoder_npu.onnx", work / "encoder_npu.onnx")
        roles = npu_graphs.graph_roles(model)
        return [npu_graphs.NpuGraph(r, f"{r}.onnx", *roles[r]) for r in roles]

    mod = types.ModuleType("hailo_sdk_client")
    mod.ClientRunner, mod.__version__ = FakeRunner, "3.33.0"
    FakeRunner.calls, FakeRunner.fail = [], None
    monkeypatch.setitem(sys.modules, "hailo_sdk_client", mod)
    monkeypatch.setattr(npu_graphs, "build_graphs", reuse_exported)
    out = tmp_path / "artifacts"
    entries = build("minilm-l6-v2", "hailo8", out, calib_n=CALIB_N)
    hef = by_key(entries)[("encoder_npu", "npu")]
    assert hef["format"] == "hef" and hef["toolchain"] == {"name": "hailo_dfc",
                                                           "version": "3.33.0"}
    assert (out / hef["path"]).read_bytes() == b"HEF-FAKE-BYTES"
    calls = dict(FakeRunner.calls)
    assert calls["ClientRunner"]["hw_arch"] == "hailo8"
    assert calls["translate_onnx_model"]["net_input_shapes"] == {
        "input_ids": [1, 256], "attention_mask": [1, 256]}
    data = calls["optimize"]["calib_data"]
    n = hef["calibration"]["n"]
    assert {k: v.shape for k, v in data.items()} == {"encoder_npu/input_layer1": (n, 256),
                                                     "encoder_npu/input_layer2": (n, 256)}
    # a DFC failure leaves the previous build in place
    before = (out / mf.MANIFEST).read_bytes()
    FakeRunner.fail = "translate_onnx_model"
    with pytest.raises(FleetError) as ei:
        build("minilm-l6-v2", "hailo8", out, force=True, calib_n=CALIB_N)
    assert ei.value.exit_code == 3 and "translate_onnx_model" in ei.value.message
    assert (out / mf.MANIFEST).read_bytes() == before
    assert (out / hef["path"]).read_bytes() == b"HEF-FAKE-BYTES"
