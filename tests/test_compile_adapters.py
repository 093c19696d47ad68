"""Compile adapters against fakes that follow the vendors' documented API shapes.

- Hailo DFC: a fake ``hailo_sdk_client`` module in sys.modules whose ClientRunner records the
  calls (ClientRunner(hw_arch=…), translate_onnx_model(onnx, name, start_node_names,
  end_node_names, net_input_shapes), optimize(calib), compile() -> bytes; docs/reference/device_apis.md §2.1).
- rknn-toolkit2: a fake toolchain venv whose ``bin/python`` runs this interpreter with a fake
  ``rknn.api.RKNN`` (config / load_onnx / build(dataset=list file) / export_rknn / init_runtime /
  inference, return codes 0/-1 as the real one; docs/reference/device_apis.md §3.2) and a dist-info for
  ``rknn-toolkit2`` 2.5.0. The real worker script (fleet/models/compile/rknn_worker.py) runs.

The real toolkits are absent in CI; a real rk3588 build is in the README (measured by hand).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from fleet.errors import FleetError
from fleet.models.compile import hailo, rknn

# ---------------------------------------------------------------- Hailo DFC fake


class FakeRunner:
    """Records calls like hailo_sdk_client.ClientRunner; ``fail`` names a stage to raise in."""

    calls: ClassVar[list] = []
    fail: ClassVar[str | None] = None

    def __init__(self, hw_arch=None, har=None):
        FakeRunner.calls.append(("ClientRunner", {"hw_arch": hw_arch, "har": har}))

    def _maybe_fail(self, stage):
        if FakeRunner.fail == stage:
            raise RuntimeError(f"fake {stage} error: unsupported layer /Gather")

    def translate_onnx_model(self, model, net_name, start_node_names=None, end_node_names=None,
                             net_input_shapes=None):
        FakeRunner.calls.append(("translate_onnx_model", {
            "model": model, "net_name": net_name, "start_node_names": start_node_names,
            "end_node_names": end_node_names, "net_input_shapes": net_input_shapes}))
        self._maybe_fail("translate_onnx_model")
        return "hn", "npz"

    def load_model_script(self, script):
        FakeRunner.calls.append(("load_model_script", {"script": script}))

    def optimize(self, calib_data, work_dir=None):
        FakeRunner.calls.append(("optimize", {"calib_data": calib_data}))
        self._maybe_fail("optimize")

    def compile(self):
        FakeRunner.calls.append(("compile", {}))
        self._maybe_fail("compile")
        return b"HEF-FAKE-BYTES"


@pytest.fixture
def fake_dfc(monkeypatch):
    mod = types.ModuleType("hailo_sdk_client")
    mod.ClientRunner = FakeRunner
    mod.__version__ = "3.33.0"
    FakeRunner.calls, FakeRunner.fail = [], None
    monkeypatch.setitem(sys.modules, "hailo_sdk_client", mod)
    return FakeRunner


ENC_IN = [{"name": "mel", "shape": [1, 1, 1000, 80], "dtype": "float32"}]
ENC_OUT = [{"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}]


def test_hailo_compile_calls_and_hef(fake_dfc, tmp_path):
    calib = {"mel": np.random.default_rng(0).standard_normal((5, 1, 1, 1000, 80), np.float32)}
    graph = tmp_path / "encoder_npu.onnx"
    graph.write_bytes(b"onnx")
    r = hailo.compile_hef(graph, ENC_IN, ENC_OUT, calib, "hailo8l", tmp_path / "encoder_npu.hef")
    names = [c[0] for c in fake_dfc.calls]
    assert names == ["ClientRunner", "translate_onnx_model", "optimize", "compile"]
    assert fake_dfc.calls[0][1]["hw_arch"] == "hailo8l"
    tr = fake_dfc.calls[1][1]
    assert tr["model"] == str(graph) and tr["net_name"] == "encoder_npu"
    assert tr["start_node_names"] == ["mel"] and tr["end_node_names"] == ["encoder_out"]
    assert tr["net_input_shapes"] == {"mel": [1, 1, 1000, 80]}
    data = fake_dfc.calls[2][1]["calib_data"]
    # one input: a single NHWC array (N, H, W, C) from the ONNX [1, C=1, H=1000, W=80] sample
    assert isinstance(data, np.ndarray) and data.shape == (5, 1000, 80, 1)
    assert data.dtype == np.float32 and data.flags.c_contiguous
    assert np.array_equal(data[..., 0], calib["mel"][:, 0, 0])
    assert (tmp_path / "encoder_npu.hef").read_bytes() == b"HEF-FAKE-BYTES"
    assert r.format == "hef" and r.toolchain == {"name": "hailo_dfc", "version": "3.33.0"}
    assert r.quantization == hailo.QUANTIZATION and r.metrics["hw_arch"] == "hailo8l"


def test_hailo_multi_input_calibration_dict(fake_dfc, tmp_path):
    ins = [{"name": "tokens", "shape": [1, 32], "dtype": "int64"},
           {"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}]
    calib = {"tokens": np.zeros((3, 1, 32), np.int64),
             "encoder_out": np.ones((3, 1, 500, 384), np.float32)}
    (tmp_path / "d.onnx").write_bytes(b"x")
    hailo.compile_hef(tmp_path / "d.onnx", ins, [{"name": "logits_0"}], calib, "hailo8",
                      tmp_path / "d.hef", net_name="dec")
    data = fake_dfc.calls[2][1]["calib_data"]
    assert set(data) == {"dec/input_layer1", "dec/input_layer2"}
    assert data["dec/input_layer1"].shape == (3, 32) and data["dec/input_layer1"].dtype == np.int64
    assert data["dec/input_layer2"].shape == (3, 500, 384)
    assert fake_dfc.calls[0][1]["hw_arch"] == "hailo8"


@pytest.mark.parametrize("stage", ["translate_onnx_model", "optimize", "compile"])
def test_hailo_stage_failure_is_clear_and_writes_nothing(fake_dfc, tmp_path, stage):
    fake_dfc.fail = stage
    (tmp_path / "g.onnx").write_bytes(b"x")
    calib = {"mel": np.zeros((2, 1, 1, 1000, 80), np.float32)}
    with pytest.raises(FleetError) as ei:
        hailo.compile_hef(tmp_path / "g.onnx", ENC_IN, ENC_OUT, calib, "hailo8l",
                          tmp_path / "g.hef")
    assert ei.value.exit_code == 3
    assert stage in ei.value.message and "3.33.0" in ei.value.message
    assert "unsupported layer" in ei.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]  # no .hef, no temp file


def test_hailo_missing_dfc_names_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "hailo_sdk_client", None)  # import raises ImportError
    ok, why = hailo.available()
    assert not ok and "not on PyPI" in why and "Developer Zone" in why
    with pytest.raises(FleetError) as ei:
        hailo.compile_hef(tmp_path / "g.onnx", ENC_IN, ENC_OUT, {}, "hailo8l", tmp_path / "g.hef")
    assert ei.value.exit_code == 3 and "hailo_sdk_client" in ei.value.message
    assert "Developer Zone" in ei.value.fix


def test_hailo_bad_input(fake_dfc, tmp_path):
    with pytest.raises(FleetError) as ei:
        hailo.compile_hef(tmp_path / "g.onnx", ENC_IN, ENC_OUT, {}, "hailo15h", tmp_path / "g.hef")
    assert ei.value.exit_code == 2 and "hailo15h" in ei.value.message
    with pytest.raises(FleetError, match="no array for input 'mel'"):
        hailo.compile_hef(tmp_path / "g.onnx", ENC_IN, ENC_OUT, {"x": np.zeros((1, 1))},
                          "hailo8l", tmp_path / "g.hef")
    with pytest.raises(FleetError, match=r"shape \[2, 1, 80, 1000\]"):
        hailo.compile_hef(tmp_path / "g.onnx", ENC_IN, ENC_OUT,
                          {"mel": np.zeros((2, 1, 80, 1000), np.float32)}, "hailo8l",
                          tmp_path / "g.hef")
    assert not (tmp_path / "g.hef").exists()


# ---------------------------------------------------------------- rknn-toolkit2 fake

FAKE_RKNN_API = '''
import json, os
import numpy as np

LOG = os.environ["FAKE_RKNN_LOG"]


def _log(call, **kw):
    with open(LOG, "a") as f:
        f.write(json.dumps({"call": call, **kw}) + "\\n")


def _ret(stage):
    return -1 if os.environ.get("FAKE_RKNN_FAIL") == stage else 0


class RKNN:
    def __init__(self, verbose=False, verbose_file=None):
        _log("RKNN", verbose=verbose)

    def config(self, mean_values=None, std_values=None, quantized_dtype="w8a8",
               quantized_algorithm="normal", quantized_method="channel", target_platform=None,
               **kw):
        _log("config", target_platform=target_platform, quantized_dtype=quantized_dtype,
             quantized_algorithm=quantized_algorithm, quantized_method=quantized_method,
             mean_values=mean_values, std_values=std_values)
        return _ret("config")

    def load_onnx(self, model, inputs=None, input_size_list=None, input_initial_val=None,
                  outputs=None):
        _log("load_onnx", model=model, exists=os.path.exists(model), inputs=inputs,
             input_size_list=input_size_list)
        return _ret("load_onnx")

    def build(self, do_quantization=True, dataset=None, rknn_batch_size=None, auto_hybrid=False):
        lines = [l.split() for l in open(dataset).read().splitlines() if l.strip()]
        first = [np.load(p) for p in lines[0]]
        _log("build", do_quantization=do_quantization, auto_hybrid=auto_hybrid, samples=len(lines),
             shapes=[list(a.shape) for a in first], dtypes=[str(a.dtype) for a in first])
        if os.environ.get("FAKE_RKNN_FAIL") == "build":
            print("E build: Traceback ... fake op Gather not supported")
            return -1
        return 0

    def export_rknn(self, export_path, cpp_gen_cfg=False, **kw):
        _log("export_rknn", export_path=export_path)
        with open(export_path, "wb") as f:
            f.write(b"RKNN-FAKE")
        return _ret("export_rknn")

    def init_runtime(self, target=None, device_id=None, perf_debug=False, eval_mem=False,
                     async_mode=False, core_mask=0, fallback_prior_device="cpu"):
        _log("init_runtime", target=target)
        return _ret("init_runtime")

    def inference(self, inputs, data_type=None, data_format=None, inputs_pass_through=None,
                  get_frame_id=False):
        _log("inference", shapes=[list(a.shape) for a in inputs], data_format=data_format)
        return [np.full((1, 384), 0.5, np.float32)]

    def release(self):
        _log("release")
'''


def make_fake_rknn_venv(root: Path) -> Path:
    """A folder shaped like a venv whose bin/python imports the fake ``rknn.api``."""
    site = root / "site"
    (site / "rknn" / "api").mkdir(parents=True)
    (site / "rknn" / "__init__.py").write_text("")
    (site / "rknn" / "api" / "__init__.py").write_text(FAKE_RKNN_API)
    dist = site / "rknn_toolkit2-2.5.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rknn-toolkit2\nVersion: 2.5.0\n")
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'#!/bin/sh\nexport PYTHONPATH="{site}"\nexec "{sys.executable}" "$@"\n')
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return venv


@pytest.fixture
def fake_rknn(tmp_path, monkeypatch):
    venv = make_fake_rknn_venv(tmp_path / "tc")
    log = tmp_path / "rknn_calls.jsonl"
    monkeypatch.setenv("FAKE_RKNN_LOG", str(log))
    monkeypatch.delenv("FAKE_RKNN_FAIL", raising=False)

    def calls():
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return venv, calls


MINILM_IN = [{"name": "input_ids", "shape": [1, 256], "dtype": "int64"},
             {"name": "attention_mask", "shape": [1, 256], "dtype": "int64"}]


def test_rknn_compile_calls_dataset_and_simulator(fake_rknn, tmp_path):
    venv, calls = fake_rknn
    calib = {"input_ids": np.arange(6 * 256, dtype=np.int64).reshape(6, 1, 256),
             "attention_mask": np.ones((6, 1, 256), np.int64)}
    graph = tmp_path / "encoder_npu.onnx"
    graph.write_bytes(b"onnx")
    out = tmp_path / "out"
    out.mkdir()
    r = rknn.compile_rknn(graph, MINILM_IN, calib, out / "encoder_npu.rknn", venv=venv,
                          simulate=True)
    seq = [c["call"] for c in calls()]
    assert seq == ["RKNN", "config", "load_onnx", "build", "export_rknn", "init_runtime",
                   "inference", "release"]
    by = {c["call"]: c for c in calls()}
    assert by["config"]["target_platform"] == "rk3588"
    assert by["config"]["quantized_dtype"] == "w8a8"
    assert by["config"]["quantized_algorithm"] == "normal"
    assert by["load_onnx"]["exists"] and by["load_onnx"]["inputs"] == ["input_ids", "attention_mask"]
    assert by["load_onnx"]["input_size_list"] == [[1, 256], [1, 256]]
    assert by["build"]["do_quantization"] is True and by["build"]["samples"] == 6
    assert by["build"]["auto_hybrid"] is True
    assert by["build"]["shapes"] == [[1, 256], [1, 256]]
    assert by["build"]["dtypes"] == ["int64", "int64"]
    assert by["init_runtime"]["target"] is None  # the simulator
    assert by["inference"]["shapes"] == [[1, 256], [1, 256]]
    assert (out / "encoder_npu.rknn").read_bytes() == b"RKNN-FAKE"
    assert sorted(p.name for p in out.iterdir()) == ["encoder_npu.rknn"]
    assert r.toolchain == {"name": "rknn-toolkit2", "version": "2.5.0"}
    assert r.quantization == "rknn-w8a8-normal-channel-auto-hybrid"
    assert r.metrics["samples"] == 6
    assert r.metrics["simulator_outputs"][0].shape == (1, 384)


def test_rknn_4d_input_written_in_graph_layout(fake_rknn, tmp_path):
    venv, calls = fake_rknn
    mel = np.random.default_rng(1).standard_normal((2, 1, 1, 1000, 80)).astype(np.float32)
    (tmp_path / "e.onnx").write_bytes(b"x")
    rknn.compile_rknn(tmp_path / "e.onnx", ENC_IN, {"mel": mel}, tmp_path / "e.rknn", venv=venv,
                      simulate=True)
    by = {c["call"]: c for c in calls()}
    # the toolkit reads dataset .npy files in the ONNX layout (it refuses NHWC for 4-D)
    assert by["build"]["shapes"] == [[1, 1, 1000, 80]]
    assert by["inference"]["data_format"] == "nchw"  # simulator feeds in the same layout


@pytest.mark.parametrize("stage", ["load_onnx", "build", "export_rknn"])
def test_rknn_failure_names_stage_and_writes_nothing(fake_rknn, tmp_path, monkeypatch, stage):
    venv, _ = fake_rknn
    monkeypatch.setenv("FAKE_RKNN_FAIL", stage)
    (tmp_path / "g.onnx").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    calib = {"input_ids": np.zeros((2, 1, 256), np.int64),
             "attention_mask": np.ones((2, 1, 256), np.int64)}
    with pytest.raises(FleetError) as ei:
        rknn.compile_rknn(tmp_path / "g.onnx", MINILM_IN, calib, out / "g.rknn", venv=venv)
    assert ei.value.exit_code == 3
    assert f"failed at {stage}" in ei.value.message and "2.5.0" in ei.value.message
    assert list(out.iterdir()) == []


def test_rknn_missing_toolchain_and_bad_platform(tmp_path):
    with pytest.raises(FleetError) as ei:
        rknn.compile_rknn(tmp_path / "g.onnx", MINILM_IN, {}, tmp_path / "g.rknn",
                          venv=tmp_path / "nope")
    assert ei.value.exit_code == 3 and "fleet toolchain install rknn" in ei.value.fix
    ok, why = rknn.available(tmp_path / "nope")
    assert not ok and "fleet toolchain install rknn" in why
    with pytest.raises(FleetError) as ei:
        rknn.compile_rknn(tmp_path / "g.onnx", MINILM_IN, {}, tmp_path / "g.rknn",
                          target_platform="rk3568", venv=tmp_path / "nope")
    assert ei.value.exit_code == 2 and "rk3568" in ei.value.message


def test_rknn_calibration_shape_mismatch(fake_rknn, tmp_path):
    venv, calls = fake_rknn
    (tmp_path / "g.onnx").write_bytes(b"x")
    with pytest.raises(FleetError, match="attention_mask"):
        rknn.compile_rknn(tmp_path / "g.onnx", MINILM_IN,
                          {"input_ids": np.zeros((2, 1, 256), np.int64),
                           "attention_mask": np.zeros((2, 1, 128), np.int64)},
                          tmp_path / "g.rknn", venv=venv)
    assert calls() == [] and not (tmp_path / "g.rknn").exists()


def test_fake_venv_reports_as_installed(fake_rknn):
    from fleet.toolchain import rknn as tc

    venv, _ = fake_rknn
    st = tc.status(venv)
    assert st.installed and st.version == "2.5.0", st.reason
    assert os.access(tc.venv_python(venv), os.X_OK)
