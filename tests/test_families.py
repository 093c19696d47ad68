"""Board families (issue 15 §3): the registry (device_agent.families), every built-in family
complete and consistent with the backends, sensors, doctor checks and compile adapters that name
it, the Hailo-10H family through inventory / sim planning / deploy selection / doctor / agent,
and plug-ins through the entry-point group ``fleet.board_families``: the example package of the
repo (examples/fleet-example-plugin) installed with ``pip install --no-deps --target TMP`` (never
into the shared venv) and put on sys.path, plus broken and clashing plug-ins written as bare
dist-info folders.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from device_agent import families as fam_mod
from device_agent.backends import BACKENDS, NPU_FORMAT, npu_backend
from device_agent.config import BoardConfig, load_config
from device_agent.families import BoardFamily, FamilyError
from device_agent.stack.collect import StackRoots, collect_stack
from device_agent.telemetry import SENSORS
from device_agent.telemetry.emulated import THERMAL, EmulatedSensor
from fleet import families as fleet_families
from fleet.deploy.artifacts import imported_entries, target_entries
from fleet.deploy.plan import plugin_family
from fleet.doctor import checks
from fleet.errors import FleetError
from fleet.inventory import Board, board_classes, load_inventory
from fleet.sim import lifecycle

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fleet-example-plugin"
BUILTIN = {"pi5-hailo8l", "pi5-hailo8", "pi5-hailo10h", "rk3588", "cpu"}


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Every test starts and ends with the registry of the built-ins (and whatever is installed)."""
    fam_mod.reload()
    yield
    fam_mod.reload()


def on_path(monkeypatch, folder: Path) -> None:
    monkeypatch.syspath_prepend(str(folder))
    fam_mod.reload()


# ------------------------------------------------------------------------------ the registry
def test_builtin_families_are_complete_and_consistent():
    reg = fam_mod.registry()
    assert BUILTIN <= set(reg.families)
    for name in BUILTIN:
        f = reg.get(name)
        assert reg.origin[name] == "built-in" and f.problems() == [], (name, f.problems())
        assert f.title and f.sources or name == "cpu"
        assert set(f.sensors) <= set(SENSORS), f.sensors
        assert set(f.doctor_checks) <= set(checks.FAMILY_CHECKS), f.doctor_checks
        if f.npu:
            assert f.npu_backend in BACKENDS and NPU_FORMAT[f.npu_backend] == f.artifact_format
            assert f.toolchain in ("hailo-dfc", "rknn-toolkit2") and f.toolchain_hint
            assert npu_backend(f.accelerator) == f.npu_backend
            assert f.build_target == f.accelerator and f.runtime
        else:
            assert npu_backend(f.accelerator) is None and f.targets == ()
        assert THERMAL[name] is f.thermal
    # unique accelerators and emulated hostnames
    assert len({f.accelerator for f in reg.families.values()}) == len(reg.families)
    assert len({f.sim_host for f in reg.families.values()}) == len(reg.families)


def test_derived_tables_match_what_the_modules_kept_before():
    """The tables that 14 files kept are now lookups; for the old families they say the same."""
    reg = fam_mod.registry()
    classes = reg.board_classes()
    assert classes["pi5-hailo8l"] == ("hailo8l", "hailo8") and classes["rk3588"] == ("rk3588",)
    assert classes["cpu"] == ("cpu",) and classes["pi5-hailo10h"] == ("hailo10h",)
    assert reg.compatible() == {("hailo8l", "hailo8")}
    assert {"hailo8l": "hailo", "hailo8": "hailo", "rk3588": "rknn"}.items() <= reg.npu_backend().items()
    assert set(reg.targets_of_format("hef")) == {"hailo8l", "hailo8", "hailo10h"}
    assert reg.targets_of_format("rknn") == ("rk3588",)
    from fleet.models.build import npu_toolchains
    from fleet.models.compile import hailo, rknn
    from fleet.models.importer import targets

    assert set(npu_toolchains()) == {"hailo8l", "hailo8", "hailo10h", "rk3588"}
    assert set(hailo.hw_archs()) == {"hailo8l", "hailo8", "hailo10h"} and rknn.target_platforms() == ("rk3588",)
    assert targets()[0] == "cpu" and set(targets("hef")) == {"hailo8l", "hailo8", "hailo10h"}


def test_unknown_names_say_what_exists():
    with pytest.raises(FamilyError, match="unknown board family 'jetson'") as ei:
        fam_mod.family("jetson")
    assert "pi5-hailo10h" in ei.value.fix and "fleet.board_families" in ei.value.fix
    with pytest.raises(FleetError, match="unknown accelerator 'tpu'"):
        fleet_families.by_accelerator("tpu")
    with pytest.raises(FamilyError, match="does not carry accelerator 'hailo10h'"):
        fam_mod.registry().of_board("pi5-hailo8l", "hailo10h")


