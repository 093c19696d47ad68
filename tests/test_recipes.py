"""Model recipes (fleet.models.recipes): the registry, its plug-ins, and the dispatch of build,
target_build, calibration, npu_graphs and parity through it.

Fast: a tiny fake recipe (one 8x4 MatMul ONNX graph, random calibration data) goes through the
real build skeleton (cache, temp dir and swap, manifest) for cpu and for an NPU target without
its compiler; no model weights are loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from fleet.errors import FleetError
from fleet.models import manifest as mf
from fleet.models import recipes
from fleet.models.recipes.base import CalibrationDraw, Recipe

REPO = Path(__file__).resolve().parents[1]
IN = [{"name": "x", "shape": [1, 8], "dtype": "float32"}]
OUT = [{"name": "y", "shape": [1, 4], "dtype": "float32"}]


def write_matmul(path: Path, seed: int = 0) -> None:
    """A valid ONNX graph y f32 [1,4] = x f32 [1,8] @ W (opset 17, IR 8), deterministic bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "fake",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


class FakeNet(Recipe):
    """A recipe with every part: cpu build, one NPU graph, calibration and a parity task."""

    name = "fake-net"
    summary = "an 8x4 MatMul (tests)"
    verification = "none"
    pipeline = "fake.pipeline"
    calibration_data = ("speech",)
    calibration_rule = "random normal rows"
    calls: ClassVar[list] = []

    def expected_files(self):
        return [("net", "fp32", "net.onnx")]

    def source_info(self):
        return {"package": "fake", "version": "1", "sha256": "0" * 64}

    def build_cpu(self, work, report):
        self.calls.append(("build_cpu", Path(work).parent))
        with report.step("write net.onnx") as s:
            write_matmul(work / "net.onnx")
            s["detail"] = "8x4"
        return [{"model": self.name, "role": "net", "variant": "fp32", "target": "cpu", "format": "onnx",
                 "path": "net.onnx", "inputs": IN, "outputs": OUT, "quantization": "none"}], {}

    def npu_graphs(self):
        return {"net_npu": (IN, OUT)}

    def build_npu_graphs(self, work, report):
        from fleet.models.npu_graphs import NpuGraph

        self.calls.append(("build_npu_graphs", Path(work).parent))
        write_matmul(work / "net_npu.onnx")
        return [NpuGraph("net_npu", "net_npu.onnx", IN, OUT)]

    def calibration_arrays(self, graph, inputs, n, root=None):
        rows = np.random.default_rng(1).standard_normal((n, 1, 8)).astype(np.float32)
        return CalibrationDraw({inputs[0]["name"]: rows}, [{"row": i} for i in range(n)], f"{n} random rows")

    def parity_task(self, req):
        return {}, {"metric": "fake", "value": 1}

    def format_task(self, t):
        return f"fake metric {t['value']}"


class CpuOnly(Recipe):
    """Only the abstract methods: no NPU graphs, no calibration, no parity."""

    name = "cpu-only"

    def expected_files(self):
        return [("net", "fp32", "net.onnx")]

    def source_info(self):
        return {"package": "fake", "version": "1", "sha256": "1" * 64}

    def build_cpu(self, work, report):
        write_matmul(work / "net.onnx")
        return [{"model": self.name, "role": "net", "variant": "fp32", "target": "cpu", "format": "onnx",
                 "path": "net.onnx", "inputs": IN, "outputs": OUT, "quantization": "none"}], {}


@pytest.fixture
def fake():
    FakeNet.calls = []
    r = recipes.register(FakeNet)
    recipes.register(CpuOnly)
    yield r
    recipes.unregister("fake-net")
    recipes.unregister("cpu-only")


# ---------------------------------------------------------------- registry


def test_builtins_are_one_file_each():
    names = recipes.names()
    assert names == ("crepe-tiny", "minilm-l6-v2", "whisper-tiny.en")
    files = {type(r).__module__ for r in recipes.all_recipes()}
    assert files == {"fleet.models.recipes.crepe_tiny", "fleet.models.recipes.minilm_l6_v2",
                     "fleet.models.recipes.whisper_tiny_en"}
    for r in recipes.all_recipes():
        keys = [(role, v) for role, v, _ in r.expected_files()]
        assert len(keys) == len(set(keys)) and keys
        assert r.has_npu_graphs and r.pipeline and r.calibration_data and r.verification
        assert set(r.describe()) >= {"name", "npu_graphs", "pipeline", "recipe"}


