"""The ``model.bench`` pipeline (device_agent/pipelines/model_bench.py) in an in-process agent.

Each board's fleet_root is laid out by the real deploy selection (fleet.deploy.artifacts.select +
board_manifest) from models imported by the real `fleet models import`, so what a board holds is
what `fleet deploy` would put there. HailoRT and RKNNLite run as the fakes of
tests/test_agent_backends.py (the vendors' documented call sequences); ONNX Runtime is real.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from test_agent_backends import make_fake_hailo, make_fake_rknnlite
from test_models_import import tiny_onnx

from device_agent.agent import Agent
from device_agent.backends import HailoBackend, OnnxBackend, RknnBackend
from device_agent.config import load_config
from device_agent.pipelines.model_bench import random_inputs
from device_agent.protocol import BadInput, ModelError
from fleet.deploy.artifacts import board_manifest, load_manifest, select
from fleet.inventory import Board
from fleet.models.importer import import_model

PIPE = "model.bench"


def onnx_graph(path: Path, nodes, inputs, outputs, inits=()) -> Path:
    import onnx
    from onnx import helper

    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def hef_like_reference(path: Path) -> Path:
    """The ONNX computing what the fake HEF computes: y[0, t, c] = x[0, 2t, c % 80],
    x [1,1000,80] -> y [1,500,384]."""
    from onnx import TensorProto, helper, numpy_helper

    c = lambda n, v: numpy_helper.from_array(np.asarray(v, np.int64), n)  # noqa: E731
    return onnx_graph(path, [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["h"]),
                             helper.make_node("Gather", ["h", "idx"], ["y"], axis=2)],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000, 80])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 500, 384])],
                      [c("st", [0]), c("en", [1000]), c("ax", [1]), c("sp", [2]), c("idx", np.arange(384) % 80)])


def times_two(path: Path, shape=(1, 4)) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    return onnx_graph(path, [helper.make_node("Mul", ["x", "two"], ["y"])],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                      [numpy_helper.from_array(np.array(2.0, np.float32), "two")])


def lay_out(root: Path, artifacts: Path, board: Board) -> Path:
    """``root`` as `fleet deploy` leaves it for ``board``: agent.yml and models/<name>/ (files + board manifest)."""
    man = load_manifest(artifacts)
    arts = select(board, man, artifacts)
    for model in {a.model for a in arts}:
        d = root / "models" / model
        d.mkdir(parents=True)
        for a in arts:
            if a.model == model:
                shutil.copyfile(a.src, d / a.name)
        (d / "manifest.json").write_text(json.dumps(board_manifest(arts, model)))
    root.mkdir(parents=True, exist_ok=True)
    (root / "agent.yml").write_text(f"board: {board.board}\naccelerator: {board.accelerator}\n"
                                    f"emulated: {str(board.emulated).lower()}\nfleet_root: {root}\n")
    return root


def _board(acc: str, emulated: bool) -> Board:
    kind = {"cpu": "cpu", "rk3588": "rk3588"}.get(acc, "pi5-hailo8l")
    return Board(f"b-{acc}", kind, acc, emulated, "/opt/fleet", "127.0.0.1", 22, "root")


def req(agent: Agent, model: str, input: str = "random", **options) -> dict:
    return agent.run({"pipeline": PIPE, "model_dir": f"models/{model}", "input": input, "options": options}, {})


@pytest.fixture
def lab(tmp_path) -> dict:
    """A lab's files: a small ONNX, its float reference (other weights: parity < 1), an identical one."""
    d = tmp_path / "lab"
    d.mkdir()
    return {"model": tiny_onnx(d / "m.onnx", outputs=2), "same": tiny_onnx(d / "same.onnx", outputs=2),
            "qdq": tiny_onnx(d / "q.onnx", qdq=True, outputs=2), "dir": d}


