"""Backends: onnx on a tiny real model; hailo and rknn against fake vendor modules that follow
the documented API shapes (docs/reference/device_apis.md §1.1 HailoRT 4.23, §3.1 RKNNLite 2.3.2)."""

import sys
import types

import numpy as np
import pytest

from device_agent.backends import HailoBackend, OnnxBackend, RknnBackend
from device_agent.protocol import BadInput, ModelError


# ------------------------------------------------------------------------------------------ onnx
@pytest.fixture
def add_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, "N"])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, "N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "N"])
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "add", [a, b], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "add.onnx"
    onnx.save(m, str(path))
    return path


def test_onnx_backend_runs(add_model):
    be = OnnxBackend(intra_op_threads=1)
    assert be.available() == (True, "") and be.version()
    m = be.load(add_model)
    assert [t.name for t in m.inputs] == ["a", "b"] and m.outputs[0].dtype == "float32"
    out = m.run({"a": np.ones((1, 3), np.float32), "b": np.full((1, 3), 2, np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((1, 3), 3, np.float32))
    with pytest.raises(BadInput, match="missing"):
        m.run({"a": np.ones((1, 3), np.float32)})
    with pytest.raises(BadInput):
        m.run({"a": np.ones((1, 3), np.float32), "b": np.ones((1, 3), np.int64)})


def test_onnx_backend_errors(tmp_path):
    be = OnnxBackend()
    with pytest.raises(ModelError, match="not found"):
        be.load(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        be.load(tmp_path / "junk.onnx")


# ----------------------------------------------------------------------------------- fake hailo
def make_fake_hailo(input_shape=(1, 1000, 80), output_shape=(1, 500, 384), devices=("0000:01:00.0",)):
    """A stand-in for ``hailo_platform`` with the 4.23 async API shapes. The "network" maps an
    NHWC frame x (H=1, W=1000, C=80) to y[0, t, c] = x[0, 2t, c % 80]."""
    hp = types.ModuleType("hailo_platform")
    state = {"vdevices": 0, "open": 0, "runs": 0, "params": None, "shutdown": 0}

    class HailoRTException(Exception):
        pass

    class FormatType:
        AUTO, UINT8, UINT16, FLOAT32 = "AUTO", "UINT8", "UINT16", "FLOAT32"

    class HailoSchedulingAlgorithm:
        NONE, ROUND_ROBIN = "NONE", "ROUND_ROBIN"

    class VDeviceParams:
        def __init__(self):
            self.scheduling_algorithm = HailoSchedulingAlgorithm.NONE
            self.group_id = ""
            self.multi_process_service = False

    class Device:
        @staticmethod
        def scan():
            return list(devices)

    class InferStream:
        def __init__(self, name, shape):
            self.name, self.shape, self.format_type = name, shape, FormatType.AUTO

        def set_format_type(self, t):
            self.format_type = t

    class BindingStream:
        def __init__(self):
            self.buf = None

        def set_buffer(self, buf):
            if not buf.flags["C_CONTIGUOUS"]:
                raise HailoRTException("Buffer must be C_CONTIGUOUS")
            self.buf = buf

        def get_buffer(self):
            return self.buf

    class Bindings:
        def __init__(self, im):
            self._in = {n: BindingStream() for n in im.input_names}
            self._out = {n: BindingStream() for n in im.output_names}

        def input(self, name=""):
            return self._in[name or next(iter(self._in))]

        def output(self, name=""):
            return self._out[name or next(iter(self._out))]

    class ConfiguredInferModel:
        def __init__(self, im):
            self.im = im

        def create_bindings(self, input_buffers=None, output_buffers=None):
            return Bindings(self.im)

        def run(self, bindings, timeout):
            state["runs"] += 1
            for b in bindings:
                for n, s in b._in.items():
                    st = self.im.input(n)
                    if st.format_type != FormatType.FLOAT32 or s.buf.dtype != np.float32:
                        raise HailoRTException("user buffer format mismatch (expected uint8)")
                    if s.buf.shape != st.shape:
                        raise HailoRTException(f"buffer size mismatch {s.buf.shape} vs {st.shape}")
                x = b.input().get_buffer()
                y = b.output().get_buffer()
                t = np.arange(y.shape[1])
                c = np.arange(y.shape[2]) % x.shape[2]
                y[0] = x[0][2 * t][:, c]

        def shutdown(self):
            state["shutdown"] += 1

    class InferModel:
        def __init__(self, hef):
            self.hef = hef
            self._inputs = [InferStream("enc/input_layer1", input_shape)]
            self._outputs = [InferStream("enc/conv20", output_shape)]

        def input(self, name=""):
            return next(s for s in self._inputs if not name or s.name == name)

        def output(self, name=""):
            return next(s for s in self._outputs if not name or s.name == name)

        @property
        def input_names(self):
            return [s.name for s in self._inputs]

        @property
        def output_names(self):
            return [s.name for s in self._outputs]

        def configure(self):
            return ConfiguredInferModel(self)

    class VDevice:
        def __init__(self, params=None, *, device_ids=None):
            if state["open"]:
                raise HailoRTException("Failed to create vdevice. there are not enough free devices. "
                                       "HAILO_OUT_OF_PHYSICAL_DEVICES(74)")
            state["vdevices"] += 1
            state["open"] += 1
            state["params"] = params

        @staticmethod
        def create_params():
            return VDeviceParams()

        def create_infer_model(self, hef_source, name=""):
            if not isinstance(hef_source, (str, bytes)):
                raise ValueError("hef_source must be str or bytes")
            with open(hef_source, "rb") as f:
                if f.read(4) != b"HEF!":
                    raise HailoRTException("libhailort failed with error: 26 (HAILO_INVALID_HEF)")
            return InferModel(hef_source)

        def release(self):
            state["open"] -= 1

    for obj in (HailoRTException, FormatType, HailoSchedulingAlgorithm, Device, VDevice):
        setattr(hp, obj.__name__, obj)
    hp.__version__ = "4.23.0"
    hp._state = state
    return hp


@pytest.fixture
def hef(tmp_path):
    p = tmp_path / "encoder.hef"
    p.write_bytes(b"HEF!" + b"\0" * 16)
    return p


def test_hailo_absent_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "hailo_platform", None)  # import raises ImportError
    ok, reason = HailoBackend().available()
    assert not ok
    assert reason.startswith("hailo_platform not importable: install python3-hailort matching HailoRT "
                             "and hailo-dkms (apt hailo-all on Raspberry Pi OS)")
    with pytest.raises(ModelError, match="not available"):
        HailoBackend().load("x.hef")
    d = HailoBackend().describe()
    assert d["available"] is False and d["version"] is None and "hailo-all" in d["reason"]


def test_hailo_no_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "hailo_platform", make_fake_hailo(devices=()))
    ok, reason = HailoBackend().available()
    assert not ok and "no Hailo device" in reason


def test_hailo_load_and_run(monkeypatch, hef):
    hp = make_fake_hailo()
    monkeypatch.setitem(sys.modules, "hailo_platform", hp)
    be = HailoBackend()
    assert be.available() == (True, "")
    m = be.load(hef)
    assert hp._state["params"].scheduling_algorithm == "ROUND_ROBIN"
    assert [t.name for t in m.inputs] == ["enc/input_layer1"] and m.inputs[0].shape == (1, 1000, 80)
    x = np.random.default_rng(0).standard_normal((1, 1, 1000, 80)).astype(np.float32)  # NHWC, batch 1
    y = m.run({"enc/input_layer1": x})["enc/conv20"]
    assert y.shape == (1, 1, 500, 384) and y.dtype == np.float32
    np.testing.assert_array_equal(y[0, 0, 3, 85], x[0, 0, 6, 5])
    with pytest.raises(BadInput, match="needs"):
        m.run({"enc/input_layer1": np.zeros((1, 80, 999), np.float32)})
    with pytest.raises(BadInput, match="missing"):
        m.run({"mel": x})
    # one VDevice per process: a second model reuses it
    m2 = be.load(hef)
    assert hp._state["vdevices"] == 1
    m.close(), m2.close()
    assert hp._state["shutdown"] == 2
    be.close()
    assert hp._state["open"] == 0


def test_hailo_inputs_take_the_manifest_names_in_dfc_order(monkeypatch, hef):
    """A two-input HEF (MiniLM: input_ids, attention_mask) reports DFC stream names; with the
    manifest's declared inputs the model answers to the ONNX names and feeds input_layer<i>."""
    from device_agent.backends.hailo import declared_input_names

    hp = make_fake_hailo(input_shape=(1, 256), output_shape=(1, 1, 384))
    monkeypatch.setitem(sys.modules, "hailo_platform", hp)
    fed = {}
    real_create = hp.VDevice.create_infer_model

    def two_inputs(self, hef_source, name=""):
        im = real_create(self, hef_source, name)
        stream = type(im._inputs[0])
        im._inputs = [stream("minilm/input_layer2", (1, 256)), stream("minilm/input_layer1", (1, 256))]
        cim_class = type(im.configure())

        class Configured(cim_class):
            def run(self, bindings, timeout):
                for b in bindings:
                    fed.update({n: s.get_buffer().copy() for n, s in b._in.items()})

        im.configure = lambda: Configured(im)
        return im

    monkeypatch.setattr(hp.VDevice, "create_infer_model", two_inputs)
    declared = [{"name": "input_ids", "shape": [1, 256]}, {"name": "attention_mask", "shape": [1, 256]}]
    m = HailoBackend().load(hef, inputs=declared, outputs=[{"name": "sentence_embedding"}])
    assert [t.name for t in m.inputs] == ["input_ids", "attention_mask"]
    ids, mask = np.arange(256, dtype=np.float32)[None], np.ones((1, 256), np.float32)
    m.run({"input_ids": ids, "attention_mask": mask})
    np.testing.assert_array_equal(fed["minilm/input_layer1"], ids)
    np.testing.assert_array_equal(fed["minilm/input_layer2"], mask)
    with pytest.raises(BadInput, match="missing"):
        m.run({"minilm/input_layer1": ids, "minilm/input_layer2": mask})
    # nothing declared, or a count that differs: the HEF's own names stay
    assert declared_input_names(["a/input_layer1"], None) == {}
    assert declared_input_names(["a/input_layer1"], declared) == {}
    assert declared_input_names(["x/in", "x/other"], declared) == {"input_ids": "x/in", "attention_mask": "x/other"}
    assert declared_input_names(["n/input_layer10", "n/input_layer2"], declared) == {
        "input_ids": "n/input_layer2", "attention_mask": "n/input_layer10"}


def test_hailo_errors_become_model_errors(monkeypatch, hef, tmp_path):
    hp = make_fake_hailo()
    monkeypatch.setitem(sys.modules, "hailo_platform", hp)
    bad = tmp_path / "bad.hef"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match="HAILO_INVALID_HEF") as ei:
        HailoBackend().load(bad)
    assert "hailo8l" in ei.value.fix
    hp._state["open"] = 1  # another process holds the device
    with pytest.raises(ModelError, match="OUT_OF_PHYSICAL_DEVICES"):
        HailoBackend().load(hef)


