"""`fleet deploy` end to end: real sshd boards (fleet sim), real ansible-runner, a small fake
artifact set. Checks idempotency (second deploy changed=0), unreachable hosts (exit 3 while the
others deploy) and the sha256 check that stops a corrupt artifact before anything is deployed."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from fleet.datasets.catalog import get_dataset
from fleet.deploy import cli as deploy_cli
from fleet.deploy.artifacts import load_manifest, select
from fleet.deploy.plan import dataset_bundle, dataset_specs, make_plan
from fleet.deploy.run import deploy, rotate_runs
from fleet.deploy.wheelhouse import expand_platform, source_key
from fleet.errors import FleetError
from fleet.inventory import Board
from fleet.paths import data_root
from fleet.sim import lifecycle

MODEL = "whisper-tiny.en"
SMOKE = "speech:smoke"  # a few real clips of the speech data set (fleet/datasets/catalog/speech.yml)
SLOW = pytest.mark.slow  # real sshd boards and ansible-runner
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv: str) -> int:
    """Run `fleet deploy ...` through its own parser (fleet.cli also loads other packages)."""
    parser = argparse.ArgumentParser(prog="fleet")
    deploy_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def make_artifacts(root: Path) -> Path:
    """A tiny manifest in the contracts §3 shape: cpu ONNX fp32/int8 + support files, a HEF for
    hailo8l, an RKNN for rk3588 and another model that boards must not get."""
    entries = []

    def add(model, target, role, variant, fmt, name, data: bytes):
        rel = f"{target}/{model}/{name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        entries.append({"model": model, "role": role, "variant": variant, "target": target, "format": fmt,
                        "path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})

    add(MODEL, "cpu", "encoder", "fp32", "onnx", "encoder.onnx", b"fp32-encoder" * 100)
    add(MODEL, "cpu", "encoder", "int8", "onnx", "encoder.int8.onnx", b"int8-encoder" * 50)
    add(MODEL, "cpu", "decoder_step", "int8", "onnx", "decoder_step.int8.onnx", b"int8-decoder" * 50)
    add(MODEL, "cpu", "tokenizer", "fp32", "json", "tokenizer.json", b'{"model": "tiny"}')
    add(MODEL, "cpu", "tokenizer", "int8", "json", "tokenizer.json", b'{"model": "tiny"}')  # one file, two entries
    add(MODEL, "cpu", "decoder_ct2", "fp32", "ct2", "ct2/model.bin", b"ct2 weights")  # sub-folder kept
    add(MODEL, "cpu", "mel_filters", "", "npy", "mel_filters.npy", b"\x93NUMPY fake")
    add(MODEL, "cpu", "generation", "", "json", "generation.json", b'{"sot": 50257}')
    add(MODEL, "hailo8l", "encoder", "int8", "hef", "encoder.hef", b"hef" * 10)
    add(MODEL, "rk3588", "encoder", "int8", "rknn", "encoder.rknn", b"rknn" * 10)
    # a role no pipeline loads (the full-NPU decoder of a target build): never shipped
    add(MODEL, "rk3588", "decoder_npu", "int8", "rknn", "decoder_npu.rknn", b"dec" * 10)
    add("other-model", "cpu", "encoder", "fp32", "onnx", "other.onnx", b"other")
    (root / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": entries}, indent=2))
    return root


@pytest.fixture(scope="module")
def fleet_env(tmp_path_factory):
    """Three namespaced boards (2 x Pi 5, 1 x RK3588), fake artifacts, the speech data set's smoke
    selection from the data root. The sim is taken down at the end, also when a test fails."""
    base = tmp_path_factory.mktemp("deploy")
    arts = make_artifacts(base / "artifacts")
    state_dir, inv = base / "sim", base / "inventory" / "sim.yml"
    try:
        # as root each board gets a network namespace; otherwise sshd on 127.0.0.1
        state = lifecycle.up(state_dir, inv, mix="pi5-hailo8l:2,rk3588:1", use_netns=os.geteuid() == 0)
        yield {"state": state, "inventory": inv, "artifacts": arts, "datasets": (SMOKE,),
               "runs": base / "runs", "base": base}
    finally:
        lifecycle.down(state_dir)


def changed_tasks(run_dir: str) -> list[str]:
    """'host: task' for every task that reported a change (from ansible-runner's job events)."""
    out = []
    for f in sorted(Path(run_dir, "ansible", "artifacts").glob("*/job_events/*.json")):
        ev = json.loads(f.read_text())
        data = ev.get("event_data", {})
        if ev.get("event") == "runner_on_ok" and (data.get("res") or {}).get("changed"):
            out.append(f"{data.get('host')}: {data.get('task')}")
    return out


def by_host(result) -> dict:
    return {h.host: h for h in result.hosts}


@SLOW
def test_deploy_two_boards_then_nothing_changes(fleet_env, capsys):
    env = fleet_env
    kw = dict(limit="sim-pi5-1,sim-rk3588-1", artifacts_dir=env["artifacts"],
              datasets=env["datasets"], runs_dir=env["runs"], models=(MODEL,))
    key_before = source_key(ROOT, "")
    first = deploy(env["inventory"], **kw)
    hosts = by_host(first)
    assert first.exit_code == 0, first.to_dict()
    assert set(hosts) == {"sim-pi5-1", "sim-rk3588-1"}
    assert all(h.status in ("ok", "changed") and h.failed == 0 for h in hosts.values())

    for b in env["state"].boards:
        root = Path(b.root)
        if b.name == "sim-pi5-2":
            assert not (root / "agent.yml").exists()  # --limit left it alone
            continue
        assert (root / "venv" / "bin" / "fleet-agent").exists()
        agent = (root / "agent.yml").read_text()
        assert f"board: {b.board}" in agent and "emulated: true" in agent and f"fleet_root: {root}" in agent
        mdir = root / "models" / MODEL
        files = sorted(str(p.relative_to(mdir)) for p in mdir.rglob("*") if p.is_file() and not p.name.startswith("."))
        assert files == sorted(["encoder.onnx", "encoder.int8.onnx", "decoder_step.int8.onnx", "tokenizer.json",
                                "mel_filters.npy", "generation.json", "ct2/model.bin", "manifest.json", "SHA256SUMS"])
        man = json.loads((mdir / "manifest.json").read_text())
        assert {e["target"] for e in man["artifacts"]} == {"cpu"}  # emulated: no HEF/RKNN
        assert all((mdir / e["path"]).is_file() for e in man["artifacts"])
        assert not (root / "models" / "other-model").exists()
        speech = get_dataset("speech")
        on_board = sorted(p.name for p in (root / "data" / "speech").iterdir() if not p.name.startswith("."))
        assert on_board == sorted([e.path for e in speech.selected("smoke")] + ["SHA256SUMS"])
        assert on_board != sorted(e.path for e in speech.files)  # the selection, not the whole set
        clip = speech.selections["smoke"][0]
        assert (root / "data" / "speech" / clip).read_bytes() == (data_root() / speech.path / clip).read_bytes()
        assert (root / "wheelhouse").is_dir() and any((root / "wheelhouse").glob("fleet-*.whl"))

    capsys.readouterr()
    rc = run_cli("deploy", "--inventory", str(env["inventory"]), "--limit", "sim-pi5-1,sim-rk3588-1",
                 "--artifacts", str(env["artifacts"]), "--models", MODEL, "--datasets", SMOKE,
                 "--runs-dir", str(env["runs"]), "--json")
    out = json.loads(capsys.readouterr().out)
    if any(h["changed"] for h in out["hosts"]) and source_key(ROOT, "") != key_before:
        # someone edited fleet/ or device_agent/ during the test: the wheelhouse was rebuilt and
        # reinstalled, which is right; the fleet must settle on the next deploy
        assert run_cli("deploy", "--inventory", str(env["inventory"]), "--limit", "sim-pi5-1,sim-rk3588-1",
                       "--artifacts", str(env["artifacts"]), "--models", MODEL, "--datasets", SMOKE,
                       "--runs-dir", str(env["runs"]), "--json") == 0
        out = json.loads(capsys.readouterr().out)
    with capsys.disabled():
        print(f"\nfirst deploy: {first.seconds:.1f} s, second deploy: {out['seconds']} s")
    assert rc == 0 and out["exit_code"] == 0
    assert [(h["host"], h["status"], h["changed"]) for h in out["hosts"]] == [
        ("sim-pi5-1", "ok", 0), ("sim-rk3588-1", "ok", 0)], changed_tasks(out["run_dir"])
    assert Path(out["run_dir"], "ansible", "artifacts").is_dir()


@SLOW
def test_damaged_artifact_on_board_is_found_and_shipped_again(fleet_env):
    env = fleet_env
    board = next(b for b in env["state"].boards if b.name == "sim-pi5-1")
    target = Path(board.root) / "models" / MODEL / "encoder.onnx"
    good = (env["artifacts"] / "cpu" / MODEL / "encoder.onnx").read_bytes()
    target.write_bytes(b"bit rot")
    result = deploy(env["inventory"], limit="sim-pi5-1", artifacts_dir=env["artifacts"],
                    datasets=env["datasets"], runs_dir=env["runs"], models=(MODEL,))
    assert result.exit_code == 0 and result.hosts[0].changed > 0
    assert any("Unpack into models/" in t for t in changed_tasks(result.run_dir))
    assert target.read_bytes() == good


@SLOW
def test_unreachable_board_gives_exit_3_while_others_deploy(fleet_env, capsys):
    env = fleet_env
    assert lifecycle.stop_board(env["state"].state_dir, "sim-pi5-2")
    rc = run_cli("deploy", "--inventory", str(env["inventory"]), "--limit", "sim-pi5-*",
                 "--artifacts", str(env["artifacts"]), "--models", MODEL, "--datasets", SMOKE,
                 "--runs-dir", str(env["runs"]))
    out = capsys.readouterr().out
    assert rc == 3
    assert "unreachable" in out
    result = json.loads(sorted(env["runs"].glob("deploy-*/deploy.json"))[-1].read_text())
    hosts = {h["host"]: h for h in result["hosts"]}
    assert hosts["sim-pi5-2"]["status"] == "unreachable" and hosts["sim-pi5-2"]["reason"]
    assert hosts["sim-pi5-1"]["status"] in ("ok", "changed") and hosts["sim-pi5-1"]["failed"] == 0
    assert (Path(env["state"].boards[0].root) / "agent.yml").exists()


@SLOW
def test_failed_host_gives_exit_1_with_reason(fleet_env, tmp_path):
    env = fleet_env
    inv = yaml.safe_load(env["inventory"].read_text())
    inv["all"]["hosts"]["sim-rk3588-1"]["ansible_python_interpreter"] = "/nonexistent/python3"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(inv))
    result = deploy(broken, limit="sim-rk3588-1", artifacts_dir=env["artifacts"],
                    datasets=env["datasets"], runs_dir=env["runs"])
    (h,) = result.hosts
    assert result.exit_code == 1
    assert h.status == "failed" and "/nonexistent/python3" in h.reason