def test_cpu_board_infer_throughput_parity(tmp_path, lab):
    arts = tmp_path / "artifacts"
    import_model(lab["model"], "lab-net", "cpu", arts, reference=lab["same"], inputs="x:float32[2,4]=0..1")
    a = Agent(load_config(lay_out(tmp_path / "board", arts, _board("cpu", False))), sensors=[])
    try:
        r = req(a, "lab-net", sample=3)
        assert r["backend"] == "onnx" and r["emulated"] is False and r["emulation"] is None
        assert r["sample"] == 3 and r["samples"] == 8 and r["total_ms"] > 0
        assert r["stages"]["inference"]["artifact"] == "model-cpu.onnx"
        assert r["outputs"]["y"]["shape"] == [2, 3] and set(r["outputs"]) == {"y", "y2"}
        again = req(a, "lab-net", sample=3)
        assert again["outputs"]["y"]["mean"] == r["outputs"]["y"]["mean"]  # seeded: same inputs
        assert req(a, "lab-net", sample=3, seed=5)["outputs"]["y"]["mean"] != r["outputs"]["y"]["mean"]
        with pytest.raises(BadInput, match="mode=async needs a backend with asynchronous inference"):
            req(a, "lab-net", task="throughput", mode="async", iterations=5)
        t = req(a, "lab-net", task="throughput", iterations=50)
        assert t["inferences"] == 50 and t["throughput_ips"] > 0 and t["per_inference_ms"]["p50"] > 0
        p = req(a, "lab-net", task="parity")
        assert p["summary"]["n"] == 8 and p["summary"]["cosine_min"] == pytest.approx(1.0)
        assert p["summary"]["max_abs_err"] == 0.0 and set(p["per_output"]) == {"y", "y2"}
        assert p["matched_by"] == {"inputs": "name", "outputs": "name"}
        assert p["reference"]["artifact"] == "reference-cpu.onnx" and p["candidate"]["backend"] == "onnx"
    finally:
        a.close()


def test_parity_measures_a_real_difference(tmp_path, lab):
    """A QDQ model against its float reference: cosine below 1, the max abs error that of the
    quantization (scale 0.05 on inputs in [0, 1]: at most half a step per input times the weights)."""
    arts = tmp_path / "artifacts"
    import_model(lab["qdq"], "q-net", "cpu", arts, reference=lab["model"], inputs="x:float32[2,4]=0..1")
    a = Agent(load_config(lay_out(tmp_path / "board", arts, _board("cpu", False))), sensors=[])
    try:
        p = req(a, "q-net", task="parity", samples=16)
        # recompute one sample by hand: the same random set through both graphs in numpy
        x = random_inputs([{"name": "x", "shape": [2, 4], "dtype": "float32", "range": [0, 1]}], 0, 1)[0]["x"]
        w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
        xq = (np.clip(np.round(x / 0.05) + 128, 0, 255) - 128) * 0.05
        want_err = float(np.abs(xq @ w - x @ w).max())
        assert p["per_input"][0]["y"]["max_abs_err"] == pytest.approx(want_err, rel=1e-4, abs=1e-6)
        assert 0.99 < p["summary"]["cosine_min"] < 1.0 and p["summary"]["max_abs_err"] > 0
    finally:
        a.close()


def test_emulated_npu_board_labels_what_stands_in(tmp_path, lab, monkeypatch):
    arts = tmp_path / "artifacts"
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    hef = lab["dir"] / "net.hef"
    hef.write_bytes(b"HEF!" + bytes(16))
    # a HEF + its reference for hailo8l, and an ONNX imported for rk3588's emulation
    import_model(hef, "lab-net", "hailo8l", arts, reference=lab["model"], inputs="x:float32[2,4]",
                 outputs="y:float32[2,3];y2:float32[2,3]")
    import_model(lab["qdq"], "lab-net", "rk3588", arts, reference=lab["model"])
    h = Agent(load_config(lay_out(tmp_path / "h", arts, _board("hailo8l", True))), sensors=[])
    r = Agent(load_config(lay_out(tmp_path / "r", arts, _board("rk3588", True))), sensors=[])
    try:
        assert sorted(p.name for p in (tmp_path / "h" / "models" / "lab-net").iterdir()) == \
            ["manifest.json", "reference-hailo8l.onnx"]  # the HEF stays off the emulated board
        x = req(h, "lab-net")
        assert x["backend"] == "onnx" and x["emulated"] is True
        assert "fp32 reference reference-hailo8l.onnx stands in for the hailo8l NPU" == x["emulation"]
        p = req(h, "lab-net", task="parity")
        assert "stands in for the model" in p["note"] and p["summary"]["cosine_min"] == pytest.approx(1.0)
        y = req(r, "lab-net")
        assert y["stages"]["inference"]["artifact"] == "model-rk3588.onnx"
        assert y["emulation"] == "onnxruntime: model-rk3588.onnx for rk3588"
        assert y["stages"]["inference"]["quantization"] == "int8-static-qdq"
        with pytest.raises(ModelError, match="backend=hailo but no .hef"):
            req(h, "lab-net", backend="hailo")
    finally:
        h.close()
        r.close()