def test_whisper_encoder_feed_for_hailo_layout(monkeypatch, hef):
    """The pipeline feeds a channels-last HEF stream (1, 1000, 80) from its [1, 80, 1000] mel."""
    from device_agent.config import BoardConfig
    from device_agent.pipelines.asr_whisper import WhisperHybrid

    monkeypatch.setitem(sys.modules, "hailo_platform", make_fake_hailo())
    p = WhisperHybrid(BoardConfig("pi5-hailo8l", "hailo8l", False, hef.parent))
    p.encoder = HailoBackend().load(hef)
    mel = np.random.default_rng(1).standard_normal((1, 80, 1000)).astype(np.float32)
    enc = p._encode(mel)
    assert enc.shape == (1, 500, 384)
    np.testing.assert_array_equal(enc[0, 7, 100], mel[0, 100 % 80, 14])


# ------------------------------------------------------------------------------------ fake rknn
def make_fake_rknnlite():
    """Stand-ins for ``rknnlite`` / ``rknnlite.api`` with RKNNLite 2.3.2's signatures and its
    habit of returning 0/-1/None instead of raising."""
    pkg = types.ModuleType("rknnlite")
    api = types.ModuleType("rknnlite.api")
    calls = []

    class RKNNLite:
        NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2 = 0, 1, 2, 4
        NPU_CORE_0_1, NPU_CORE_0_1_2, NPU_CORE_ALL = 3, 7, 0xFFFF
        fail_init = False

        def __init__(self, verbose=False, verbose_file=None):
            self.loaded = None

        def load_rknn(self, path):
            calls.append(("load_rknn", path))
            try:
                self.loaded = open(path, "rb").read()
            except OSError:
                return -1
            return 0

        def init_runtime(self, target=None, device_id=None, async_mode=False, core_mask=0):
            calls.append(("init_runtime", core_mask))
            return -1 if RKNNLite.fail_init or self.loaded is None else 0

        def inference(self, inputs, data_type=None, data_format=None, inputs_pass_through=None,
                      get_frame_id=False):
            calls.append(("inference", data_format))
            if len(inputs) != 1:
                return None  # logged, not raised
            return [inputs[0] * 2.0]

        def release(self):
            calls.append(("release",))

    api.RKNNLite = RKNNLite
    pkg.api = api
    return pkg, api, calls