def test_build_module_keeps_its_names():
    from fleet.models import build

    assert build.KNOWN_MODELS == recipes.names()
    with pytest.raises(AttributeError):
        build.NO_SUCH_NAME  # noqa: B018


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(FleetError) as e:
        recipes.get("whisper-large")
    assert e.value.exit_code == 2
    assert "unknown model 'whisper-large'; known models: crepe-tiny, minilm-l6-v2, whisper-tiny.en" in e.value.message
    assert "fleet models list" in e.value.fix
    assert recipes.find("whisper-large") is None


def test_register_and_unregister(fake):
    assert recipes.get("fake-net") is fake and "fake-net" in recipes.names()
    with pytest.raises(FleetError, match="already registered"):
        recipes.register(FakeNet)
    recipes.register(FakeNet, replace=True)
    with pytest.raises(FleetError, match="not a fleet.models.recipes.base.Recipe"):
        recipes.register(object())

    class Incomplete(Recipe):
        name = "incomplete"

    with pytest.raises(FleetError, match="cannot instantiate Incomplete"):
        recipes.register(Incomplete)
    recipes.unregister("fake-net")
    assert recipes.find("fake-net") is None


@pytest.fixture
def plugins(monkeypatch, tmp_path):
    """Entry points of group fleet.recipes served from modules in tmp_path."""
    eps: list = []
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(recipes, "_entry_points", lambda: list(eps))
    recipes.reload()

    def add(name: str, module: str, code: str, attr: str | None = None) -> None:
        (tmp_path / f"{module}.py").write_text(code)
        eps.append(metadata.EntryPoint(name, f"{module}:{attr}" if attr else module, recipes.ENTRY_POINT_GROUP))
        recipes.reload()

    yield add
    recipes.reload()
    for mod in [m for m in sys.modules if m.startswith("lab_")]:
        del sys.modules[mod]


PLUGIN = '''
from fleet.models.recipes.base import Recipe

class Yolo(Recipe):
    name = "lab-yolo"
    def expected_files(self): return [("net", "fp32", "net.onnx")]
    def source_info(self): return {"package": "lab", "version": "1", "sha256": "2" * 64}
    def build_cpu(self, work, report): return [], {}
'''


def test_plugin_through_entry_point(plugins):
    plugins("lab-yolo", "lab_models", PLUGIN, "Yolo")
    assert recipes.names() == ("crepe-tiny", "lab-yolo", "minilm-l6-v2", "whisper-tiny.en")
    assert type(recipes.get("lab-yolo")).__module__ == "lab_models"
    # a module with RECIPE works too
    plugins("lab-yolo2", "lab_mod2", PLUGIN.replace('"lab-yolo"', '"lab-yolo2"') + "RECIPE = Yolo()\n")
    assert "lab-yolo2" in recipes.names() and not recipes.get("lab-yolo2").has_npu_graphs


@pytest.mark.parametrize("code, attr, match", [
    ("raise ImportError('no module named vendor_sdk')\n", None,
     r"plug-in 'bad' \(lab_bad, entry point group fleet.recipes.*failed to load: ImportError: no module named vendor_sdk"),
    ("class NotARecipe: pass\n", "NotARecipe", "is type, not a fleet.models.recipes.base.Recipe"),
    (PLUGIN.replace('"lab-yolo"', '"whisper-tiny.en"'), "Yolo",
     "reuses the model name 'whisper-tiny.en', which fleet.models.recipes.whisper_tiny_en already defines"),
])
def test_failing_plugin_is_a_clear_error(plugins, code, attr, match):
    plugins("bad", "lab_bad", code, attr)
    with pytest.raises(FleetError, match=match) as e:
        recipes.names()
    assert e.value.exit_code == 2 and ("uninstall" in e.value.fix)


def test_failing_plugin_leaves_help_working(plugins):
    from fleet.cli import main

    plugins("bad", "lab_bad", "raise RuntimeError('boom')\n")
    with pytest.raises(SystemExit) as e:
        main(["models", "build", "--help"])
    assert e.value.code == 0
    assert main(["models", "list"]) == 2  # the CLI reports the FleetError (exit 2)


# ---------------------------------------------------------------- dispatch