def test_real_hailo_board_runs_the_hef_through_hailort(tmp_path, monkeypatch):
    """VDevice + create_infer_model + configure + bindings + run (the fake checks FLOAT32 user
    buffers in the stream's shape); parity against the ONNX that computes the same function."""
    hp = make_fake_hailo()
    arts = tmp_path / "artifacts"
    hef = tmp_path / "enc.hef"
    hef.write_bytes(b"HEF!" + bytes(32))
    ref = hef_like_reference(tmp_path / "ref.onnx")
    monkeypatch.setitem(sys.modules, "hailo_platform", None)  # the controller has no HailoRT
    import_model(hef, "enc", "hailo8l", arts, reference=ref, inputs="x:float32[1,1000,80]",
                 outputs="enc/conv20:float32[1,500,384]")
    root = lay_out(tmp_path / "board", arts, _board("hailo8l", False))
    monkeypatch.setitem(sys.modules, "hailo_platform", hp)  # the board has it
    a = Agent(load_config(root), backends={"onnx": OnnxBackend(), "hailo": HailoBackend(), "rknn": RknnBackend()},
              sensors=[])
    try:
        r = req(a, "enc")
        # the hailo backend returns [1, *stream shape] (device_agent/backends/hailo.py); this fake's stream
        # shape already has the 1
        assert r["backend"] == "hailo" and r["emulated"] is False
        assert r["outputs"]["enc/conv20"]["shape"] == [1, 1, 500, 384]
        assert hp._state["vdevices"] == 1 and hp._state["runs"] == 1
        p = req(a, "enc", task="parity", samples=3)
        assert p["matched_by"] == {"inputs": "name", "outputs": "position"}  # enc/conv20 vs y
        assert p["summary"]["cosine_min"] == pytest.approx(1.0) and p["summary"]["max_abs_err"] < 1e-6
        assert p["candidate"] == {"backend": "hailo", "artifact": "model-hailo8l.hef", "emulation": None}
        # mode=async: HailoRT's run_async with wait_for_async_ready, several jobs in flight
        pipe = next(v for k, v in a.loaded.items() if k[0] == PIPE)
        cim, log = pipe.model._cim, []

        class Job:
            def __init__(self, bindings, cb):
                self.bindings, self.cb = bindings, cb

            def wait(self, timeout_ms):
                cim.run(self.bindings, timeout_ms)  # the fake computes on completion
                log.append("done")
                self.cb(types.SimpleNamespace(exception=None))

        cim.get_async_queue_size = lambda: 3
        cim.wait_for_async_ready = lambda timeout_ms=1000, frames_count=1: log.append("ready")
        cim.run_async = lambda bindings, callback=None: log.append("submit") or Job(bindings, callback)
        t = req(a, "enc", task="throughput", mode="async", iterations=10)
        assert t["inferences"] == 10 and t["mode"] == "async, up to 3 in flight" and t["throughput_ips"] > 0
        assert log.count("submit") == log.count("done") == log.count("ready") == 10
        assert log[:8] == ["ready", "submit"] * 4  # four submitted before the first is waited on
    finally:
        a.close()
    assert hp._state["shutdown"] >= 1 and hp._state["open"] == 0


def test_real_rk3588_board_runs_the_rknn_with_core_mask(tmp_path, monkeypatch):
    pkg, api, calls = make_fake_rknnlite()
    arts = tmp_path / "artifacts"
    f = tmp_path / "m.rknn"
    f.write_bytes(b"RKNN" + bytes(8))
    monkeypatch.setitem(sys.modules, "rknnlite", None)
    monkeypatch.setitem(sys.modules, "rknnlite.api", None)
    import_model(f, "rk", "rk3588", arts, reference=times_two(tmp_path / "ref.onnx"), inputs="x:float32[1,4]",
                 outputs="y:float32[1,4]")
    root = lay_out(tmp_path / "board", arts, _board("rk3588", False))
    monkeypatch.setitem(sys.modules, "rknnlite", pkg)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    dt = tmp_path / "compatible"
    dt.write_bytes(b"rockchip,rk3588\x00")
    a = Agent(load_config(root), backends={"onnx": OnnxBackend(), "hailo": HailoBackend(),
                                           "rknn": RknnBackend(device_tree=str(dt))}, sensors=[])
    try:
        r = req(a, "rk", core_mask="1")
        assert r["backend"] == "rknn" and ("init_runtime", 2) in calls  # NPU_CORE_1
        p = req(a, "rk", task="parity", core_mask="1")
        assert p["summary"]["cosine_min"] == pytest.approx(1.0) and p["summary"]["max_abs_err"] == 0.0
    finally:
        a.close()