@SLOW
def test_corrupt_artifact_stops_before_deploy(fleet_env, tmp_path):
    env = fleet_env
    arts = tmp_path / "artifacts"
    shutil.copytree(env["artifacts"], arts)
    victim = arts / "cpu" / MODEL / "encoder.int8.onnx"
    expected = hashlib.sha256(victim.read_bytes()).hexdigest()
    victim.write_bytes(b"truncated")
    runs = tmp_path / "runs"
    with pytest.raises(FleetError) as e:
        deploy(env["inventory"], limit="sim-rk3588-1", artifacts_dir=arts, datasets=env["datasets"], runs_dir=runs)
    msg = str(e.value)
    assert str(victim) in msg and expected in msg and hashlib.sha256(b"truncated").hexdigest() in msg
    assert "fleet models build whisper-tiny.en" in msg
    assert not list(runs.glob("deploy-*/ansible/artifacts"))  # Ansible never ran

    victim.unlink()
    with pytest.raises(FleetError, match="missing"):
        deploy(env["inventory"], limit="sim-rk3588-1", artifacts_dir=arts, datasets=env["datasets"], runs_dir=runs)


@SLOW
def test_no_manifest_says_how_to_build(fleet_env, tmp_path):
    with pytest.raises(FleetError) as e:
        deploy(fleet_env["inventory"], artifacts_dir=tmp_path, runs_dir=tmp_path / "runs")
    assert "no artifact manifest" in e.value.message and "fleet models build whisper-tiny.en" in e.value.fix