def test_a_family_round_trips_as_data_and_reports_its_problems():
    f = fam_mod.family("pi5-hailo10h")
    assert BoardFamily.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    with pytest.raises(ValueError, match="unknown board-family keys"):
        BoardFamily.from_dict({**f.to_dict(), "colour": "red"})
    from dataclasses import replace

    bad = replace(f, targets=("hailo8",), artifact_format=None, sensors=("pi5",))
    p = " ".join(bad.problems())
    assert "targets must start with the accelerator" in p and "go together" in p and "'linux'" in p


# ------------------------------------------------------------------------------ Hailo-10H
def test_hailo10h_family():
    f = fam_mod.family("pi5-hailo10h")
    assert (f.accelerator, f.board_class, f.npu_backend, f.artifact_format) == ("hailo10h", "pi5-hailo10h", "hailo", "hef")
    assert f.runtime_major == (5,) and f.driver_module == "hailo1x_pci" and "HailoRT 5" in f.runtime
    assert "40 TOPS INT4" in f.title and any("hailo.ai" in s for s in f.sources)
    # HEFs of the Hailo-8 line do not run on it, nor its HEFs on them
    assert f.targets == ("hailo10h",) and not fam_mod.registry().runs_target("hailo8", "hailo10h")


def write_inventory(path: Path, hosts: dict) -> Path:
    path.write_text(yaml.safe_dump({"all": {"hosts": {n: {"fleet_root": "/opt/fleet", "ansible_host": "192.0.2.9",
                                                          **hv} for n, hv in hosts.items()}}}))
    return path


def test_hailo10h_in_inventory_and_sim_plan(tmp_path):
    inv = write_inventory(tmp_path / "lab.yml", {"h10": {"board": "pi5-hailo10h", "accelerator": "hailo10h"}})
    (b,) = load_inventory(inv)
    assert (b.board, b.accelerator) == ("pi5-hailo10h", "hailo10h")
    bad = write_inventory(tmp_path / "bad.yml", {"h10": {"board": "pi5-hailo8l", "accelerator": "hailo10h"}})
    with pytest.raises(FleetError, match="is a pi5-hailo8l but names accelerator 'hailo10h'"):
        load_inventory(bad)
    plan = lifecycle.plan_boards("pi5-hailo10h:1,pi5-hailo8:1,rk3588:1", None)
    assert [n for _, n, _ in lifecycle.board_names(plan)] == ["sim-pi5h10-1", "sim-pi5h8-1", "sim-rk3588-1"]
    with pytest.raises(FleetError, match="unknown board family 'pi5-hailo15h'"):
        lifecycle.plan_boards("pi5-hailo15h:1", None)


def entry(model, target, role, fmt, **kw):
    return {"model": model, "target": target, "role": role, "format": fmt, "variant": kw.pop("variant", "int8"),
            "path": f"{target}/{model}/{role}.{fmt}", "sha256": "0" * 64, **kw}


def board(acc, board_class, emulated=False):
    return Board(name="b", board=board_class, accelerator=acc, emulated=emulated, fleet_root="/opt/fleet",
                 host="192.0.2.1", port=22, user="fleet")


def test_deploy_selection_for_hailo10h():
    """A hailo10h HEF goes to real Hailo-10H boards only; a hailo8l HEF never to them; an
    emulated Hailo-10H gets the hailo10h build's static QDQ INT8 emulation model."""
    imp = [entry("llm", "hailo10h", "model", "hef", imported=True), entry("llm", "hailo8l", "model", "hef", imported=True),
           entry("llm", "hailo10h", "model", "onnx", imported=True), entry("llm", "cpu", "reference", "onnx", imported=True)]
    real10, emu10 = board("hailo10h", "pi5-hailo10h"), board("hailo10h", "pi5-hailo10h", emulated=True)
    pick = lambda b: sorted((e["target"], e["format"]) for e in imported_entries(b, imp))  # noqa: E731
    assert pick(real10) == [("cpu", "onnx"), ("hailo10h", "hef")]
    assert pick(emu10) == [("cpu", "onnx"), ("hailo10h", "onnx")]
    assert pick(board("hailo8", "pi5-hailo8l")) == [("cpu", "onnx"), ("hailo8l", "hef")]  # compatible
    built = [entry("whisper-tiny.en", "hailo10h", "encoder_npu", "onnx", quantization="int8-static-qdq:x"),
             entry("whisper-tiny.en", "hailo10h", "encoder_npu", "hef"),
             entry("whisper-tiny.en", "hailo8l", "encoder_npu", "hef")]
    assert [e["format"] for e in target_entries(emu10, built)] == ["onnx"]
    assert [(e["target"], e["format"]) for e in target_entries(real10, built)] == [("hailo10h", "hef")]


