"""suites/model_bench end to end, as the README's worked example does it: the MiniLM static
encoder the repo builds (artifacts/cpu/minilm-l6-v2, read only) imported under a new name into a
temporary artifacts root, deployed by the real `fleet deploy` (Ansible over real SSH) to an
emulated Pi 5 + Hailo-8L, and `fleet test suites/model_bench` run on it; results from the store.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

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


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench-e2e")
    src = artifacts_dir() / "cpu" / "minilm-l6-v2"
    model, ref = src / "encoder_static.int8.onnx", src / "encoder_static.onnx"
    if not model.is_file() or not ref.is_file():
        pytest.fail(f"{src} lacks the MiniLM static encoder: run `fleet models build minilm-l6-v2`")
    shared_manifest = artifacts_dir() / "manifest.json"
    before = {p: _sha(p) for p in (model, ref, shared_manifest)}
    arts = base / "artifacts"  # never the shared artifacts/
    res = import_model(model, "minilm-bench", "cpu", arts, reference=ref, inputs=SPEC)
    assert {p: _sha(p) for p in before} == before  # sources and the shared manifest untouched
    state, inv = base / "sim", base / "inventory" / "sim.yml"
    try:
        lifecycle.up(state, inv, mix="pi5-hailo8l:1", use_netns=os.geteuid() == 0)
        d = deploy(inv, artifacts_dir=arts, runs_dir=base / "runs", models=("minilm-bench",), datasets=())
        assert d.exit_code == 0, d.to_dict()
        yield {"inventory": inv, "db": base / "results.db", "entries": res["entries"]}
    finally:
        lifecycle.down(state)


def test_model_bench_suite_on_an_emulated_board(fleet):
    board = load_inventory(fleet["inventory"])[0]
    mdir = Path(board.fleet_root) / "models" / "minilm-bench"
    shipped = json.loads((mdir / "manifest.json").read_text())["artifacts"]
    assert sorted(e["path"] for e in shipped) == ["model-cpu.onnx", "reference-cpu.onnx"]
    assert all(e["imported"] for e in shipped)
    run_id, rc = run_suite(str(SUITE), str(fleet["inventory"]), db=str(fleet["db"]), quiet=True)
    results = Store(fleet["db"]).results(run_id)
    assert rc == 0, [(r.test, r.outcome, r.message[:300]) for r in results]
    tests = {r.test: r for r in results}
    assert set(tests) == {"test_agent_reports_board", "test_latency", "test_throughput", "test_parity"}
    assert all(r.outcome == "passed" and r.emulated is True for r in results)
    m = {(r.test, x.name): x for r in results for x in r.metrics}
    assert m[("test_latency", "latency_n")].value >= 101
    for k in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_p90_early_stopping_ms"):
        assert m[("test_latency", k)].value > 0 and m[("test_latency", k)].unit == "ms"
    assert m[("test_latency", "measurement_valid")].value == 1.0
    assert m[("test_latency", "energy_per_inference_j")].value > 0  # emulated power sensor
    assert m[("test_throughput", "throughput_ips")].value > 5
    assert m[("test_throughput", "throughput_ips")].direction == "higher"
    cos = m[("test_parity", "parity_cosine_min")].value
    assert 0.975 < cos < 1.0  # INT8 dynamic vs fp32: a real, small difference
    lat = tests["test_latency"]
    assert lat.backends["inference"] == "onnx"
    assert lat.backends["emulation"] == "cpu ONNX model-cpu.onnx stands in for the hailo8l NPU"
    print({k[1]: round(v.value, 4) for k, v in m.items()})


def test_a_model_neither_deployed_nor_imported_fails_with_the_fix(fleet, tmp_path):
    """A suite.yml naming a model nobody imported: test_agent_reports_board fails with the import
    command and the measuring tests skip (a suite that skipped everything would look like a pass)."""
    import shutil

    suite = tmp_path / "model_bench"
    shutil.copytree(SUITE, suite)
    text = (suite / "suite.yml").read_text().replace("model: minilm-bench", "model: nobody-imported-me")
    (suite / "suite.yml").write_text(text)
    run_id, rc = run_suite(str(suite), str(fleet["inventory"]), db=str(fleet["db"]), quiet=True)
    results = {r.test: r for r in Store(fleet["db"]).results(run_id)}
    assert rc == 1, [(r.test, r.outcome, r.message[:200]) for r in results.values()]
    first = results["test_agent_reports_board"]
    assert first.outcome == "failed" and "fleet models import FILE --name nobody-imported-me" in first.message
    for t in ("test_latency", "test_throughput", "test_parity"):
        assert results[t].outcome == "skipped" and "nor imported" in results[t].message, (t, results[t].outcome)
