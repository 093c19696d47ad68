"""Emulated NPU boards run their target's static QDQ INT8 model (device_agent.emulation): model
selection in both pipelines, the NHWC mel layout of ``encoder_npu``, the fallback and its label,
the real-board path with an ``encoder_npu`` HEF, and which artifacts deploy sends to which board.

The emulation models are real (tests/emulation_artifacts.py: the cpu fp32 graphs calibrated on
suite data and quantized by fleet.models.quantize; built once per test process, ~1-2 min)."""

from __future__ import annotations

import numpy as np
import pytest
from emulation_artifacts import REPO, shared_root

from device_agent.backends import create_backends
from device_agent.backends.base import Backend, LoadedModel, TensorInfo
from device_agent.config import load_config
from device_agent.parity import cosine
from device_agent.pipelines.asr_whisper import WhisperHybrid, mel_layout
from device_agent.pipelines.rag_hybrid import RagHybrid
from device_agent.protocol import BadInput
from fleet.deploy.artifacts import load_manifest, select
from fleet.deploy.local import lay_out_board
from fleet.inventory import Board

SPEECH = REPO / "suites" / "datasets" / "speech"
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


def test_real_board_runs_the_encoder_npu_hef_in_its_declared_layout(emu, tmp_path):
    import json
    import shutil

    arts = tmp_path / "arts"
    shutil.copytree(emu, arts, symlinks=True)
    hef = arts / "hailo8l" / "whisper-tiny.en" / "encoder_npu.hef"
    hef.write_bytes(b"HEF fake")
    doc = json.loads((arts / "manifest.json").read_text())
    import hashlib

    doc["artifacts"].append({"model": "whisper-tiny.en", "role": "encoder_npu", "variant": "npu",
                             "target": "hailo8l", "format": "hef", "path": "hailo8l/whisper-tiny.en/encoder_npu.hef",
                             "sha256": hashlib.sha256(b"HEF fake").hexdigest(), "bytes": 8,
                             "inputs": [{"name": "mel", "shape": [1, 1, 1000, 80], "dtype": "float32"}],
                             "outputs": [{"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}]})
    (arts / "manifest.json").write_text(json.dumps(doc))
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
    p = RagHybrid(cfg)
    p.load(cfg.root / "models" / "minilm-l6-v2", create_backends(), p.resolve_options({}))
    enc = p.info["encoder"]
    assert enc["artifact"] == "encoder_npu.int8.onnx" and p.embedder.static_len == 256
    assert enc["emulation"] == "onnxruntime static QDQ INT8 (hailo8l)"
    cfg2 = board(tmp_path, emu, accelerator="rk3588", model="minilm-l6-v2")
    p2 = RagHybrid(cfg2)
    p2.load(cfg2.root / "models" / "minilm-l6-v2", create_backends(), p2.resolve_options({}))
    assert p2.info["encoder"]["artifact"] == "encoder_static.int8.onnx"
    assert p2.info["encoder"]["emulation"] == "cpu int8-dynamic fallback"


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
