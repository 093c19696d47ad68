"""Board families end to end (issue 15 §3): an emulated Pi 5 + AI HAT+ 2 (the built-in
``pi5-hailo10h`` family) and an emulated board of the example plug-in's ``lab-rk3576`` family
(examples/fleet-example-plugin, installed with ``pip install --no-deps --target`` into a temporary
folder on sys.path and PYTHONPATH, never into the shared venv), brought up by ``fleet sim up
--mix``, deployed by the real ``fleet deploy`` (Ansible over SSH; the board has no copy of the
plug-in, its agent.yml carries the family), and ``suites/model_bench`` run on both with the MiniLM
static encoder the repo builds imported for each target (read only from artifacts/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from device_agent import families as fam_mod
from fleet.deploy.run import deploy
from fleet.inventory import load_inventory
from fleet.models.importer import import_model
from fleet.paths import artifacts_dir
from fleet.results.store import Store
from fleet.runner.cli import run_suite
from fleet.sim import lifecycle

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "model_bench"
SPEC = "input_ids:int64[1,256]=0..30521;attention_mask:int64[1,256]=1..1"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("families-e2e")
    src = artifacts_dir() / "cpu" / "minilm-l6-v2"
    model, ref = src / "encoder_static.int8.onnx", src / "encoder_static.onnx"
    if not model.is_file() or not ref.is_file():
        pytest.fail(f"{src} lacks the MiniLM static encoder: run `fleet models build minilm-l6-v2`")
    shutil.copytree(ROOT / "examples" / "fleet-example-plugin", base / "plugin-src")
    site = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(base / "plugin-src")], check=True, timeout=300)
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(site))
    mp.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    fam_mod.reload()
    state, inv = base / "sim", base / "inventory" / "sim.yml"
    try:
        arts = base / "artifacts"  # never the shared artifacts/
        for target in ("hailo10h", "rk3576"):  # an .onnx for an NPU target: what its emulated boards run
            import_model(model, "minilm-fam", target, arts, reference=ref, inputs=SPEC)
        lifecycle.up(state, inv, mix="pi5-hailo10h:1,lab-rk3576:1", use_netns=os.geteuid() == 0)
        d = deploy(inv, artifacts_dir=arts, runs_dir=base / "runs", models=("minilm-fam",), datasets=())
        assert d.exit_code == 0, d.to_dict()
        suite = base / "model_bench"
        shutil.copytree(SUITE, suite)
        text = (suite / "suite.yml").read_text().replace("model: minilm-bench", "model: minilm-fam")
        text = text.replace("accelerators: [hailo8l, hailo8, hailo10h, rk3588, cpu]", "accelerators: [hailo10h, rk3576]")
        (suite / "suite.yml").write_text(text)
        yield {"inventory": inv, "db": base / "results.db", "suite": suite}
    finally:
        lifecycle.down(state)
        mp.undo()
        fam_mod.reload()


def test_hailo10h_and_plugin_boards_deploy_and_run_model_bench(fleet):
    boards = {b.accelerator: b for b in load_inventory(fleet["inventory"])}
    assert {(b.name, b.board) for b in boards.values()} == {("sim-pi5h10-1", "pi5-hailo10h"), ("sim-rk3576-1", "rk3576")}
    agent10 = yaml.safe_load((Path(boards["hailo10h"].fleet_root) / "agent.yml").read_text())
    agent76 = yaml.safe_load((Path(boards["rk3576"].fleet_root) / "agent.yml").read_text())
    assert "family" not in agent10  # built-in: the board knows it
    assert agent76["family"]["name"] == "lab-rk3576" and agent76["family"]["npu_backend"] == "rknn"
    for acc, b in boards.items():
        shipped = sorted(p.name for p in (Path(b.fleet_root) / "models" / "minilm-fam").iterdir())
        assert f"model-{acc}.onnx" in shipped and not any(acc2 in " ".join(shipped) for acc2 in boards if acc2 != acc)
    run_id, rc = run_suite(str(fleet["suite"]), str(fleet["inventory"]), db=str(fleet["db"]), quiet=True)
    results = Store(fleet["db"]).results(run_id)
    assert rc == 0, [(r.board, r.test, r.outcome, r.message[:300]) for r in results]
    got = {(r.board, r.test): r for r in results}
    for name in ("sim-pi5h10-1", "sim-rk3576-1"):
        assert {t for (b, t) in got if b == name} == {"test_agent_reports_board", "test_latency", "test_throughput",
                                                     "test_parity"}
    for acc, b in boards.items():
        lat = got[(b.name, "test_latency")]
        assert lat.outcome == "passed" and lat.emulated is True and lat.backends["inference"] == "onnx"
        assert acc in lat.backends["emulation"], lat.backends
        m = {x.name: x for x in lat.metrics}
        assert m["latency_p50_ms"].value > 0 and m["energy_per_inference_j"].value > 0  # the family's thermal model