def test_input_sets_and_errors(tmp_path, lab):
    arts = tmp_path / "artifacts"
    import_model(lab["model"], "lab-net", "cpu", arts)
    root = lay_out(tmp_path / "board", arts, _board("cpu", False))
    (root / "data").mkdir()
    xs = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    np.savez(root / "data" / "set.npz", x=xs)
    np.save(root / "data" / "one.npy", xs[0])
    np.savez(root / "data" / "wrong.npz", pixels=xs)
    a = Agent(load_config(root), sensors=[])
    try:
        r = req(a, "lab-net", "data/set.npz", sample=4)
        assert r["samples"] == 3 and r["sample"] == 1
        w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
        assert r["outputs"]["y"]["mean"] == pytest.approx(float((xs[1] @ w).mean()), rel=1e-5)
        assert req(a, "lab-net", "data/one.npy")["samples"] == 1
        with pytest.raises(BadInput, match=r"lacks input\(s\) \['x'\]"):
            req(a, "lab-net", "data/wrong.npz")
        with pytest.raises(BadInput, match="not found"):
            req(a, "lab-net", "data/nope.npz")
        with pytest.raises(ModelError, match="no reference ONNX"):
            req(a, "lab-net", task="parity")
        with pytest.raises(BadInput, match="samples=0"):
            req(a, "lab-net", samples=0)
        with pytest.raises(BadInput, match="needs model_dir models/<name>"):
            a.run({"pipeline": PIPE, "input": "random", "options": {}}, {})
    finally:
        a.close()


def test_deployed_input_set(tmp_path, lab):
    """input 'deployed': the set imported with the model (--data), shipped by deploy, sha256-checked."""
    arts = tmp_path / "artifacts"
    xs = np.random.default_rng(1).uniform(0, 1, (4, 2, 4)).astype(np.float32)
    np.savez(tmp_path / "set.npz", x=xs)
    import_model(lab["model"], "lab-net", "cpu", arts, reference=lab["qdq"], data=tmp_path / "set.npz")
    import_model(lab["same"], "no-data", "cpu", arts)
    root = lay_out(tmp_path / "board", arts, _board("hailo8l", True))
    a = Agent(load_config(root), sensors=[])
    try:
        r = req(a, "lab-net", "deployed", sample=2)
        w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
        assert r["samples"] == 4 and r["outputs"]["y"]["mean"] == pytest.approx(float((xs[2] @ w).mean()), rel=1e-5)
        assert req(a, "lab-net", "deployed", task="parity")["summary"]["n"] == 4
        with pytest.raises(BadInput, match="imported without an input set"):
            req(a, "no-data", "deployed")
        a.unload({})
        (root / "models" / "lab-net" / "inputs-cpu.npz").write_bytes(b"tampered")
        with pytest.raises(ModelError, match="sha256 mismatch"):
            req(a, "lab-net", "deployed")
    finally:
        a.close()


def test_throughput_energy_is_per_inference(tmp_path, lab):
    """The agent's telemetry divides a throughput request's energy by its inferences."""
    arts = tmp_path / "artifacts"
    import_model(lab["model"], "lab-net", "cpu", arts)
    a = Agent(load_config(lay_out(tmp_path / "board", arts, _board("hailo8l", True))))  # emulated sensors
    try:
        args = {"pipeline": PIPE, "model_dir": "models/lab-net", "input": "random",
                "options": {"task": "throughput", "duration_s": 0.3}, "telemetry": {"rate_hz": 50}}
        r = a.run_measured(args, {})
        s = r["telemetry"]["summary"]
        assert r["inferences"] > 10 and s.get("inferences") == r["inferences"], s.keys()
    finally:
        a.close()


def test_random_inputs_follow_dtype_and_range():
    specs = [{"name": "u", "shape": [3, 5], "dtype": "uint8"}, {"name": "i", "shape": [1, "T"], "dtype": "int64",
                                                                "range": [7, 9]},
             {"name": "f", "shape": [100], "dtype": "float16"}, {"name": "b", "shape": [10], "dtype": "bool"}]
    a, b = random_inputs(specs, 3, 2), random_inputs(specs, 3, 2)
    assert all(np.array_equal(a[k][n], b[k][n]) for k in range(2) for n in ("u", "i", "f", "b"))
    s = a[0]
    assert s["u"].dtype == np.uint8 and s["i"].shape == (1, 1) and 7 <= s["i"].min() <= s["i"].max() <= 9
    assert s["f"].dtype == np.float16 and -1 <= s["f"].min() and s["f"].max() <= 1 and s["b"].dtype == bool
    assert not np.array_equal(a[0]["f"], a[1]["f"])