def test_fake_recipe_goes_through_the_cpu_skeleton(fake, tmp_path):
    from fleet.models.build import Report, build, up_to_date

    out = tmp_path / "artifacts"
    lines: list[str] = []
    report = Report(echo=lines.append)
    entries = build("fake-net", "cpu", out, report=report)
    assert report.metrics["cached"] is False and [t for t, _ in report.steps] == ["write net.onnx"]
    (e,) = entries
    assert e["path"] == "cpu/fake-net/net.onnx" and e["sha256"] == mf.sha256_file(out / e["path"])
    assert e["source"] == fake.source_info() and e["exporter"]["opset"] == 20
    assert [x["model"] for x in mf.read_manifest(out)] == ["fake-net"]
    assert FakeNet.calls == [("build_cpu", out)]  # the temp folder was inside out
    assert not [p for p in out.iterdir() if p.name.startswith((".build-", ".old-"))]
    assert "wrote 1 entries" in lines[-1]
    # up to date: nothing runs again
    again = Report()
    assert build("fake-net", "cpu", out, report=again) == entries
    assert again.metrics["cached"] is True and again.steps == [] and len(FakeNet.calls) == 1
    assert up_to_date("fake-net", "cpu", out, fake.source_info(), {}) is None  # another exporter


def test_failed_recipe_build_leaves_nothing(fake, tmp_path, monkeypatch):
    from fleet.models.build import build

    out = tmp_path / "artifacts"
    build("cpu-only", "cpu", out)
    before = (out / mf.MANIFEST).read_bytes()

    def boom(self, work, report):
        (work / "net.onnx").write_bytes(b"half")
        raise FleetError("verification failed: test", "none", exit_code=3)

    monkeypatch.setattr(FakeNet, "build_cpu", boom)
    with pytest.raises(FleetError, match="verification failed"):
        build("fake-net", "cpu", out)
    assert (out / mf.MANIFEST).read_bytes() == before
    assert sorted(p.name for p in (out / "cpu").iterdir()) == ["cpu-only"]
    assert sorted(p.name for p in out.iterdir()) == ["cpu", "manifest.json"]


def test_fake_recipe_goes_through_the_npu_skeleton(fake, tmp_path, monkeypatch):
    """NPU graph, calibration set and static QDQ INT8 model of the fake recipe, no compiler."""
    from fleet.models.build import Report, build

    monkeypatch.setitem(sys.modules, "hailo_sdk_client", None)
    out = tmp_path / "artifacts"
    report = Report()
    entries = build("fake-net", "hailo8l", out, report=report, calib_n=5)
    by = {(e["role"], e["variant"]): e for e in entries}
    assert set(by) == {("net_npu", "fp32"), ("net_npu", "int8")}
    int8 = by[("net_npu", "int8")]
    assert int8["path"] == "hailo8l/fake-net/net_npu.int8.onnx" and int8["compiled"] is False
    assert int8["quantization"].startswith("int8-static-qdq")
    cal = int8["calibration"]
    assert cal["n"] == 5 and cal["path"] == "hailo8l/fake-net/calibration/calib_net_npu.npz"
    side = json.loads((out / cal["path"]).with_suffix(".json").read_text())
    assert side["model"] == "fake-net" and "random rows" in side["source"] and "random normal rows" in side["source"]
    assert FakeNet.calls == [("build_npu_graphs", out)]
    again = Report()
    assert build("fake-net", "hailo8l", out, report=again, calib_n=5) == entries
    assert again.metrics["cached"] is True and len(FakeNet.calls) == 1


def test_recipe_without_npu_graphs_calibration_or_parity(fake, tmp_path):
    from fleet.models.build import build
    from fleet.models.calibration import build_calibration_set
    from fleet.models.npu_graphs import graph_roles
    from fleet.models.parity import run_parity

    with pytest.raises(FleetError, match="no NPU graphs for model 'cpu-only'") as e:
        build("cpu-only", "rk3588", tmp_path)
    assert e.value.exit_code == 2 and "fake-net" in e.value.fix
    assert not (tmp_path / "manifest.json").exists()
    assert list(graph_roles("fake-net")) == ["net_npu"]
    write_matmul(tmp_path / "g.onnx")
    with pytest.raises(FleetError, match="no calibration data recipe for model 'cpu-only'"):
        build_calibration_set("cpu-only", tmp_path / "g.onnx", tmp_path / "c")
    c = build_calibration_set("fake-net", tmp_path / "g.onnx", tmp_path / "c", n=3)
    assert c.n == 3 and c.path.name == "calib_g.npz"
    with pytest.raises(FleetError, match="no parity recipe for model 'cpu-only'") as e:
        run_parity("cpu-only", "cpu", tmp_path)
    assert e.value.exit_code == 2 and "whisper-tiny.en" in e.value.fix


