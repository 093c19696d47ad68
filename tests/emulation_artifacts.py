"""Test helper: an artifacts root holding the real cpu artifacts plus an NPU target's static QDQ
INT8 emulation models, made the way ``fleet models build --target`` makes them
(fleet.models.calibration + fleet.models.quantize) but from the cpu fp32 graphs, so tests need
neither torch export nor an NPU toolchain.

Whisper: the cpu encoder [1,80,1000] is wrapped into the NPU layout, NHWC mel [1,1,1000,80]
(Reshape + Transpose in front of the same graph, as the Hailo graph does, docs/reference/models.md §5), then
quantized; MiniLM: the static [1,256] encoder. Entries: role ``encoder_npu``, variant ``int8``,
format onnx, target = the NPU target (docs/contracts.md §3, fleet/models/target_build.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"


def nhwc_encoder(src: Path, dst: Path) -> None:
    """The Whisper encoder with its mel input as NHWC [1,1,1000,80] (fp32, same weights)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    old = g.input[0]
    old_name = old.name
    new_in = helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, 1, 1000, 80])
    inner = old_name + "_nchw"
    for n in g.node:
        for i, x in enumerate(n.input):
            if x == old_name:
                n.input[i] = inner
    shape = numpy_helper.from_array(np.array([1, 1000, 80], np.int64), "nhwc_shape")
    g.initializer.append(shape)
    nodes = [helper.make_node("Reshape", ["mel", "nhwc_shape"], ["mel_btc"], name="nhwc_reshape"),
             helper.make_node("Transpose", ["mel_btc"], [inner], perm=[0, 2, 1], name="nhwc_transpose")]
    for n in reversed(nodes):
        g.node.insert(0, n)
    g.input.remove(old)
    g.input.insert(0, new_in)
    onnx.save(m, str(dst))


def emulation_root(dest: Path, target: str = "hailo8l", models=("whisper-tiny.en", "minilm-l6-v2"),
                   calib_n: int = 16, per_channel: bool = True) -> Path:
    """``dest/artifacts``: the cpu artifacts (symlinked) + ``target``'s emulation entries.

    Returns:
        the artifacts root (with manifest.json).
    """
    from fleet.models import manifest as mf
    from fleet.models.calibration import build_calibration_set
    from fleet.models.quantize import quantize_static_qdq

    root = Path(dest) / "artifacts"
    (root / "cpu").mkdir(parents=True, exist_ok=True)
    entries = [e for e in json.loads((ARTIFACTS / "manifest.json").read_text())["artifacts"]
               if e["target"] == "cpu"]
    for model in os.listdir(ARTIFACTS / "cpu"):
        link = root / "cpu" / model
        if not link.exists():
            os.symlink(ARTIFACTS / "cpu" / model, link)
    for model in models:
        out = root / target / model
        out.mkdir(parents=True, exist_ok=True)
        if model == "whisper-tiny.en":
            fp32 = out / "encoder_npu.onnx"
            nhwc_encoder(ARTIFACTS / "cpu" / model / "encoder.onnx", fp32)
            io = ([{"name": "mel", "shape": [1, 1, 1000, 80], "dtype": "float32"}],
                  [{"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}])
        else:
            fp32 = out / "encoder_npu.onnx"
            shutil.copyfile(ARTIFACTS / "cpu" / model / "encoder_static.onnx", fp32)
            io = ([{"name": "input_ids", "shape": [1, 256], "dtype": "int64"},
                   {"name": "attention_mask", "shape": [1, 256], "dtype": "int64"}],
                  [{"name": "sentence_embedding", "shape": [1, 384], "dtype": "float32"}])
        calib = build_calibration_set(model, fp32, out / "calibration", n=calib_n)
        qdq = out / "encoder_npu.int8.onnx"
        q = quantize_static_qdq(fp32, calib, qdq, per_channel=per_channel)
        fp32.unlink()  # only the emulation model is needed by the tests
        entries.append({"model": model, "role": "encoder_npu", "variant": "int8", "target": target,
                        "format": "onnx", "path": f"{target}/{model}/{qdq.name}",
                        "sha256": mf.sha256_file(qdq), "bytes": qdq.stat().st_size,
                        "inputs": io[0], "outputs": io[1], "compiled": False,
                        "compile_reason": "test helper: emulation model only",
                        "calibration": {"path": f"{target}/{model}/calibration/{calib.path.name}",
                                        "sha256": calib.sha256, "n": calib.n}, **q})
    (root / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": entries}, indent=1))
    return root


def add_target(root: Path, src_target: str, target: str) -> None:
    """Give ``target`` the same emulation entries (and files) as ``src_target`` (hailo8l and rk3588
    share one scheme, so one QDQ model serves both in tests)."""
    doc = json.loads((root / "manifest.json").read_text())
    extra = []
    for e in doc["artifacts"]:
        if e["target"] == src_target:
            extra.append({**e, "target": target, "path": e["path"].replace(f"{src_target}/", f"{target}/", 1)})
    if not (root / target).exists():
        os.symlink(root / src_target, root / target)
    doc["artifacts"] += extra
    (root / "manifest.json").write_text(json.dumps(doc, indent=1))


_SHARED: dict = {}


def shared_root(tmp_path_factory) -> Path:
    """One hailo8l emulation root (both models, 16 calibration samples each) per test process,
    shared by every test module that asks (quantizing both graphs takes ~1-2 min)."""
    if "root" not in _SHARED:
        _SHARED["root"] = emulation_root(tmp_path_factory.mktemp("emulation"), "hailo8l", calib_n=16)
    return _SHARED["root"]