def test_hailo10h_agent_config_stack_and_thermal(tmp_path):
    (tmp_path / "agent.yml").write_text(f"board: pi5-hailo10h\naccelerator: hailo10h\nemulated: true\n"
                                        f"fleet_root: {tmp_path}\n")
    cfg = load_config(tmp_path)
    assert cfg.family.name == "pi5-hailo10h" and cfg.npu == "hailo10h"
    emu = EmulatedSensor.probe(cfg, None, clock=lambda: 0.0, cpu_seconds=lambda: 0.0)
    assert emu.board == "pi5-hailo10h" and emu.model.c.throttle_c == 80.0
    stack = collect_stack(cfg, StackRoots())
    assert stack["hailo"]["applicable"] is False and "rknn" not in stack


def test_doctor_wants_hailort_5_on_a_hailo10h(tmp_path):
    """The HailoRT 4.23 stack of a Hailo-8L fixture on a board the inventory calls a Hailo-10H:
    the runtime-major check fails with the fix, the arch check names both archs."""
    fix = Path(__file__).parent / "fixtures" / "stack" / "pi5_ok"
    cfg = BoardConfig("pi5-hailo10h", "hailo10h", False, tmp_path)
    stack = collect_stack(cfg, StackRoots.fixture(fix, python_version="3.11.2", machine="aarch64"))
    f = {x.check: x for x in checks.check_info({"board": "pi5-hailo10h", "stack": stack},
                                               checks.expected_of(board("hailo10h", "pi5-hailo10h")))}
    assert f["hailo.runtime"].status == "fail" and "HailoRT 5.x" in f["hailo.runtime"].detail
    assert "hailo1x_pci" in f["hailo.runtime"].fix
    assert f["hailo.arch"].status == "fail" and "hailo10h" in f["hailo.arch"].detail
    assert "hailo.pcie" in f  # a Pi 5 family: its doctor_checks name the PCIe check


# ------------------------------------------------------------------------------ plug-ins
def fake_plugin(root: Path, dist: str, module: str, body: str, eps: str) -> Path:
    """A bare installed distribution: a module and its dist-info (METADATA + entry_points.txt)."""
    sys.modules.pop(module, None)  # an earlier test's module of that name
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    di = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (di / "entry_points.txt").write_text(textwrap.dedent(eps))
    return root


FAMILY_SRC = """
    from device_agent.families import BoardFamily, ThermalConstants
    FAMILY = BoardFamily(name={name!r}, title="t", accelerator={acc!r}, board_class="lab", sim_host={host!r},
                         thermal=ThermalConstants(25.0, 1.0, 2.0, 3.0, 10.0, 90.0, "assumed"))
"""