def test_parity_table_line_comes_from_the_recipe(fake):
    from fleet.models.parity import format_table

    res = {"model": "fake-net", "target": "cpu", "emulation": "x", "reference": {"artifact": "a"},
           "candidate": {"artifact": "b"}, "outputs": {}, "task": {"metric": "fake", "value": 7}, "seconds": 1}
    assert "  fake metric 7" in format_table(res).splitlines()
    whisper = {**res, "model": "whisper-tiny.en", "task": {
        "metric": "wer", "wer_reference": 0.1, "wer_candidate": 0.12, "wer_delta": 0.02, "clips": 11,
        "transcripts_changed": 2}}
    assert "  WER 10.00% -> 12.00% (delta +2.00%, 11 clips, 2 transcripts changed)" in format_table(whisper)


def test_minilm_parity_options():
    assert recipes.get("minilm-l6-v2").parity_options("cpu", {"precision": "int8", "threads": 0}) == {
        "precision": "int8", "threads": 0, "encoder": "static"}
    assert recipes.get("minilm-l6-v2").parity_options("rk3588", {"threads": 1})["encoder"] == "auto"
    assert recipes.get("whisper-tiny.en").parity_options("rk3588", {"threads": 1}) == {"threads": 1}


def test_models_list_cli(capsys, fake):
    from fleet.cli import main

    assert main(["models", "list", "--names"]) == 0
    assert capsys.readouterr().out.split() == ["cpu-only", "crepe-tiny", "fake-net", "minilm-l6-v2",
                                               "whisper-tiny.en"]
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cpu-only"]["npu_graphs"] == [] and rows["cpu-only"]["pipeline"] is None
    assert rows["whisper-tiny.en"]["npu_graphs"] == ["decoder_npu", "encoder_npu"]


def test_no_import_cycle_and_light_registry():
    code = ("import sys, fleet.models.target_build, fleet.models.recipes as r\n"
            "r.names()\n"
            "print(sorted(m for m in sys.modules if m == 'fleet.models.build' or m.split('.')[0] in "
            "('torch', 'onnx', 'onnxruntime', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_fake_recipe_compiled_by_the_fake_rknn_toolkit(fake, tmp_path, monkeypatch):
    """The compiled path of the NPU skeleton (rk3588, fake rknn-toolkit2 venv) and its cache
    rules: same toolchain -> cached; toolchain gone -> rebuild needed."""
    from test_compile_adapters import make_fake_rknn_venv

    from fleet.models.build import Report, build
    from fleet.models.target_build import compiler_state, npu_exporter_info, up_to_date

    monkeypatch.setenv("FLEET_RKNN_VENV", str(make_fake_rknn_venv(tmp_path / "tc")))
    monkeypatch.setenv("FAKE_RKNN_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAKE_RKNN_FAIL", raising=False)
    out = tmp_path / "artifacts"
    entries = build("fake-net", "rk3588", out, calib_n=4)
    npu = {(e["role"], e["variant"]): e for e in entries}[("net_npu", "npu")]
    assert npu["format"] == "rknn" and npu["path"] == "rk3588/fake-net/net_npu.rknn" and npu["compiled"] is True
    assert (out / npu["path"]).read_bytes() == b"RKNN-FAKE"
    again = Report()
    assert build("fake-net", "rk3588", out, report=again, calib_n=4) == entries and again.metrics["cached"]
    state = compiler_state("rk3588")
    assert up_to_date("fake-net", "rk3588", out, fake.source_info(), npu_exporter_info(), state) == entries
    monkeypatch.setenv("FLEET_RKNN_VENV", str(tmp_path / "none"))
    gone = compiler_state("rk3588")
    assert gone["available"] is False
    assert up_to_date("fake-net", "rk3588", out, fake.source_info(), npu_exporter_info(), gone) is None


def test_plugin_package_found_by_importlib_metadata(tmp_path):
    """A lab's package on sys.path (a dist-info with entry_points.txt, as pip installs it) adds a
    model to `fleet models list` without any edit in fleet."""
    import os

    site = tmp_path / "site"
    dist = site / "lab_recipes-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-recipes\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[fleet.recipes]\nlab-yolo = lab_recipes:Yolo\n")
    (site / "lab_recipes.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    run = subprocess.run([sys.executable, "-m", "fleet", "models", "list", "--names"], capture_output=True,
                         text=True, cwd=REPO, env=env, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["crepe-tiny", "lab-yolo", "minilm-l6-v2", "whisper-tiny.en"]
    (site / "lab_recipes.py").write_text("import vendor_sdk_that_is_missing\n")
    run = subprocess.run([sys.executable, "-m", "fleet", "models", "list"], capture_output=True, text=True,
                         cwd=REPO, env=env, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "model recipe plug-in 'lab-yolo' (lab_recipes:Yolo, entry point group fleet.recipes, from lab-recipes)" \
        " failed to load: ModuleNotFoundError" in run.stderr
    assert "pip uninstall lab-recipes" in run.stderr