@pytest.fixture
def rknn_env(monkeypatch, tmp_path):
    pkg, api, calls = make_fake_rknnlite()
    monkeypatch.setitem(sys.modules, "rknnlite", pkg)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    dt = tmp_path / "compatible"
    dt.write_bytes(b"radxa,rock-5b\x00rockchip,rk3588\x00")
    model = tmp_path / "encoder.rknn"
    model.write_bytes(b"RKNN")
    return api, calls, dt, model


def test_rknn_absent_is_reported(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "rknnlite", None)
    monkeypatch.setitem(sys.modules, "rknnlite.api", None)
    ok, reason = RknnBackend().available()
    assert not ok and reason.startswith("rknnlite not importable") and "rknn-toolkit-lite2" in reason


def test_rknn_wrong_board(rknn_env, tmp_path):
    _, _, dt, _ = rknn_env
    dt.write_bytes(b"raspberrypi,5-model-b\x00")
    ok, reason = RknnBackend(device_tree=str(dt)).available()
    assert not ok and "not an RK3588" in reason


def test_rknn_load_and_run(rknn_env):
    api, calls, dt, model = rknn_env
    be = RknnBackend(core_mask="0_1_2", device_tree=str(dt))
    assert be.available() == (True, "")
    m = be.load(model, inputs=[{"name": "mel", "shape": [1, 80, 1000], "dtype": "float32"}],
                outputs=[{"name": "encoder_out", "shape": [1, 500, 384], "dtype": "float32"}])
    assert ("init_runtime", 7) in calls
    x = np.ones((1, 80, 1000), np.float32)
    out = m.run({"mel": x})
    np.testing.assert_array_equal(out["encoder_out"], x * 2)
    assert ("inference", [None]) in calls  # data_format only for 4-D inputs
    m4 = be.load(model, inputs=[{"name": "x", "shape": [1, 1, 1000, 80]}], outputs=[{"name": "y"}])
    m4.run({"x": np.ones((1, 1, 1000, 80), np.float32)})
    assert ("inference", ["nchw"]) in calls
    m.close()
    assert ("release",) in calls


def test_rknn_return_codes_become_model_errors(rknn_env, tmp_path):
    api, calls, dt, model = rknn_env
    be = RknnBackend(device_tree=str(dt))
    with pytest.raises(ModelError, match="not found"):
        be.load(tmp_path / "missing.rknn")
    api.RKNNLite.fail_init = True
    with pytest.raises(ModelError, match="init_runtime.*returned -1") as ei:
        be.load(model)
    assert "librknnrt" in ei.value.fix
    api.RKNNLite.fail_init = False
    m = be.load(model)  # no manifest names: positional
    with pytest.raises(ModelError, match="returned None"):
        m.run({"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)})
    assert list(m.run({"a": np.ones(3, np.float32)})) == ["output0"]
    with pytest.raises(ValueError):
        RknnBackend(core_mask="5")