# -- controller-side pieces (no boards needed) -----------------------------------------------

def _board(**kw) -> Board:
    base = dict(name="b", board="pi5-hailo8l", accelerator="hailo8l", emulated=False, fleet_root="/opt/fleet",
                host="192.0.2.1", port=22, user="fleet")
    return Board(**{**base, **kw})


def test_real_boards_also_get_their_npu_artifacts(tmp_path):
    arts = make_artifacts(tmp_path)
    manifest = load_manifest(arts)
    names = lambda b: sorted(a.name for a in select(b, manifest, arts, models=(MODEL,)))  # noqa: E731
    cpu = sorted(["encoder.onnx", "encoder.int8.onnx", "decoder_step.int8.onnx", "tokenizer.json", "tokenizer.json",
                  "mel_filters.npy", "generation.json", "ct2/model.bin"])
    assert names(_board(emulated=True)) == cpu
    assert names(_board()) == sorted(cpu + ["encoder.hef"])
    assert names(_board(board="rk3588", accelerator="rk3588")) == sorted(cpu + ["encoder.rknn"])
    with pytest.raises(FleetError, match="no target 'cpu' artifacts for nope"):
        select(_board(), manifest, arts, models=("nope",))
    # by default every model of the manifest is deployed
    assert {a.model for a in select(_board(emulated=True), manifest, arts)} == {MODEL, "other-model"}


