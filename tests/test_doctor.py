"""fleet doctor decisions (fleet.doctor.checks), the CLI's exit codes and --require, and the
runner's refusal of a board whose fingerprint fails (fleet.runner.plugin)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import device_agent
from device_agent.config import BoardConfig
from device_agent.stack import StackRoots, collect_stack
from fleet.doctor import checks
from fleet.doctor.checks import check_info, failures
from fleet.inventory import Board

FIX = Path(__file__).parent / "fixtures" / "stack"
AV = device_agent.__version__


def board(name="b1", acc="hailo8l", emulated=False, kind=None) -> Board:
    kind = kind or {"hailo8l": "pi5-hailo8l", "hailo8": "pi5-hailo8l", "rk3588": "rk3588", "cpu": "cpu"}[acc]
    return Board(name=name, board=kind, accelerator=acc, emulated=emulated, fleet_root="/opt/fleet",
                 host="127.0.0.1", port=22, user="u")


def info_for(tmp_path, fixture, acc, emulated=False, models=(), **kw) -> dict:
    d = tmp_path / "models" / "m"
    if models:
        d.mkdir(parents=True, exist_ok=True)
        for e in models:
            (d / Path(e["path"]).name).write_bytes(b"x")
        (d / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": list(models)}))
    kind = {"hailo8l": "pi5-hailo8l", "hailo8": "pi5-hailo8l", "rk3588": "rk3588", "cpu": "cpu"}[acc]
    cfg = BoardConfig(kind, acc, emulated, tmp_path)
    r = StackRoots.fixture(FIX / fixture, python_version="3.11.2", machine="aarch64", **kw)
    return {"board": kind, "accelerator": acc, "emulated": emulated, "stack": collect_stack(cfg, r)}


def by_check(findings) -> dict:
    return {f.check: f for f in findings}


HEF8L = {"path": "hailo8l/m/encoder.hef", "sha256": "a", "target": "hailo8l", "format": "hef"}
HEF8 = {"path": "hailo8/m/encoder8.hef", "sha256": "b", "target": "hailo8", "format": "hef"}


# -- must pass ---------------------------------------------------------------------------------
def test_pi5_matching_stack_passes(tmp_path):
    f = check_info(info_for(tmp_path, "pi5_ok", "hailo8l", models=[HEF8L]), checks.expected_of(board()), AV)
    assert failures(f) == []
    c = by_check(f)
    assert c["hailo.versions"].status == "ok" and "4.23.0" in c["hailo.versions"].detail
    assert c["hailo.arch"].status == "ok" and c["hailo.pcie"].status == "ok"
    assert c["hailo.hef:m/encoder.hef"].status == "ok"
    assert all(x.status != "warn" for x in f)


def test_rk3588_matching_stack_passes(tmp_path):
    rk = {"path": "rk3588/m/e.rknn", "sha256": "c", "target": "rk3588", "format": "rknn",
          "exporter": {"rknn-toolkit2": "2.3.2"}}
    f = check_info(info_for(tmp_path, "rk3588_ok", "rk3588", models=[rk]), checks.expected_of(board(acc="rk3588")), AV)
    assert failures(f) == []
    assert by_check(f)["rknn.model:m/e.rknn"].status == "ok"


@pytest.mark.parametrize("acc", ["hailo8l", "rk3588", "cpu"])
def test_emulated_boards_pass_with_npu_not_applicable(tmp_path, acc):
    # the emulated fixture tree has mismatching versions: they must not be looked at
    f = check_info(info_for(tmp_path, "pi5_mismatch", acc, emulated=True), checks.expected_of(board(acc=acc, emulated=True)), AV)
    assert failures(f) == []
    if acc != "cpu":
        (na,) = [x for x in f if x.status == "n/a"]
        assert na.detail.startswith("not applicable (emulated)")


# -- must fail ---------------------------------------------------------------------------------
def test_driver_library_mismatch_fails_with_pin_fix(tmp_path):
    f = check_info(info_for(tmp_path, "pi5_mismatch", "hailo8l"), checks.expected_of(board()), AV)
    v = by_check(f)["hailo.versions"]
    assert v.status == "fail"
    assert "library 4.19.0" in v.detail and "driver 4.18.0" in v.detail
    assert "hailo-dkms" in v.fix and "python3-hailort" in v.fix and "§5.1" in v.fix
    p = by_check(f)["hailo.pcie"]
    assert p.status == "warn" and "Gen 2" in p.detail and "pciex1_gen=3" in p.fix


def test_python_binding_mismatch_fails(tmp_path):
    f = check_info(info_for(tmp_path, "pi5_ok", "hailo8l", dist_version={"hailort": "4.20.0"}.get),
                   checks.expected_of(board()), AV)
    assert by_check(f)["hailo.python"].status == "fail"


def test_hailo8_hef_on_hailo8l_refused(tmp_path):
    f = check_info(info_for(tmp_path, "pi5_ok", "hailo8l", models=[HEF8L, HEF8]), checks.expected_of(board()), AV)
    bad = failures(f)
    assert [x.check for x in bad] == ["hailo.hef:m/encoder8.hef"]
    assert "hailo8" in bad[0].detail and 'hw_arch="hailo8l"' in bad[0].fix and "§5.3" in bad[0].fix


def test_hailo8l_hef_on_hailo8_runs_with_warning(tmp_path):
    # HailoRT's DeviceBase::is_hef_compatible accepts a Hailo-8L HEF on a Hailo-8 (slower), not the reverse
    f = check_info(info_for(tmp_path, "pi5_hailo8", "hailo8", models=[HEF8L, HEF8]),
                   checks.expected_of(board(acc="hailo8")), AV)
    assert failures(f) == []
    c = by_check(f)
    assert c["hailo.arch"].status == "ok"
    assert c["hailo.hef:m/encoder.hef"].status == "warn" and "lower performance" in c["hailo.hef:m/encoder.hef"].detail
    assert c["hailo.hef:m/encoder8.hef"].status == "ok"


def test_device_arch_differs_from_inventory(tmp_path):
    f = check_info(info_for(tmp_path, "pi5_ok", "hailo8"), checks.expected_of(board(acc="hailo8")), AV)
    a = by_check(f)["hailo.arch"]
    assert a.status == "fail" and "hailo8l" in a.detail


def test_missing_hailo_stack_fails(tmp_path):
    f = check_info(info_for(tmp_path, "rk3588_ok", "hailo8l"), checks.expected_of(board()), AV)
    assert {"hailo.versions", "hailo.arch"} <= {x.check for x in failures(f)}
    assert by_check(f)["hailo.pcie"].status == "warn"


def test_old_librknnrt_vs_toolkit2_model_fails(tmp_path):
    rk = {"path": "rk3588/m/e.rknn", "sha256": "c", "target": "rk3588", "format": "rknn",
          "exporter": {"rknn-toolkit2": "2.3.2"}}
    f = check_info(info_for(tmp_path, "rk3588_old", "rk3588", models=[rk]), checks.expected_of(board(acc="rk3588")), AV)
    bad = by_check(failures(f))
    m = bad["rknn.model:m/e.rknn"]
    assert "1.5.2" in m.detail and "2.3.2" in m.detail and "librknnrt.so" in m.fix and "§5.5" in m.fix
    assert by_check(f)["rknn.driver"].status == "ok"  # 0.9.5 from dmesg


def test_missing_rknn_runtime_and_driver_fail(tmp_path):
    f = check_info(info_for(tmp_path, "pi5_ok", "rk3588"), checks.expected_of(board(acc="rk3588")), AV)
    assert {"rknn.runtime", "rknn.driver"} <= {x.check for x in failures(f)}


def test_generic_checks(tmp_path):
    info = info_for(tmp_path, "pi5_ok", "cpu")
    info["stack"]["python"]["version"] = "3.8.10"
    f = check_info(info, checks.expected_of(board(acc="hailo8l")), "9.9.9")
    c = by_check(f)
    assert c["python"].status == "fail" and c["accelerator"].status == "fail"
    assert c["agent"].status == "warn" and "fleet deploy" in c["agent"].fix
    assert check_info({"board": "cpu"})[0].status == "warn"  # old agent without a stack


def test_missing_model_file_fails(tmp_path):
    info = info_for(tmp_path, "pi5_ok", "hailo8l", models=[HEF8L])
    info["stack"]["models"]["m"]["files"]["encoder.hef"]["present"] = False
    assert by_check(failures(check_info(info, checks.expected_of(board()), AV)))["models:m"].fix.startswith("run `fleet deploy`")


# -- CLI -----------------------------------------------------------------------------------------
@pytest.fixture
def fake_fleet(monkeypatch):
    """Inventory of boards and a probe answering from a dict (name → report or None = down)."""
    from fleet.doctor import cli

    state = {"boards": [], "reports": {}, "probed": []}
    monkeypatch.setattr("fleet.inventory.load_inventory", lambda path, limit=None: state["boards"])

    def probe(b, timeout_s=60.0):
        state["probed"].append(b.name)
        r = state["reports"].get(b.name)
        base = {"board": b.name, "accelerator": b.accelerator, "emulated": b.emulated}
        if r is None:
            return {**base, "reachable": False, "status": "unreachable", "error": "refused", "findings": []}
        return {**base, "reachable": True, "agent_accelerator": b.accelerator, "agent_emulated": b.emulated,
                "findings": [], "status": r}

    monkeypatch.setattr(cli, "probe", probe)
    return state


def test_doctor_exit_codes(fake_fleet):
    from fleet.doctor.cli import run_doctor

    fake_fleet["boards"] = [board("a"), board("b", acc="rk3588")]
    fake_fleet["reports"] = {"a": "pass", "b": "pass"}
    assert run_doctor("inv.yml")[1] == 0
    fake_fleet["reports"]["b"] = "fail"
    assert run_doctor("inv.yml")[1] == 1
    del fake_fleet["reports"]["b"]
    assert run_doctor("inv.yml")[1] == 3


def test_require_fails_fast_without_probing_others(fake_fleet):
    from fleet.doctor.cli import run_doctor

    fake_fleet["boards"] = [board("emu", emulated=True), board("rk", acc="rk3588")]
    fake_fleet["reports"] = {"emu": "pass", "rk": "pass"}
    reports, rc, msg = run_doctor("inv.yml", require="hailo8l")
    assert rc == 3 and "no real board with accelerator hailo8l" in msg and "--allow-emulated" in msg
    assert fake_fleet["probed"] == []  # at once: nothing contacted
    assert run_doctor("inv.yml", require="hailo8l", allow_emulated=True)[1] == 0
    fake_fleet["boards"].append(board("real"))
    fake_fleet["probed"].clear()
    reports, rc, msg = run_doctor("inv.yml", require="hailo8l")  # the real one does not answer
    assert rc == 3 and "no board with accelerator hailo8l answers" in msg and "real: refused" in msg
    assert fake_fleet["probed"] == ["real"]
    with pytest.raises(Exception, match="unknown accelerator"):
        run_doctor("inv.yml", require="tpu")


def test_doctor_cli_json_and_table(fake_fleet, capsys):
    from fleet.cli import main

    fake_fleet["boards"] = [board("a")]
    fake_fleet["reports"] = {"a": "fail"}
    assert main(["doctor", "--inventory", "x.yml", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 1 and out["boards"][0]["status"] == "fail"
    assert main(["doctor", "--inventory", "x.yml", "--require", "rk3588"]) == 3
    assert "no real board with accelerator rk3588" in capsys.readouterr().out


def test_probe_on_real_board_info(monkeypatch, tmp_path):
    from fleet.doctor import cli

    info = info_for(tmp_path, "pi5_mismatch", "hailo8l")

    class S:
        def __init__(self, b, request_timeout_s=0):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

        def info(self):
            return info

    monkeypatch.setattr("fleet.remote.session.AgentSession", S)
    r = cli.probe(board())
    assert r["status"] == "fail" and any(f["check"] == "hailo.versions" and f["status"] == "fail" for f in r["findings"])


# -- fleet test refuses a failing board ----------------------------------------------------------
class _Config:
    def __init__(self, **opts):
        self.opts = {"--fleet-run": None, "--fleet-boards": None, "--fleet-suite": None, "--fleet-db": None,
                     "--fleet-ignore-fingerprint": False, **opts}

    def getoption(self, name, default=None):
        # options this test does not set (e.g. --fleet-not-run) take pytest's default
        return self.opts.get(name, default)


def _fake_session(monkeypatch, info):
    from fleet.runner import plugin

    opened = []

    class S:
        def __init__(self, b, request_timeout_s=0, **kw):  # kw: reconnect_timeout_s
            self.alive = True

        def open(self):
            opened.append(1)
            return self

        def info(self):
            return info

        def close(self):
            self.alive = False

    monkeypatch.setattr(plugin, "AgentSession", S)
    return opened


def test_plugin_refuses_failing_fingerprint(monkeypatch, tmp_path):
    from fleet.remote.session import InfrastructureError
    from fleet.runner.plugin import FingerprintRefused, FleetContext

    opened = _fake_session(monkeypatch, info_for(tmp_path, "pi5_mismatch", "hailo8l"))
    ctx = FleetContext(_Config())
    with pytest.raises(FingerprintRefused) as e:
        ctx.session(board())
    assert isinstance(e.value, InfrastructureError)  # → tests recorded as error (infrastructure)
    assert "hailo.versions" in str(e.value) and "hailo-dkms" in str(e.value) and "--ignore-fingerprint" in str(e.value)
    with pytest.raises(FingerprintRefused):
        ctx.session(board())
    assert len(opened) == 1  # refusal remembered, no reconnect per test
    assert ctx.infos["b1"]["doctor"]["status"] == "fail"


def test_plugin_runs_anyway_when_told_and_labels(monkeypatch, tmp_path):
    from fleet.runner.plugin import FleetContext

    _fake_session(monkeypatch, info_for(tmp_path, "pi5_mismatch", "hailo8l"))
    ctx = FleetContext(_Config(**{"--fleet-ignore-fingerprint": True}))
    assert ctx.session(board()) is not None
    d = ctx.infos["b1"]["doctor"]
    assert d["status"] == "fail" and d["ignored"] is True and d["failures"]


def test_plugin_passes_emulated_board(monkeypatch, tmp_path):
    from fleet.runner.plugin import FleetContext

    _fake_session(monkeypatch, info_for(tmp_path, "pi5_mismatch", "hailo8l", emulated=True))
    ctx = FleetContext(_Config())
    ctx.session(board(emulated=True))
    assert ctx.infos["b1"]["doctor"] == {"status": "pass", "failures": [], "reason": "", "ignored": False,
                                         "warnings": 0}


def test_results_label_ignored_fingerprint(tmp_path, capsys):
    from fleet.results.cli import cmd_results, summarize
    from fleet.results.store import Store

    st = Store(tmp_path / "r.db")
    st.start_run("r1", "s", argv=["fleet", "test", "--ignore-fingerprint"])
    st.add_board("r1", "b1", "pi5-hailo8l", "hailo8l", False,
                 {"doctor": {"status": "fail", "ignored": True, "reason": "hailo.versions: versions differ"}})
    data = summarize(st, "r1")
    assert data["run"]["fingerprint_ignored"] == ["b1"]
    st.close()

    class A:
        run = "r1"
        db = str(tmp_path / "r.db")
        json = False
        telemetry = False
        csv = None

    cmd_results(A)
    out = capsys.readouterr().out
    assert "FINGERPRINT IGNORED" in out and "--ignore-fingerprint" in out
