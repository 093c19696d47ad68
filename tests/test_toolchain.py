"""`fleet toolchain install rknn` / `status`: the pip steps, the pins, and the status probe.

pip itself is replaced by a recorder (CI must not download rknn-toolkit2 and its torch); the
"installed" venv is the fake toolkit venv of test_compile_adapters.py, whose python really runs
the status probe (``import rknn.api``, package metadata version).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from test_compile_adapters import make_fake_rknn_venv

from fleet.cli import main as fleet_main
from fleet.errors import FleetError
from fleet.toolchain import rknn as tc


class PipRecorder:
    """subprocess.run stand-in: records commands; 'creates' the venv from a prepared fake."""

    def __init__(self, fake_root, fail_at: str | None = None):
        self.fake_root, self.fail_at, self.cmds = fake_root, fail_at, []

    def __call__(self, cmd, **kw):
        self.cmds.append(cmd)
        if self.fail_at and any(self.fail_at in c for c in cmd):
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution "
                                                         "found for rknn-toolkit2==2.5.0")
        if cmd[1:3] == ["-m", "venv"]:
            make_fake_rknn_venv(self.fake_root)
        return subprocess.CompletedProcess(cmd, 0, "", "")


def test_install_pins_and_order(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RKNN_LOG", str(tmp_path / "log.jsonl"))
    rec = PipRecorder(tmp_path)
    venv = tmp_path / "venv"  # make_fake_rknn_venv(tmp_path) builds tmp_path/venv
    lines = []
    st = tc.install(venv, python="/usr/bin/python3.11", echo=lines.append, runner=rec)
    assert rec.cmds[0] == ["/usr/bin/python3.11", "-m", "venv", str(venv)]
    toolkit, deps = rec.cmds[1], rec.cmds[2]
    assert toolkit[0] == str(venv / "bin" / "python") and toolkit[1:4] == ["-m", "pip", "install"]
    assert "--no-deps" in toolkit and "rknn-toolkit2==2.5.0" in toolkit
    pins = [a for a in deps if "=" in a]
    assert pins == list(tc.DEPENDENCIES)
    assert all("==" in p for p in pins)  # every requirement pinned
    assert "torch==2.13.0" in pins  # the CPU wheel, never an unpinned (CUDA) torch
    assert "numpy==1.26.4" in pins and "onnx==1.18.0" in pins
    assert not any(p.startswith("opencv-python==") for p in pins)
    assert rec.cmds[3][-2:] == ["--no-deps", "setuptools==69.5.1"]  # pkg_resources, last
    assert st.installed and st.version == "2.5.0" and len(lines) == 4


def test_install_reuses_existing_venv(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RKNN_LOG", str(tmp_path / "log.jsonl"))
    venv = make_fake_rknn_venv(tmp_path)
    rec = PipRecorder(tmp_path)
    tc.install(venv, runner=rec, echo=lambda _: None)
    assert all(c[1:3] != ["-m", "venv"] for c in rec.cmds) and len(rec.cmds) == 3


def test_install_failure_is_clear(tmp_path):
    rec = PipRecorder(tmp_path, fail_at="rknn-toolkit2==2.5.0")
    with pytest.raises(FleetError) as ei:
        tc.install(tmp_path / "venv", runner=rec, echo=lambda _: None)
    assert ei.value.exit_code == 3
    assert "rknn-toolkit2==2.5.0 (--no-deps)" in ei.value.message
    assert "No matching distribution" in ei.value.message


def test_install_that_does_not_import_is_an_error(tmp_path):
    broken = tmp_path / "venv"
    (broken / "bin").mkdir(parents=True)
    (broken / "bin" / "python").symlink_to("/bin/false")
    with pytest.raises(FleetError) as ei:
        tc.install(broken, runner=PipRecorder(tmp_path), echo=lambda _: None)
    assert ei.value.exit_code == 3 and "does not import" in ei.value.message


def test_status_states(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RKNN_LOG", str(tmp_path / "log.jsonl"))
    missing = tc.status(tmp_path / "none")
    assert not missing.installed and "no venv" in missing.reason
    venv = make_fake_rknn_venv(tmp_path)
    ok = tc.status(venv)
    assert ok.installed and ok.version == "2.5.0"
    (tmp_path / "site" / "rknn" / "api" / "__init__.py").write_text("raise ImportError('torch')")
    bad = tc.status(venv)
    assert not bad.installed and "import rknn.api failed" in bad.reason


def test_default_venv_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_RKNN_VENV", str(tmp_path / "x"))
    assert tc.default_venv() == tmp_path / "x"
    monkeypatch.delenv("FLEET_RKNN_VENV")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert tc.default_venv() == tmp_path / "cache" / "fleet" / "toolchains" / "rknn"


def test_cli_status_json(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setenv("FAKE_RKNN_LOG", str(tmp_path / "log.jsonl"))
    monkeypatch.setitem(sys.modules, "hailo_sdk_client", None)
    venv = make_fake_rknn_venv(tmp_path)
    assert fleet_main(["toolchain", "status", "--json", "--venv", str(venv)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rknn"] == {"available": True, "version": "2.5.0", "venv": str(venv),
                            "targets": ["rk3588"], "reason": ""}
    assert data["hailo_dfc"]["available"] is False
    assert "Developer Zone" in data["hailo_dfc"]["reason"]
    assert fleet_main(["toolchain", "status", "--json", "--venv", str(tmp_path / "no")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rknn"]["available"] is False
    assert "fleet toolchain install rknn" in data["rknn"]["reason"]


def test_cli_install_rejects_unknown_toolchain(capsys):
    with pytest.raises(SystemExit) as ei:
        fleet_main(["toolchain", "install", "hailo"])
    assert ei.value.code == 2
