"""Emulated NPU boards run their target's static QDQ INT8 model (device_agent.emulation): model
selection in both pipelines, the NHWC mel layout of ``encoder_npu``, the fallback and its label,
the real-board path with an ``encoder_npu`` HEF, and which artifacts deploy sends to which board.

The emulation models are real (tests/emulation_artifacts.py: the cpu fp32 graphs calibrated on
suite data and quantized by fleet.models.quantize; built once per test process, ~1-2 min)."""

from __future__ import annotations

import numpy as np
import pytest
from emulation_artifacts import shared_root

from device_agent.backends import create_backends
from device_agent.backends.base import Backend, LoadedModel, TensorInfo
from device_agent.config import load_config
from device_agent.parity import cosine
from device_agent.pipelines.asr_whisper import WhisperHybrid, mel_layout
from device_agent.pipelines.rag_hybrid import RagHybrid
from device_agent.protocol import BadInput, ModelError
from fleet.datasets.local import require
from fleet.deploy.artifacts import load_manifest, select
from fleet.deploy.local import lay_out_board
from fleet.inventory import Board

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

SPEECH = require("speech")  # in the data root ($FLEET_DATA)
CLIP = "data/speech/2035-147960-0005.wav"  # evaluation side of the calibration split


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    return shared_root(tmp_path_factory)


def board(tmp_path, arts, accelerator="hailo8l", emulated=True, model="whisper-tiny.en"):
    cls = {"hailo8l": "pi5-hailo8l", "rk3588": "rk3588", "cpu": "cpu"}[accelerator]
    root = lay_out_board(tmp_path / f"{accelerator}-{emulated}", arts, board=cls, accelerator=accelerator,
                         emulated=emulated, models=(model,), data={"speech": SPEECH})
    return load_config(root)


def whisper(cfg, **opts):
    p = WhisperHybrid(cfg)
    o = p.resolve_options(opts)
    p.load(cfg.root / "models" / "whisper-tiny.en", create_backends(), o)
    return p, o


# -- layout ------------------------------------------------------------------------------------

def test_mel_layout_follows_the_declared_shape():
    mel = np.random.default_rng(0).standard_normal((1, 80, 1000)).astype(np.float32)
    assert np.array_equal(mel_layout(mel, [1, 80, 1000]), mel)
    nhwc = mel_layout(mel, [1, 1, 1000, 80])
    assert nhwc.shape == (1, 1, 1000, 80) and nhwc.flags.c_contiguous
    assert np.array_equal(nhwc[0, 0], mel[0].T)
    assert np.array_equal(mel_layout(mel, (1, 1000, 80))[0], mel[0].T)        # Hailo stream shape
    assert np.array_equal(mel_layout(mel, [1, 80, 1, 1000])[0, :, 0], mel[0])
    assert np.array_equal(mel_layout(mel, [1, 80, "T"]), mel)                 # dynamic frames
    with pytest.raises(BadInput, match=r"\[1, 3, 1000\]"):
        mel_layout(mel, [1, 3, 1000])


# -- whisper -----------------------------------------------------------------------------------

