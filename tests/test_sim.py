"""The emulated fleet with real sshd processes: up, status, down, SSH with pinned host keys.

Network namespace tests need root; the loopback form (--no-netns) runs for anyone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import pytest

from fleet.errors import FleetError
from fleet.inventory import ansible_bin, ansible_env, load_inventory
from fleet.sim import cli as sim_cli
from fleet.sim import lifecycle, netns, sshd
from fleet.sim.lifecycle import parse_mix
from fleet.sim.state import load_state

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
SLOW = pytest.mark.slow  # real sshd processes


def run_cli(*argv: str) -> int:
    """Run `fleet sim ...` through its own parser (fleet.cli also loads other packages)."""
    parser = argparse.ArgumentParser(prog="fleet")
    sim_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def ssh(board_inv: dict, known_hosts: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-p", str(board_inv["ansible_port"]), "-i", board_inv["ansible_ssh_private_key_file"],
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
         f"{board_inv['ansible_user']}@{board_inv['ansible_host']}", *cmd],
        check=False, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )


def hostvars(inventory: Path) -> dict:
    proc = subprocess.run([ansible_bin("ansible-inventory"), "-i", str(inventory), "--list"],
                          check=False, capture_output=True, text=True, env=ansible_env())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["_meta"]["hostvars"]


def assert_all_gone(state) -> None:
    for b in state.boards:
        assert not sshd.is_ours(b.pid, b.config), f"{b.name} sshd {b.pid} still running"
        if b.netns:
            assert not netns.exists(b.netns), f"{b.netns} still there"
        if b.host_if:
            assert not netns.link_exists(b.host_if), f"{b.host_if} still there"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Two namespaced boards (one Pi 5, one RK3588) for the whole module, always taken down."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    base = tmp_path_factory.mktemp("sim")
    state_dir, inv = base / "state", base / "inventory" / "sim.yml"
    try:
        state = lifecycle.up(state_dir, inv, mix="pi5-hailo8l:1,rk3588:1")
        yield state
    finally:
        lifecycle.down(state_dir)


# -- pure functions --------------------------------------------------------------------------

def test_parse_mix():
    assert parse_mix(None, None) == [("pi5-hailo8l", 2), ("rk3588", 1)]
    assert parse_mix(None, 2) == [("pi5-hailo8l", 1), ("rk3588", 1)]
    assert parse_mix("pi5-hailo8l:2,rk3588:1", 3) == [("pi5-hailo8l", 2), ("rk3588", 1)]
    with pytest.raises(FleetError, match="unknown board family 'jetson'"):
        parse_mix("jetson:1", None)
    with pytest.raises(FleetError, match="--boards 4 but --mix adds up to 3"):
        parse_mix("pi5-hailo8l:2,rk3588:1", 4)


def test_allocate_skips_used_blocks():
    got = netns.allocate(2, {1, 2, 4})
    assert got == [("198.18.3.1", "198.18.3.2"), ("198.18.5.1", "198.18.5.2")]


# -- one module-wide namespaced sim ----------------------------------------------------------

@SLOW
def test_inventory_accepted_by_ansible_and_fleet(sim):
    inv = Path(sim.inventory)
    hv = hostvars(inv)
    assert set(hv) == {"sim-pi5-1", "sim-rk3588-1"}
    h = hv["sim-pi5-1"]
    assert (h["board"], h["accelerator"], h["emulated"]) == ("pi5-hailo8l", "hailo8l", True)
    assert h["ansible_port"] == 22 and h["ansible_host"].startswith("198.18.")
    assert "StrictHostKeyChecking=yes" in h["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={sim.known_hosts}" in h["ansible_ssh_common_args"]
    assert h["ansible_python_interpreter"] == "/usr/bin/python3"
    boards = load_inventory(inv)
    assert [(b.name, b.board, b.emulated) for b in boards] == [
        ("sim-pi5-1", "pi5-hailo8l", True), ("sim-rk3588-1", "rk3588", True)]
    assert all(Path(b.fleet_root).is_dir() and b.known_hosts == sim.known_hosts for b in boards)
    assert [b.name for b in load_inventory(inv, limit="rk3588")] == ["sim-rk3588-1"]


@SLOW
def test_ssh_with_written_known_hosts_logs_in(sim):
    hv = hostvars(Path(sim.inventory))
    for h in hv.values():
        proc = ssh(h, Path(sim.known_hosts), "ip", "-4", "-o", "addr", "show")
        assert proc.returncode == 0, proc.stderr
        assert h["ansible_host"] in proc.stdout  # the board's own namespace answered
        assert "eth0" not in proc.stdout  # and it is not the host's network


@SLOW
def test_wrong_host_key_is_refused(sim, tmp_path):
    hv = hostvars(Path(sim.inventory))["sim-pi5-1"]
    other = sshd.ensure_keypair(tmp_path / "other_key", "impostor")
    bad = tmp_path / "known_hosts"
    bad.write_text(f"{hv['ansible_host']} {sshd.public_key(other)}\n")
    proc = ssh(hv, bad, "true")
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr or "IDENTIFICATION HAS CHANGED" in proc.stderr
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    proc = ssh(hv, empty, "true")  # unknown host: no prompt, refused
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr


@SLOW
def test_status_reports_every_board(sim, capsys):
    state, rows = lifecycle.status(Path(sim.state_dir))
    assert [r.name for r in rows] == ["sim-pi5-1", "sim-rk3588-1"]
    assert all(r.alive and r.answering for r in rows)
    assert run_cli("sim", "status", "--state-dir", sim.state_dir, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["running"] and len(data["boards"]) == 2 and all(b["answering"] for b in data["boards"])
    assert run_cli("sim", "status", "--state-dir", sim.state_dir) == 0
    out = capsys.readouterr().out
    assert "sim-rk3588-1" in out and "answering" in out


@SLOW
def test_second_up_says_already_running(sim):
    with pytest.raises(FleetError, match="already running"):
        lifecycle.up(Path(sim.state_dir), Path(sim.inventory), mix="rk3588:1")


# -- full lifecycles -------------------------------------------------------------------------

@ROOT_ONLY
@SLOW
def test_up_status_down_removes_everything(tmp_path, capsys):
    state_dir, inv = tmp_path / "state", tmp_path / "sim.yml"
    try:
        assert run_cli("sim", "up", "--boards", "2", "--state-dir", str(state_dir), "--inventory", str(inv)) == 0
        state = load_state(state_dir)
        assert [b.name for b in state.boards] == ["sim-pi5-1", "sim-rk3588-1"]
        assert all(sshd.is_ours(b.pid, b.config) and netns.exists(b.netns) for b in state.boards)
        assert inv.exists() and Path(state.known_hosts).exists()
        assert run_cli("sim", "status", "--state-dir", str(state_dir)) == 0
        assert run_cli("sim", "down", "--state-dir", str(state_dir)) == 0
        out = capsys.readouterr().out
        assert "stopped" in out and "removed" in out
        assert_all_gone(state)
        assert not inv.exists() and load_state(state_dir) is None
        assert run_cli("sim", "status", "--state-dir", str(state_dir)) == 1
    finally:
        lifecycle.down(state_dir)


@ROOT_ONLY
@SLOW
def test_replace_restarts_and_down_leaves_foreign_pid_alone(tmp_path):
    state_dir, inv = tmp_path / "state", tmp_path / "sim.yml"
    try:
        first = lifecycle.up(state_dir, inv, mix="cpu:1")
        second = lifecycle.up(state_dir, inv, mix="cpu:1", replace=True)
        assert first.boards[0].pid != second.boards[0].pid
        assert not sshd.is_ours(first.boards[0].pid, first.boards[0].config)  # the old sshd was stopped
        assert sshd.is_ours(second.boards[0].pid, second.boards[0].config)
        # a recorded pid that is now some other program must not be signalled
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            state = load_state(state_dir)
            lifecycle.sshd.stop(state.boards[0].pid, state.boards[0].config)
            state.boards[0].pid = sleeper.pid
            lifecycle.save_state(state)
            rep = lifecycle.down(state_dir)
            assert sleeper.poll() is None, "down killed a process it did not start"
            assert any("not running or not ours" in s for s in rep.skipped)
            assert_all_gone(second)
        finally:
            sleeper.kill()
            sleeper.wait()
    finally:
        lifecycle.down(state_dir)


@SLOW
def test_loopback_sim_without_netns(tmp_path):
    state_dir, inv = tmp_path / "state", tmp_path / "sim.yml"
    try:
        state = lifecycle.up(state_dir, inv, mix="rk3588:1", use_netns=False)
        (b,) = state.boards
        assert b.address == "127.0.0.1" and b.port != 22 and not b.netns
        kh = Path(state.known_hosts).read_text()
        assert kh.startswith(f"[127.0.0.1]:{b.port} ssh-ed25519 ")
        (board,) = load_inventory(inv)
        assert board.port == b.port
        proc = ssh(hostvars(inv)["sim-rk3588-1"], Path(state.known_hosts), "echo", "hello")
        assert proc.returncode == 0 and proc.stdout.strip() == "hello", proc.stderr
    finally:
        lifecycle.down(state_dir)
    assert_all_gone(state)


@ROOT_ONLY
@SLOW
def test_failed_up_removes_what_it_started(tmp_path):
    """The second board's veth name is taken: up fails clearly and removes the first board too."""
    state_dir, inv = tmp_path / "state", tmp_path / "sim.yml"
    tag = netns.tag_for(str(state_dir.resolve()))
    blocker = f"fs{tag}h1"
    subprocess.run(["ip", "link", "add", blocker, "type", "veth", "peer", "name", f"fs{tag}x1"], check=True)
    try:
        with pytest.raises(FleetError) as e:
            lifecycle.up(state_dir, inv, mix="pi5-hailo8l:2")
        assert blocker in e.value.message
        assert load_state(state_dir) is None and not inv.exists()
        assert not netns.exists(f"{netns.PREFIX}{tag}-sim-pi5-1") and not netns.link_exists(f"fs{tag}h0")
        assert not netns.exists(f"{netns.PREFIX}{tag}-sim-pi5-2")
        out = subprocess.run(["pgrep", "-af", str(state_dir)], check=False, capture_output=True, text=True).stdout
        assert "sshd" not in out
    finally:
        subprocess.run(["ip", "link", "del", blocker], check=False, capture_output=True)
        lifecycle.down(state_dir)