@pytest.mark.parametrize("name,acc,host,match", [
    ("rk3588", "labnpu", "lab", "'rk3588' .*clashes with the built-in family of that name"),
    ("lab", "hailo8l", "lab", "declares accelerator 'hailo8l', which the built-in family 'pi5-hailo8l'"),
    ("lab", "labnpu", "pi5", "declares sim_host 'pi5'"),
])
def test_a_plugin_clashing_with_a_builtin_is_refused(monkeypatch, tmp_path, name, acc, host, match):
    fake_plugin(tmp_path, "lab-fleet", "lab_fleet", FAMILY_SRC.format(name=name, acc=acc, host=host),
                "[fleet.board_families]\nlab = lab_fleet:FAMILY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(FamilyError, match=match) as ei:
        fam_mod.reload()
    assert "plug-in lab-fleet (lab = lab_fleet:FAMILY)" in ei.value.message and ei.value.fix
    with pytest.raises(FleetError, match=match):  # the controller's wrapper: a FleetError with the fix
        fleet_families.reload()


def test_a_plugin_that_fails_to_load_or_is_no_family_is_refused(monkeypatch, tmp_path):
    fake_plugin(tmp_path / "a", "broken-fleet", "broken_fleet", "import nosuchmodule_xyz\n",
                "[fleet.board_families]\nbroken = broken_fleet:FAMILY\n")
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    with pytest.raises(FamilyError, match="broken-fleet .* failed to load: ModuleNotFoundError") as ei:
        fam_mod.reload()
    assert "pip uninstall broken-fleet" in ei.value.fix
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    sys.path.remove(str(tmp_path / "a"))
    fake_plugin(tmp_path / "b", "odd-fleet", "odd_fleet", "FAMILY = {'name': 'x'}\n",
                "[fleet.board_families]\nodd = odd_fleet:FAMILY\n")
    with pytest.raises(FamilyError, match="gives a dict, not a BoardFamily"):
        fam_mod.reload()


def test_the_cli_prints_a_plugin_error_with_its_fix(tmp_path):
    fake_plugin(tmp_path, "lab-fleet", "lab_fleet", FAMILY_SRC.format(name="cpu", acc="x1", host="x1"),
                "[fleet.board_families]\nlab = lab_fleet:FAMILY\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "fleet", "models", "build", "whisper-tiny.en", "--target", "nosuch",
                        "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "fleet: error: board family 'cpu' (plug-in lab-fleet" in p.stderr and "fix: rename" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory) -> Path:
    """examples/fleet-example-plugin installed with pip into a folder of its own (not the venv)."""
    base = tmp_path_factory.mktemp("plugin")
    src, target = base / "src", base / "site"
    shutil.copytree(EXAMPLE, src)  # pip's build folders stay out of the repository
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(src)], check=True, timeout=300)
    assert (target / "fleet_example_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def test_example_plugin_adds_a_family_in_one_file(monkeypatch, tmp_path, example_plugin):
    on_path(monkeypatch, example_plugin)
    reg = fam_mod.registry()
    f = reg.get("lab-rk3576")
    assert reg.origin["lab-rk3576"].startswith("plug-in fleet-example-plugin (lab-rk3576 = ")
    assert f.accelerator == "rk3576" and npu_backend("rk3576") == "rknn"
    # inventory, sim planning, thresholds, builds and compile adapters see it without edits
    assert board_classes()["rk3576"] == ("rk3576",)
    inv = write_inventory(tmp_path / "lab.yml", {"rock4d": {"board": "rk3576", "accelerator": "rk3576"}})
    assert load_inventory(inv)[0].accelerator == "rk3576"
    assert lifecycle.board_names(lifecycle.plan_boards("lab-rk3576:2", None))[1][1] == "sim-rk3576-2"
    from fleet.models.build import npu_toolchains
    from fleet.models.compile import rknn
    from fleet.runner.suite import threshold_classes
    from fleet.runner.suite_schema import suite_model

    assert "rk3576" in npu_toolchains() and "rk3576" in rknn.target_platforms() and "rk3576" in threshold_classes()
    assert "rk3576" in json.dumps(suite_model().model_json_schema())
    # deploy: real boards get its .rknn; the plan carries its definition for the board's agent.yml
    imp = [entry("m", "rk3576", "model", "rknn", imported=True), entry("m", "rk3588", "model", "rknn", imported=True)]
    b = board("rk3576", "rk3576")
    assert [e["target"] for e in imported_entries(b, imp)] == ["rk3576"]
    assert plugin_family(b)["name"] == "lab-rk3576" and plugin_family(board("rk3588", "rk3588")) is None
    # doctor runs the checks it names
    assert checks.check_info({"board": "rk3576", "stack": {"accelerator": "rk3576", "rknn": {"applicable": False,
                              "reason": "emulated"}}}, {"accelerator": "rk3576"})[-1].status == "n/a"


def test_a_board_without_the_plugin_reads_the_family_from_agent_yml(tmp_path, example_plugin):
    """The board's agent has no plug-in package: the family definition fleet deploy writes into
    agent.yml is enough for config, NPU backend choice, emulated telemetry and the stack."""
    code = f"""
import sys, json
sys.path.insert(0, {str(example_plugin)!r})
from device_agent.families import family
print(json.dumps(family("lab-rk3576").to_dict()))
"""
    fam = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    cwd=ROOT).stdout)
    (tmp_path / "agent.yml").write_text(f"board: rk3576\naccelerator: rk3576\nemulated: true\nfleet_root: {tmp_path}\n"
                                        f"family: {json.dumps(fam)}\n")
    code = f"""
import json
from device_agent.config import load_config
from device_agent.backends import npu_backend
from device_agent.telemetry import discover
from device_agent.families import registry
cfg = load_config({str(tmp_path)!r})
print(json.dumps([cfg.family.name, npu_backend("rk3576"), registry().origin["lab-rk3576"],
                  [s.source for s in discover(cfg)]]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    name, backend, origin, sensors = json.loads(out.stdout)
    assert (name, backend, sensors[-1]) == ("lab-rk3576", "rknn", "emulated") and origin.endswith("agent.yml")
    (tmp_path / "agent.yml").write_text("board: rk3576\naccelerator: rk3576\nfamily: {name: x}\n")
    with pytest.raises(Exception, match="family: thermal must be a mapping"):
        load_config(tmp_path)