def test_emulated_board_runs_its_targets_qdq_encoder_nhwc(emu, tmp_path):
    cfg = board(tmp_path, emu)
    p, o = whisper(cfg)
    enc = p.info["encoder"]
    assert enc["artifact"] == "encoder_npu.int8.onnx" and enc["backend"] == "onnx" and enc["emulated"]
    assert enc["emulation"] == "onnxruntime static QDQ INT8 (hailo8l)"
    assert enc["quantization"] == "int8-static-qdq-per-channel"
    assert enc["input"]["shape"] == [1, 1, 1000, 80]  # the manifest's NHWC layout is what is fed
    # the transpose is right: the emulated encoder agrees with the fp32 cpu encoder on real speech
    from device_agent.audio import load_audio
    from device_agent.mel import log_mel

    mel = log_mel(load_audio(cfg.root / CLIP), p.filters)
    ref = create_backends()["onnx"].load(cfg.root / "models" / "whisper-tiny.en" / "encoder.onnx")
    y_ref = ref.run({"mel": mel})["encoder_out"]
    assert cosine(y_ref, p._encode(mel)) > 0.98
    # and feeding the NCHW mel reshaped (no transpose) would not agree: the layout matters
    wrong = p.encoder.run({"mel": np.ascontiguousarray(mel.reshape(1, 1, 1000, 80))})["encoder_out"]
    assert cosine(y_ref, wrong) < 0.9
    r = p.run(cfg.root / CLIP, o)
    assert r["stages"]["encoder"]["emulation"] == "onnxruntime static QDQ INT8 (hailo8l)"
    assert "snake" in r["text"].lower()


def test_emulated_board_without_its_build_falls_back_and_says_so(emu, tmp_path):
    cfg = board(tmp_path, emu, accelerator="rk3588")  # emu has no rk3588 entries
    p, o = whisper(cfg)
    enc = p.info["encoder"]
    assert enc["artifact"] == "encoder.int8.onnx" and enc["emulation"] == "cpu int8-dynamic fallback"
    assert "fleet models build whisper-tiny.en --target rk3588" in enc["reason"]
    p2, _ = whisper(board(tmp_path, emu), precision="fp32")
    assert p2.info["encoder"]["artifact"] == "encoder.onnx"
    assert p2.info["encoder"]["emulation"] == "cpu fp32 (precision=fp32)"


def test_cpu_board_has_no_emulation(emu, tmp_path):
    p, _ = whisper(board(tmp_path, emu, accelerator="cpu", emulated=False))
    assert p.info["encoder"]["emulation"] is None and p.info["encoder"]["artifact"] == "encoder.onnx"


class FakeNpu(Backend):
    """A stand-in NPU backend (real boards' path): records what it is fed, returns zeros."""

    name, suffix = "hailo", ".hef"

    def __init__(self):
        self.fed = []

    def available(self):
        return True, ""

    def version(self):
        return "4.23.0"

    def load(self, path, inputs=None, outputs=None, **_):
        fed = self.fed

        class M(LoadedModel):
            backend = "hailo"

            def run(self, x):
                fed.append(next(iter(x.values())))
                return {"encoder_out": np.zeros((1, 500, 384), np.float32)}

        m = M()
        m.path = path
        # HailoRT reports stream shapes without batch, under the HEF's own names
        m.inputs = [TensorInfo("encoder_npu/input_layer1", (1, 1000, 80))]
        m.outputs = [TensorInfo("encoder_out", (500, 384))]
        return m


def with_npu_artifact(emu, tmp_path, model: str, target: str, fmt: str, inputs: list, outputs: list):
    """A copy of the artifacts root ``emu`` plus a (fake) compiled ``encoder_npu`` of ``model``
    for ``target`` (.hef / .rknn), as ``fleet models build --target`` records one."""
    import hashlib
    import json
    import shutil

    arts = tmp_path / "arts"
    shutil.copytree(emu, arts, symlinks=True)
    rel = f"{target}/{model}/encoder_npu.{fmt}"
    (arts / rel).parent.mkdir(parents=True, exist_ok=True)
    (arts / rel).write_bytes(b"NPU fake")
    doc = json.loads((arts / "manifest.json").read_text())
    doc["artifacts"].append({"model": model, "role": "encoder_npu", "variant": "npu", "target": target,
                             "format": fmt, "path": rel, "sha256": hashlib.sha256(b"NPU fake").hexdigest(),
                             "bytes": 8, "inputs": inputs, "outputs": outputs})
    (arts / "manifest.json").write_text(json.dumps(doc))
    return arts