def test_expand_platform_accepts_older_manylinux():
    tags = expand_platform("manylinux_2_28_aarch64")
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux_2_17_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert expand_platform("linux_armv7l") == ["linux_armv7l"]


def test_rotate_keeps_newest_deploy_runs_only(tmp_path):
    for i in range(13):
        (tmp_path / f"deploy-20260101-0000{i:02d}-aaaa").mkdir()
    (tmp_path / "test-run-1").mkdir()
    removed = rotate_runs(tmp_path, keep=10)
    assert len(removed) == 3
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "test-run-1" in left and len(left) == 11 and left[0] == "deploy-20260101-000003-aaaa"


def test_plan_without_data_sets_skips_with_a_note(tmp_path):
    arts = make_artifacts(tmp_path / "artifacts")
    plan = make_plan([_board(emulated=True, wheel_platform="")], project=ROOT,
                     wheel_cache=ROOT / ".fleet" / "wheelhouse", bundle_cache=tmp_path / "bundles",
                     artifacts_dir=arts, data_root=tmp_path / "no-data", datasets=(), models=(MODEL,))
    (hp,) = plan.hosts.values()
    assert hp.datasets == [] and any("no data sets deployed" in n for n in plan.notes)
    (m,) = hp.models
    assert m["dest"] == f"models/{MODEL}" and m["verify"] and "encoder.hef" not in m["files"]
    names = tarfile.open(m["src"]).getnames()
    assert "manifest.json" in names and "SHA256SUMS" in names and "encoder.onnx" in names


