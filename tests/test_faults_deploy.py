"""Fault matrix row D1 (docs/faults.md): one board's disk is full during `fleet deploy`.

The board's fleet_root is a small tmpfs (the venv with pip needs ~20 MB, the wheelhouse ~52 MB,
the model far more): 20 MB fails while making the venv, 40 MB while shipping the wheelhouse
bundle, each with "No space left on device". Expected: exit code 1, that host `failed` with a
reason naming the failing task and the lack of space, the other host deployed, and nothing
half-installed on the full board carrying an install marker (`.fleet-bundle-KEY` in a bundle's
folder, `venv/.fleet-wheelhouse-KEY`): each marker present must match complete content.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fleet.deploy.run import deploy
from fleet.paths import artifacts_dir
from fleet.sim import lifecycle
from fleet.sim.state import load_state

FULL, OK = "sim-rk3588-1", "sim-pi5-1"

pytestmark = pytest.mark.slow


def _markers_must_hold(root: Path) -> list[str]:
    """Every install marker under root; asserts each one describes complete content."""
    found = []
    for m in root.rglob(".fleet-bundle-*"):
        found.append(str(m.relative_to(root)))
        sums = m.parent / "SHA256SUMS"
        if sums.exists():
            r = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"], check=False, cwd=m.parent,
                               capture_output=True, text=True)
            assert r.returncode == 0, f"marker {m} claims a bundle whose files do not verify: {r.stdout}{r.stderr}"
        else:  # no checksum list: at least the folder holds more than the marker
            assert [p for p in m.parent.iterdir() if p != m], f"marker {m} in an empty folder"
    for m in root.glob("venv/.fleet-wheelhouse-*"):
        found.append(str(m.relative_to(root)))
        assert (root / "venv" / "bin" / "fleet-agent").exists(), f"{m} claims an agent install that is not there"
    return found


@pytest.mark.parametrize("size", ["20m", "40m"])  # 20m: the venv does not fit; 40m: it does, the wheelhouse does not
def test_disk_full_during_deploy_fails_that_host_only(tmp_path_factory, size):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    arts = artifacts_dir()
    assert (arts / "manifest.json").exists(), f"no artifacts in {arts}: run `fleet models build whisper-tiny.en`"
    base = tmp_path_factory.mktemp("diskfull")
    state_dir, inv = base / "sim", base / "inventory" / "sim.yml"
    mounted = None
    try:
        # mounted before `sim up` starts the boards' sshd: each `ip netns exec` gets a copy of the
        # mount table as it is then (mounts made later in a private / do not propagate to it)
        root = state_dir / "boards" / FULL / "root"
        root.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)
        mounted = root
        lifecycle.up(state_dir, inv, mix="pi5-hailo8l:1,rk3588:1", use_netns=True)
        boards = {b.name: b for b in load_state(state_dir).boards}
        assert Path(boards[FULL].root) == root.resolve()
        result = deploy(inv, artifacts_dir=arts, runs_dir=base / "runs", models=("whisper-tiny.en",))
        hosts = {h.host: h for h in result.hosts}
        assert result.exit_code == 1, result.to_dict()
        assert hosts[FULL].status == "failed", result.to_dict()
        reason = hosts[FULL].reason.lower()
        assert "no space left" in reason, hosts[FULL].reason
        assert reason.split(":")[0].strip() in {"make the venv at fleet_root/venv", "copy the wheelhouse bundle",
                                                "unpack into wheelhouse/"} or "task" in reason, hosts[FULL].reason
        assert hosts[OK].status in ("ok", "changed") and hosts[OK].failed == 0, result.to_dict()
        markers = _markers_must_hold(root)
        # the agent was not installed, and nothing says it was; a half-made venv is not left behind
        # (its bin/python would make the next deploy skip "Make the venv")
        assert not (root / "venv" / "bin" / "python").exists() or (root / "venv" / "bin" / "pip").exists()
        assert not list(root.glob("venv/.fleet-wheelhouse-*")), markers
        assert not (root / "agent.yml").exists(), "agent.yml written on a board whose install failed"
        # the healthy board has its markers (the test would be vacuous otherwise)
        assert _markers_must_hold(Path(boards[OK].root))
    finally:
        lifecycle.down(state_dir)
        if mounted is not None:
            subprocess.run(["umount", "-l", str(mounted)], check=False)