def test_real_board_runs_the_encoder_npu_hef_in_its_declared_layout(emu, tmp_path):
    arts = with_npu_artifact(emu, tmp_path, "whisper-tiny.en", "hailo8l", "hef",
                             [{"name": "mel", "shape": [1, 1, 1000, 80], "dtype": "float32"}],
                             [{"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}])
    cfg = board(tmp_path, arts, emulated=False)
    files = sorted(p.name for p in (cfg.root / "models" / "whisper-tiny.en").iterdir())
    assert "encoder_npu.hef" in files and "encoder_npu.int8.onnx" not in files  # real: HEF only
    backends = {**create_backends(), "hailo": FakeNpu()}
    p = WhisperHybrid(cfg)
    o = p.resolve_options({"max_new_tokens": 2})
    p.load(cfg.root / "models" / "whisper-tiny.en", backends, o)
    assert p.info["encoder"]["backend"] == "hailo" and p.info["encoder"]["emulation"] is None
    mel = np.random.default_rng(1).standard_normal((1, 80, 1000)).astype(np.float32)
    p._encode(mel)
    fed = backends["hailo"].fed[-1]
    assert fed.shape == (1, 1, 1000, 80) and np.array_equal(fed[0, 0], mel[0].T)


# -- rag ---------------------------------------------------------------------------------------

def test_rag_emulated_board_runs_the_qdq_static_encoder(emu, tmp_path):
    cfg = board(tmp_path, emu, model="minilm-l6-v2")
    p, _ = rag(cfg, create_backends())
    enc = p.info["encoder"]
    assert enc["artifact"] == "encoder_npu.int8.onnx" and p.embedder.static_len == 256
    assert enc["emulation"] == "onnxruntime static QDQ INT8 (hailo8l)"
    p2, _ = rag(board(tmp_path, emu, accelerator="rk3588", model="minilm-l6-v2"), create_backends())
    assert p2.info["encoder"]["artifact"] == "encoder_static.int8.onnx"
    assert p2.info["encoder"]["emulation"] == "cpu int8-dynamic fallback"
    assert "fleet models build minilm-l6-v2 --target rk3588" in p2.info["encoder"]["reason"]
    # onnx asked for on the emulated hailo8l board: its cpu static INT8 encoder, labelled the fallback
    p3, _ = rag(cfg, create_backends(), encoder_backend="onnx")
    enc = p3.info["encoder"]
    assert (enc["artifact"], enc["reason"]) == ("encoder_static.int8.onnx", "encoder_backend=onnx requested")
    assert enc["emulation"] == "cpu int8-dynamic fallback" and enc["emulated"] is True


def rag(cfg, backends, **opts):
    p = RagHybrid(cfg)
    o = p.resolve_options(opts)
    p.load(cfg.root / "models" / "minilm-l6-v2", backends, o)
    return p, o


class FakeRknn(Backend):
    """RKNNLite stand-in (real boards' path). Like ``RknnBackend`` it knows no tensor names of its
    own and takes the manifest's; it runs the cpu fp32 static MiniLM encoder next to the .rknn on
    onnxruntime, so the embeddings are real."""

    name, suffix = "rknn", ".rknn"

    def __init__(self, ok: bool = True):
        self.ok, self.loaded = ok, []

    def available(self):
        return (True, "") if self.ok else (False, "rknnlite not importable: install rknn-toolkit-lite2")

    def version(self):
        return "2.3.0"

    def load(self, path, inputs=None, outputs=None, **_):
        from device_agent.backends import OnnxBackend

        assert [t["name"] for t in inputs] == ["input_ids", "attention_mask"]  # from the manifest
        self.loaded.append(path.name)
        return OnnxBackend().load(path.with_name("encoder_static.onnx"))


def test_rag_encoder_follows_the_npu_stage_rule_on_a_real_board(emu, tmp_path):
    """rag.hybrid's encoder goes through npu_stage like the other pipelines' NPU stages: the .rknn
    on a real RK3588, a clear error when its runtime is absent, onnx when asked, and the cpu for
    the dynamic encoder."""
    io = ([{"name": "input_ids", "shape": [1, 256], "dtype": "int64"},
           {"name": "attention_mask", "shape": [1, 256], "dtype": "int64"}],
          [{"name": "sentence_embedding", "shape": [1, 384], "dtype": "float32"}])
    arts = with_npu_artifact(emu, tmp_path, "minilm-l6-v2", "rk3588", "rknn", *io)
    cfg = board(tmp_path, arts, accelerator="rk3588", emulated=False, model="minilm-l6-v2")
    npu = FakeRknn()
    p, _ = rag(cfg, {**create_backends(), "rknn": npu})
    enc = p.info["encoder"]
    assert (enc["backend"], enc["artifact"], enc["emulated"], enc["emulation"]) == ("rknn", "encoder_npu.rknn",
                                                                                    False, None)
    assert enc["reason"] == "rk3588 NPU with a .rknn encoder" and npu.loaded == ["encoder_npu.rknn"]
    assert p.embedder.static_len == 256 and p.embedder.embed_query("boundary layer flow")[0].shape == (384,)
    absent = {**create_backends(), "rknn": FakeRknn(ok=False)}
    with pytest.raises(ModelError, match="rknn backend is not available: rknnlite not importable") as ei:
        rag(cfg, absent)
    assert "encoder_backend=onnx" in ei.value.fix
    p2, _ = rag(cfg, absent, encoder_backend="onnx")
    assert (p2.info["encoder"]["artifact"], p2.info["encoder"]["reason"]) == ("encoder_static.int8.onnx",
                                                                              "encoder_backend=onnx requested")
    p3, _ = rag(cfg, absent, encoder="dynamic")
    assert p3.info["encoder"]["artifact"] == "encoder_dynamic.int8.onnx"
    assert "NPU runs the static [1,256] encoder only" in p3.info["encoder"]["reason"]
    with pytest.raises(BadInput, match="encoder=dynamic with encoder_backend=rknn"):
        rag(cfg, absent, encoder="dynamic", encoder_backend="rknn")
    with pytest.raises(ModelError, match="encoder_backend=hailo but no .hef encoder artifact is deployed"):
        rag(cfg, absent, encoder_backend="hailo")


# -- deploy ------------------------------------------------------------------------------------

def _b(**kw) -> Board:
    base = dict(name="b", board="pi5-hailo8l", accelerator="hailo8l", emulated=True, fleet_root="/opt/fleet",
                host="192.0.2.1", port=22, user="fleet")
    return Board(**{**base, **kw})


def test_deploy_sends_each_board_its_targets_runtime_artifacts(emu):
    man = load_manifest(emu)
    extra = [{"model": "minilm-l6-v2", "role": "encoder_npu", "variant": v, "target": "hailo8l", "format": f,
              "path": f"hailo8l/minilm-l6-v2/{n}", "sha256": "0" * 64, "bytes": 1, "quantization": q}
             for v, f, n, q in (("fp32", "onnx", "encoder_npu.onnx", "none"),
                                ("npu", "hef", "encoder_npu.hef", "int8 (Hailo DFC)"))]
    man = {**man, "artifacts": man["artifacts"] + extra}

    def names(b):
        return {a.name for a in select(b, man, emu, models=("minilm-l6-v2",))}

    cpu = names(_b(board="cpu", accelerator="cpu", emulated=False))
    assert "encoder_npu.int8.onnx" not in cpu and "encoder_static.onnx" in cpu
    assert names(_b()) == cpu | {"encoder_npu.int8.onnx"}          # emulated: the QDQ model, no fp32/HEF
    assert names(_b(emulated=False)) == cpu | {"encoder_npu.hef"}  # real: the HEF only
    assert names(_b(board="rk3588", accelerator="rk3588")) == cpu  # no rk3588 build: cpu only