def test_wheelhouse_key_follows_the_agent_sources_only(tmp_path):
    (tmp_path / "fleet").mkdir()
    (tmp_path / "device_agent").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\ndependencies = []\n")
    (tmp_path / "fleet" / "a.py").write_text("A = 1\n")
    (tmp_path / "device_agent" / "b.py").write_text("B = 1\n")
    key = source_key(tmp_path, "")
    (tmp_path / "fleet" / "a.py").write_text("A = 2\n")  # controller code: boards need no reinstall
    assert source_key(tmp_path, "") == key
    (tmp_path / "device_agent" / "b.py").write_text("B = 2\n")
    assert source_key(tmp_path, "") != key
    assert source_key(tmp_path, "manylinux_2_28_aarch64") != source_key(tmp_path, "")


def test_data_sets_come_from_the_data_root_verified(tmp_path):
    """The default plan ships the catalog's deploy: true data sets from the data root, each with a
    SHA256SUMS the board checks; a selection ships its files plus the data set's own index."""
    bundles = {b["name"]: b for b in (dataset_bundle(s, None, tmp_path) for s in dataset_specs(None))}
    assert set(bundles) == {"data-speech", "data-cranfield", "data-cisi"}  # not wikitext-2-v1
    cran = bundles["data-cranfield"]
    assert cran["dest"] == "data/cranfield" and cran["verify"]
    with tarfile.open(cran["src"]) as t:
        names = t.getnames()
        sums = t.extractfile("SHA256SUMS").read().decode()
    assert sorted(names) == sorted(["corpus.jsonl", "queries.jsonl", "qrels.tsv", "qrels_original.tsv",
                                    "README.md", "SHA256SUMS"])
    ds = get_dataset("cranfield")
    assert sums == "".join(f"{e.sha256}  {e.path}\n" for e in sorted(ds.files, key=lambda e: e.path))
    smoke = dataset_bundle(("speech", "smoke"), None, tmp_path)
    with tarfile.open(smoke["src"]) as t:
        assert sorted(t.getnames()) == sorted([*get_dataset("speech").selections["smoke"],
                                               "manifest.jsonl", "README.md", "SHA256SUMS"])
    assert smoke["key"] != bundles["data-speech"]["key"]


def test_missing_or_corrupt_data_set_stops_deploy_before_ansible(tmp_path, capsys):
    """An empty data root, then one whose copy of a clip has a changed byte: deploy refuses with
    the fix (FLEET_DATA, fleet datasets fetch) before any host is touched (the lab inventory's
    boards do not exist: reaching for them would fail differently)."""
    inv, arts, runs = ROOT / "inventory" / "lab.yml", make_artifacts(tmp_path / "artifacts"), tmp_path / "runs"
    with pytest.raises(FleetError) as e:
        deploy(inv, artifacts_dir=arts, data_root=tmp_path / "empty", datasets=(SMOKE,), runs_dir=runs)
    assert "data set 'speech'" in e.value.message and str(tmp_path / "empty") in e.value.message
    assert "fleet datasets fetch speech" in e.value.fix and "FLEET_DATA" in e.value.fix

    root = tmp_path / "data"
    shutil.copytree(data_root() / "speech", root / "speech")
    clip = root / "speech" / get_dataset("speech").selections["smoke"][0]
    b = bytearray(clip.read_bytes())
    b[-1] ^= 0xFF
    clip.write_bytes(bytes(b))
    with pytest.raises(FleetError) as e:
        run_cli("deploy", "--inventory", str(inv), "--artifacts", str(arts), "--data-root", str(root),
                "--datasets", SMOKE, "--runs-dir", str(runs))
    assert f"{clip.name} sha256" in e.value.message and "fleet datasets fetch speech" in e.value.fix
    assert not list(runs.glob("deploy-*/ansible/artifacts"))  # Ansible never ran

    with pytest.raises(FleetError, match="no selection 'tiny'"):
        deploy(inv, artifacts_dir=arts, datasets=("speech:tiny",), runs_dir=runs)
    with pytest.raises(FleetError, match="did you mean 'cisi'"):
        deploy(inv, artifacts_dir=arts, datasets=("cisy",), runs_dir=runs)
