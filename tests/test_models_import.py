"""`fleet models import` (fleet.models.importer): a lab's own .onnx / .hef / .rknn as manifest entries.

Real ONNX files (small graphs made with onnx.helper, so each test takes milliseconds); HailoRT and
rknn-toolkit-lite2 are not installable here, so their readers run against fakes shaped like the
vendors' documented Python APIs (HEF(path).get_input_vstream_infos() with name/shape/format.type/
quant_info; RKNNLite().load_rknn() returning 0 or -1). Every bad input must leave the artifacts
root byte-for-byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from fleet.errors import FleetError
from fleet.inventory import Board
from fleet.models import manifest as mf
from fleet.models.importer import import_model, parse_spec


def tiny_onnx(path: Path, qdq: bool = False, outputs: int = 1, dynamic: bool = False) -> Path:
    """y = x @ W (+ a second output y2 = relu(y)); optionally with a QuantizeLinear/DequantizeLinear pair."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "W")
    nodes, inits = [], [w]
    x = "x"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(128, np.uint8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
        x = "xd"
    nodes.append(helper.make_node("MatMul", [x, "W"], ["y"]))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch" if dynamic else 2, 3])]
    if outputs == 2:
        nodes.append(helper.make_node("Relu", ["y"], ["y2"]))
        outs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["batch" if dynamic else 2, 3]))
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["batch" if dynamic else 2, 4])],
                          outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def snapshot(root: Path) -> dict:
    """Every file under root (hidden temp folders included) with its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def src(tmp_path) -> Path:
    d = tmp_path / "lab"
    d.mkdir()
    return tiny_onnx(d / "my_model.onnx")


# ------------------------------------------------------------------------------------- ONNX
def test_onnx_import_writes_the_manifest_entry_and_leaves_the_source_alone(src, out, tmp_path):
    ref = tiny_onnx(tmp_path / "lab" / "ref.onnx")
    before = (hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_mtime_ns, oct(src.stat().st_mode))
    res = import_model(src, "my-model", "cpu", out, reference=ref)
    assert (hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_mtime_ns, oct(src.stat().st_mode)) == before
    entries = mf.read_manifest(out)  # entry_problems accepts them
    assert [e["role"] for e in entries] == ["model", "reference"] == [e["role"] for e in res["entries"]]
    e = entries[0]
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert e["imported"] is True and e["model"] == "my-model" and e["target"] == "cpu" and e["format"] == "onnx"
    assert e["sha256"] == sha and e["bytes"] == src.stat().st_size
    assert e["source"] == {"path": str(src.resolve()), "sha256": sha, "bytes": src.stat().st_size}
    assert e["inputs"] == [{"name": "x", "shape": [2, 4], "dtype": "float32"}]
    assert e["outputs"] == [{"name": "y", "shape": [2, 3], "dtype": "float32"}]
    assert e["quantization"] == "none" and e["variant"] == "fp32"
    assert e["reader"]["name"] == "onnx" and e["reader"]["available"] is True
    assert e["path"] == "cpu/my-model/model-cpu.onnx" and (out / e["path"]).read_bytes() == src.read_bytes()
    assert e["reference"] == {"path": entries[1]["path"], "sha256": entries[1]["sha256"]}
    assert entries[1]["variant"] == "fp32" and (out / entries[1]["path"]).is_file()
    mf.verify_artifact(e, out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_quantization_and_spec_ranges_are_recorded(tmp_path, out):
    q = tiny_onnx(tmp_path / "q.onnx", qdq=True, dynamic=True)
    res = import_model(q, "q-model", "hailo8l", out, inputs="x:float32[1,4]=-2..2")
    e = res["entries"][0]
    assert e["quantization"] == "int8-static-qdq" and e["variant"] == "int8"
    assert e["inputs"] == [{"name": "x", "shape": [1, 4], "dtype": "float32", "range": [-2, 2]}]
    assert e["outputs"][0]["shape"] == ["batch", 3]  # a dynamic axis stays its name
    # an ONNX for an NPU target is that target's emulation model: not compiled, and it says so
    assert e["compiled"] is False and "emulated hailo8l board" in e["compile_reason"]
    assert e["toolchain"]["name"] == "onnx"
    assert mf.read_manifest(out) == res["entries"]


def test_spec_parser():
    assert parse_spec("a:uint8[1,224,224,3]=0..255; b:int64[1,T]") == [
        {"name": "a", "shape": [1, 224, 224, 3], "dtype": "uint8", "range": [0, 255]},
        {"name": "b", "shape": [1, "T"], "dtype": "int64"}]
    for bad, msg in (("a:float32", "is not NAME:DTYPE"), ("a:float99[1]", "unknown dtype"),
                     ("a:float32[1]=5..1", "LO > HI"), ("a:int8[1];a:int8[2]", "twice"), ("", "empty")):
        with pytest.raises(FleetError, match=msg) as ei:
            parse_spec(bad)
        assert ei.value.fix


def test_reimport_is_a_no_op_and_another_file_needs_force(src, out, tmp_path):
    import_model(src, "m", "cpu", out)
    first = snapshot(out)
    assert import_model(src, "m", "cpu", out)["cached"] is True
    assert snapshot(out) == first
    # the same file with another --inputs spec (a range) is recorded again
    res = import_model(src, "m", "cpu", out, inputs="x:float32[2,4]=0..1")
    assert res["cached"] is False and res["entries"][0]["inputs"][0]["range"] == [0, 1]
    import_model(src, "m", "cpu", out)
    assert snapshot(out) == first
    other = tiny_onnx(tmp_path / "other.onnx", outputs=2)
    with pytest.raises(FleetError, match="already imported from") as ei:
        import_model(other, "m", "cpu", out)
    assert "--force" in ei.value.fix and snapshot(out) == first
    res = import_model(other, "m", "cpu", out, force=True)
    assert [t["name"] for t in res["entries"][0]["outputs"]] == ["y", "y2"]
    assert len(mf.read_manifest(out)) == 1


def _w(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


BAD = [
    ("missing", lambda d: d / "nope.onnx", {}, "does not exist"),
    ("empty", lambda d: _w(d / "empty.onnx", b""), {}, "is empty"),
    ("suffix", lambda d: _w(d / "m.tflite", b"x"), {}, "unknown model format"),
    ("not-onnx", lambda d: _w(d / "junk.onnx", b"\x00\xffnot a protobuf" * 9), {},
     "not a readable ONNX model"),
    ("hef-for-cpu", lambda d: _w(d / "m.hef", b"hef"), {}, "only a Hailo NPU runs"),
    ("rknn-for-hailo", lambda d: _w(d / "m.rknn", b"rk"), {"target": "hailo8l"},
     "only the RK3588 NPU runs"),
    ("bad-name", None, {"name": "My Model!"}, "is not a model name"),
    ("built-name", None, {"name": "minilm-l6-v2"}, "a model fleet builds itself"),
    ("bad-target", None, {"target": "jetson"}, "unknown target"),
    ("spec-name", None, {"inputs": "pixels:float32[2,4]"}, r"names \['pixels'\] but"),
    ("spec-dtype", None, {"inputs": "x:int64[2,4]"}, "is float32 in"),
    ("spec-shape", None, {"inputs": "x:float32[3,4]"}, "has shape"),
    ("spec-syntax", None, {"inputs": "x=float32"}, "is not NAME:DTYPE"),
    ("ref-outputs", None, {"reference": "two"}, "has 2 outputs"),
    ("ref-not-onnx", None, {"reference": "hef"}, "is not an .onnx"),
]


@pytest.mark.parametrize("case,make,kw,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_error_and_changes_nothing(case, make, kw, msg, src, out, tmp_path):
    import_model(tiny_onnx(tmp_path / "keep.onnx"), "kept", "cpu", out)  # a manifest that must stay as it is
    before = snapshot(out)
    d = src.parent
    f = make(d) if make else src
    kw = dict(kw)
    if kw.get("reference") == "two":
        kw["reference"] = tiny_onnx(d / "two.onnx", outputs=2)
    elif kw.get("reference") == "hef":
        (d / "r.hef").write_bytes(b"x")
        kw["reference"] = d / "r.hef"
    with pytest.raises(FleetError, match=msg) as ei:
        import_model(f, kw.pop("name", "lab-model"), kw.pop("target", "cpu"), out, **kw)
    assert ei.value.fix and ei.value.exit_code == 2
    named = str(f.name) in ei.value.message or "--name" in ei.value.message or "--inputs" in ei.value.message \
        or "target" in ei.value.message or "--reference" in ei.value.message
    assert named, ei.value.message
    assert snapshot(out) == before


def test_input_data_is_checked_and_shipped_with_the_model(src, out, tmp_path):
    from fleet.deploy.artifacts import load_manifest, select

    good, one = tmp_path / "set.npz", tmp_path / "one.npy"
    np.savez(good, x=np.zeros((5, 2, 4), np.float32))
    np.save(one, np.zeros((2, 4), np.float32))
    np.savez(tmp_path / "names.npz", pixels=np.zeros((2, 4), np.float32))
    np.savez(tmp_path / "shape.npz", x=np.zeros((5, 3, 4), np.float32))
    (tmp_path / "set.csv").write_text("1,2")
    for bad, msg in (("names.npz", r"lacks input\(s\) \['x'\]"), ("shape.npz", "has shape \\[3, 4\\]"),
                     ("set.csv", "is not a .npz or .npy")):
        with pytest.raises(FleetError, match=msg) as ei:
            import_model(src, "m", "cpu", out, data=tmp_path / bad)
        assert "numpy.savez" in ei.value.fix and not out.exists()
    e = {x["role"]: x for x in import_model(src, "m", "cpu", out, data=one)["entries"]}
    assert set(e) == {"model", "inputs"} and e["inputs"]["samples"] == 1 and e["inputs"]["format"] == "npy"
    res = import_model(src, "m", "cpu", out, data=good)  # another data file: imported again
    e = {x["role"]: x for x in res["entries"]}
    assert res["cached"] is False and e["model"]["data"]["samples"] == 5
    assert e["inputs"]["path"] == "cpu/m/inputs-cpu.npz" and (out / "cpu/m/inputs-cpu.npz").is_file()
    assert not (out / "cpu/m/inputs-cpu.npy").exists()  # the group was replaced as a whole
    b = Board("c", "cpu", "cpu", False, "/opt/fleet", "127.0.0.1", 22, "root")
    assert sorted(a.name for a in select(b, load_manifest(out), out)) == ["inputs-cpu.npz", "model-cpu.onnx"]


def test_onnx_with_external_data_is_refused(tmp_path, out):
    import onnx

    m = onnx.load(str(tiny_onnx(tmp_path / "m.onnx")))
    onnx.save(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    with pytest.raises(FleetError, match="external data files \\(ext.onnx.data\\)") as ei:
        import_model(tmp_path / "ext.onnx", "ext", "cpu", out)
    assert "save_as_external_data=False" in ei.value.fix and not out.exists()


def test_hailo10h_import_goes_to_the_hailo10h_family(monkeypatch, tmp_path, out):
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    f = tmp_path / "llm.hef"
    f.write_bytes(b"hef" * 9)
    res = import_model(f, "llm", "hailo10h", out, inputs="x:float32[1,8]")
    assert not any("no board family" in n for n in res["notes"])  # the pi5-hailo10h family runs it
    (e,) = [e for e in res["entries"] if e["format"] == "hef"]
    assert e["target"] == "hailo10h" and e["hw_arch"] == "hailo10h"


def test_cli_exit_code_and_message(src, out, capsys):
    from fleet.cli import main

    rc = main(["models", "import", str(src), "--name", "cli-model", "--target", "cpu", "--out", str(out), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["entries"][0]["model"] == "cli-model" and printed["cached"] is False
    before = snapshot(out)
    rc = main(["models", "import", str(src.with_suffix(".hef")), "--name", "x", "--target", "hailo8l",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "fix:" in err and "Traceback" not in err
    assert snapshot(out) == before


# ------------------------------------------------------------------------------ HEF (fakes)
class _Fmt:
    def __init__(self, t):
        self.type = t


class _Quant:
    def __init__(self, scale, zp):
        self.qp_scale, self.qp_zp = scale, zp


class _VInfo:
    """A HailoRT VStreamInfo as pyhailort documents it: name, shape (per frame, NHWC), format.type,
    quant_info.qp_scale / qp_zp."""

    def __init__(self, name, shape, t, scale=0.02, zp=128.0):
        self.name, self.shape, self.format, self.quant_info = name, shape, _Fmt(t), _Quant(scale, zp)


def fake_hailo(monkeypatch, arch: str | None = "HAILO8L", refuse: bool = False) -> list:
    """Install a fake ``hailo_platform`` whose ``HEF(path)`` follows the documented API."""
    opened = []

    class FormatType:
        UINT8 = "FormatType.UINT8"
        FLOAT32 = "FormatType.FLOAT32"

    class HEF:
        def __init__(self, path):
            if refuse:
                raise RuntimeError("HAILO_INVALID_HEF(26)")
            opened.append(path)

        def get_input_vstream_infos(self, network_name=None):
            return [_VInfo("yolo/input_layer1", (640, 640, 3), FormatType.UINT8)]

        def get_output_vstream_infos(self, network_name=None):
            return [_VInfo("yolo/conv94", (20, 20, 18), FormatType.UINT8, 0.1, 0.0),
                    _VInfo("yolo/conv85", (40, 40, 18), FormatType.UINT8)]

    if arch is not None:
        HEF.get_hef_device_arch = lambda self: f"DeviceArchitecture.{arch}"
    mod = types.ModuleType("hailo_platform")
    mod.HEF, mod.FormatType = HEF, FormatType
    monkeypatch.setitem(sys.modules, "hailo_platform", mod)
    return opened


@pytest.fixture
def hef(tmp_path) -> Path:
    p = tmp_path / "lab" / "yolo.hef"
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(b"fake hef bytes " * 100)
    return p


def test_hef_io_and_arch_through_hailort(monkeypatch, hef, out):
    opened = fake_hailo(monkeypatch, "HAILO8L")
    e = import_model(hef, "yolo", "hailo8l", out)["entries"][0]
    assert opened == [str(hef.resolve())]
    assert e["format"] == "hef" and e["variant"] == "npu" and e["compiled"] is True
    assert e["hw_arch"] == "hailo8l" and e["arch_verified"] is True
    assert e["inputs"] == [{"name": "yolo/input_layer1", "shape": [640, 640, 3], "dtype": "uint8",
                            "quant": {"scale": 0.02, "zero_point": 128.0}}]
    assert [o["name"] for o in e["outputs"]] == ["yolo/conv94", "yolo/conv85"]
    assert e["quantization"] == "hailo-uint8" and e["reader"] == {"name": "hailo_platform", "available": True}
    assert e["toolchain"]["name"] == "hailo_dfc"


def test_hef_for_another_arch_is_refused_as_doctor_does(monkeypatch, hef, out):
    fake_hailo(monkeypatch, "HAILO8")
    with pytest.raises(FleetError, match="compiled for hailo8 .*--target is hailo8l") as ei:
        import_model(hef, "yolo", "hailo8l", out)
    assert "--target hailo8" in ei.value.fix and not out.exists()
    # a Hailo-8L HEF on a Hailo-8 runs (HailoRT warns): imported, with the note
    fake_hailo(monkeypatch, "HAILO8L")
    res = import_model(hef, "yolo", "hailo8", out)
    assert res["entries"][0]["hw_arch"] == "hailo8l" and "lower performance" in " ".join(res["notes"])


def test_hef_arch_from_hailortcli_when_the_binding_has_no_query(monkeypatch, hef, out):
    fake_hailo(monkeypatch, arch=None)
    with pytest.raises(FleetError, match="compiled for hailo8 \\(hailortcli parse-hef\\)"):
        import_model(hef, "yolo", "hailo8l", out, parse_hef=lambda p: "hailo8")
    e = import_model(hef, "yolo", "hailo8l", out, parse_hef=lambda p: None)["entries"][0]
    assert e["arch_verified"] is False and "not its architecture" in e["arch_note"]


def test_hailort_refusing_the_file_is_a_clear_error(monkeypatch, hef, out):
    fake_hailo(monkeypatch, refuse=True)
    with pytest.raises(FleetError, match="HailoRT cannot read this HEF") as ei:
        import_model(hef, "yolo", "hailo8l", out)
    assert "parse-hef" in ei.value.fix and not out.exists()


def test_hef_without_hailort_needs_inputs_and_says_why(monkeypatch, hef, out):
    monkeypatch.setitem(sys.modules, "hailo_platform", None)  # import fails
    with pytest.raises(FleetError, match="input names, shapes and dtypes are unknown .*hailo_platform") as ei:
        import_model(hef, "yolo", "hailo8l", out)
    assert "--inputs" in ei.value.fix and not out.exists()
    res = import_model(hef, "yolo", "hailo8l", out, inputs="images:uint8[640,640,3]=0..255",
                       outputs="boxes:float32[100,6]")
    e = res["entries"][0]
    assert e["reader"]["available"] is False and e["io_from"] == "--inputs"
    assert e["arch_verified"] is False and "not publicly documented" in e["arch_note"]
    assert e["inputs"][0]["range"] == [0, 255] and e["outputs"][0]["name"] == "boxes"
    assert any("hailo_platform not importable" in n for n in res["notes"])


# ----------------------------------------------------------------------------- RKNN (fakes)
def fake_rknnlite(monkeypatch, ret: int) -> list:
    calls = []

    class RKNNLite:
        NPU_CORE_0_1_2 = 7

        def __init__(self, verbose=False):
            calls.append("init")

        def load_rknn(self, path):
            calls.append(("load_rknn", path))
            return ret

        def release(self):
            calls.append("release")

    api = types.ModuleType("rknnlite.api")
    api.RKNNLite = RKNNLite
    monkeypatch.setitem(sys.modules, "rknnlite", types.ModuleType("rknnlite"))
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    return calls


def test_rknn_checked_by_rknnlite_io_from_inputs(monkeypatch, tmp_path, out):
    f = tmp_path / "enc.rknn"
    f.write_bytes(b"RKNN" + bytes(64))
    calls = fake_rknnlite(monkeypatch, -1)
    with pytest.raises(FleetError, match="load_rknn returned -1"):
        import_model(f, "enc", "rk3588", out, inputs="x:float32[1,3,224,224]")
    assert calls[-1] == "release" and not out.exists()
    fake_rknnlite(monkeypatch, 0)
    with pytest.raises(FleetError, match="input names, shapes and dtypes are unknown"):
        import_model(f, "enc", "rk3588", out)
    e = import_model(f, "enc", "rk3588", out, inputs="x:float32[1,3,224,224]")["entries"][0]
    assert e["format"] == "rknn" and e["target_platform"] == "rk3588" and e["io_from"] == "--inputs"
    assert e["reader"]["available"] is True and "no tensor query" in e["reader"]["reason"]


# ---------------------------------------------------------------------------------- deploy
def _board(name, acc, emulated):
    return Board(name, "cpu" if acc == "cpu" else ("rk3588" if acc == "rk3588" else "pi5-hailo8l"), acc,
                 emulated, "/opt/fleet", "127.0.0.1", 22, "root")


def test_deploy_ships_imports_only_where_they_run(monkeypatch, tmp_path, out, src):
    from fleet.deploy.artifacts import load_manifest, select, verify

    ref = tiny_onnx(tmp_path / "ref.onnx")
    import_model(src, "lab", "cpu", out, reference=ref)                   # every board
    import_model(src, "lab", "hailo8l", out, reference=ref)               # emulated hailo8l boards
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    hef = tmp_path / "lab.hef"
    hef.write_bytes(b"hef" * 50)
    import_model(hef, "lab", "hailo8l", out, reference=ref, force=True,   # replaces the hailo8l ONNX
                 inputs="x:float32[2,4]", outputs="y:float32[2,3]")
    f = tmp_path / "lab.rknn"
    f.write_bytes(b"rknn" * 50)
    monkeypatch.setitem(sys.modules, "rknnlite.api", None)
    import_model(f, "rkonly", "rk3588", out, inputs="x:float32[2,4]")     # only real rk3588 boards
    man = load_manifest(out)

    def files(b):
        arts = select(b, man, out)
        verify(arts)
        return {(a.model, a.name) for a in arts if a.model in ("lab", "rkonly")}

    cpu = {("lab", "model-cpu.onnx"), ("lab", "reference-cpu.onnx")}
    assert files(_board("c", "cpu", False)) == cpu
    assert files(_board("e", "hailo8l", True)) == cpu | {("lab", "reference-hailo8l.onnx")}  # reference stands in
    assert files(_board("h", "hailo8l", False)) == cpu | {("lab", "model-hailo8l.hef"), ("lab", "reference-hailo8l.onnx")}
    assert files(_board("h8", "hailo8", False)) == files(_board("h", "hailo8l", False))  # 8L HEF runs on a Hailo-8
    assert files(_board("r", "rk3588", False)) == cpu | {("rkonly", "model-rk3588.rknn")}
    assert files(_board("re", "rk3588", True)) == cpu  # an emulated RK3588 cannot run the .rknn
    # a corrupt copy is caught before anything is deployed, with the import command as the fix
    p = out / "cpu" / "lab" / "model-cpu.onnx"
    os.chmod(p, 0o644)
    p.write_bytes(b"corrupt")
    with pytest.raises(FleetError, match="sha256 mismatch") as ei:
        verify(select(_board("c", "cpu", False), man, out))
    assert "fleet models import" in ei.value.fix
