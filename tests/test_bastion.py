"""Boards behind a bastion, reached the way Ansible reaches them (issue 13 §3).

An emulated jump host (an sshd in its own network namespace, `fleet sim up --bastion`) is the only
thing with a link to the board's namespace: the root namespace, where the controller runs, has
none. The inventory says ``-F SSH_CONFIG -o ProxyJump=sim-bastion`` in ``ansible_ssh_common_args``,
as a lab's would; `fleet deploy` (Ansible, OpenSSH), `fleet doctor` and `fleet test` (paramiko)
all go through it, and every host key on the way is pinned and checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fleet.doctor.cli import run_doctor
from fleet.errors import FleetError
from fleet.inventory import ansible_bin, ansible_env, load_inventory
from fleet.remote.session import BoardUnreachable, connect
from fleet.remote.ssh_target import Hop, parse_jump, parse_ssh_args, resolve
from fleet.results.store import Store
from fleet.runner.cli import run_suite
from fleet.sim import sshd
from sim_fleet import deployed_fleet

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


# --- resolution, as OpenSSH + Ansible do it (no network) ----------------------------------------

def test_ssh_args_forms():
    opts, cfg = parse_ssh_args("-C -o ControlMaster=auto -o 'ProxyCommand ssh -W %h:%p gw' -oUser=x "
                               "-J a@b:2200 -F /tmp/c -p 2222 -i ~/k -o User=y -v -l z")
    assert cfg == "/tmp/c"
    assert opts["proxycommand"] == "ssh -W %h:%p gw" and opts["proxyjump"] == "a@b:2200"
    assert opts["user"] == "x"  # first value wins, as in OpenSSH
    assert opts["port"] == "2222" and opts["identityfile"] == "~/k" and opts["controlmaster"] == "auto"
    with pytest.raises(ValueError, match="no argument"):
        parse_ssh_args("-o")
    with pytest.raises(ValueError, match="cannot split"):
        parse_ssh_args("-o 'ProxyJump=a")


def test_jump_specs(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("Host gw\n  HostName 192.0.2.7\n  User ops\n  Port 2201\n  IdentityFile ~/gw_key\n"
                   "  UserKnownHostsFile /tmp/gw_known /tmp/other\n")
    hops = parse_jump("gw,admin@10.0.0.1:2222,ssh://u@[2001:db8::1]:23", str(cfg))
    home = str(Path.home())
    assert hops == (
        Hop("gw", "192.0.2.7", 2201, "ops", f"{home}/gw_key", "/tmp/gw_known"),
        Hop("admin@10.0.0.1:2222", "10.0.0.1", 2222, "admin"),
        Hop("u@[2001:db8::1]:23", "2001:db8::1", 23, "u"),
    )
    assert parse_jump("none") == ()
    with pytest.raises(ValueError, match="port"):
        parse_jump("h:99999")


def test_precedence_inventory_then_args_then_ssh_config(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("Host pi5-a\n  HostName 192.0.2.10\n  User pi\n  Port 2022\n  ProxyJump gw\n"
                   "Host gw\n  HostName 192.0.2.1\n")
    # ssh_config fills in what the inventory and the args leave unset
    t = resolve("pi5-a", ssh_args=f"-F {cfg}")
    assert (t.host, t.port, t.user) == ("192.0.2.10", 2022, "pi")
    assert [h.host for h in t.jump] == ["192.0.2.1"]
    # ansible_user/ansible_port win over -o and over ssh_config; -o wins over ssh_config
    t = resolve("pi5-a", user="fleet", port=22, ssh_args=f"-F {cfg} -o User=x -o Port=1 -o ProxyJump=none")
    assert (t.port, t.user, t.jump) == (22, "fleet", ())
    t = resolve("pi5-a", ssh_args=f"-F {cfg} -o Port=2300")
    assert t.port == 2300
    # a ProxyCommand on the command line replaces ssh_config's ProxyJump; tokens expanded
    t = resolve("pi5-a", user="u", ssh_args=f"-F {cfg} -o 'ProxyCommand=ssh -W %h:%p -l %r gw %%'")
    assert t.jump == () and t.proxy_command == "ssh -W 192.0.2.10:2022 -l u gw %"


def test_bad_ssh_args_name_the_host(tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    b1:\n      board: cpu\n      accelerator: cpu\n      fleet_root: /opt/fleet\n"
                   "      ansible_ssh_common_args: \"-o ProxyJump=gw:notaport\"\n")
    with pytest.raises(FleetError, match="host 'b1': SSH settings: .*port") as e:
        load_inventory(inv)
    assert "ansible_ssh_common_args" in e.value.fix


# --- a real bastion in front of a real board ------------------------------------------------------

@pytest.fixture(scope="module")
def behind(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    base = tmp_path_factory.mktemp("bastion")
    with deployed_fleet(base, "rk3588:1", ("crepe-tiny",), bastion=True) as (state_dir, inv):
        yield {"state": state_dir, "inventory": inv, "base": base}


def _sim_state(state_dir):
    from fleet.sim.state import load_state

    return load_state(state_dir)


def _links(netns: str = "") -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), "-o", "link", "show"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@needs_root
def test_board_is_reachable_only_through_the_bastion(behind):
    state = _sim_state(behind["state"])
    board = state.boards[0]
    assert board.via == state.bastion.netns
    # the board's only link (besides lo) ends in the bastion's namespace, not in the root one
    assert board.host_if in _links(state.bastion.netns) and board.host_if not in _links()
    root_addrs = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    assert board.address not in root_addrs and state.bastion.host_addr in root_addrs
    assert sshd.answering_in(state.bastion.netns, board.address, 22)
    # the inventory reaches it with a ProxyJump named in an ssh_config, as a lab's would
    b = load_inventory(behind["inventory"])[0]
    assert b.host == board.address and [h.name for h in b.jump] == ["sim-bastion"]
    assert b.jump[0].host == state.bastion.address and b.jump[0].known_hosts == state.known_hosts


@needs_root
def test_ansible_fleet_connect_and_doctor_go_through_the_jump_host(behind):
    inv = behind["inventory"]
    # Ansible's own ssh connection (the deploy in the fixture already went this way)
    ping = subprocess.run([ansible_bin("ansible"), "-i", str(inv), "all", "-m", "ping"],
                          capture_output=True, text=True, env=ansible_env())
    assert ping.returncode == 0 and '"ping": "pong"' in ping.stdout, ping.stdout + ping.stderr
    # fleet's paramiko connection lands on the board itself, not on the bastion
    b = load_inventory(inv)[0]
    conn = connect(b, timeout_s=15)
    try:
        out = conn.run("ip -o -4 addr show", hide=True, in_stream=False).stdout
    finally:
        conn.close()
    assert b.host in out
    assert not conn.gateway.is_connected  # closing the board's connection closed the hop's
    reports, rc, msg = run_doctor(str(inv), allow_emulated=True, timeout_s=60)
    assert rc == 0, (msg, reports)
    assert [(r["board"], r["status"], r["host"]) for r in reports] == [(b.name, "pass", f"{b.host}:22")]


@needs_root
def test_suite_runs_through_the_bastion(behind, monkeypatch):
    monkeypatch.setenv("FLEET_VC_MAX_CLIPS", "1")
    db = behind["base"] / "results.db"
    run_id, rc = run_suite(str(ROOT / "suites" / "voice_conversion"), str(behind["inventory"]), db=str(db),
                           keyword="test_agent_reports_board or test_crepe_accuracy", quiet=True)
    results = Store(db).results(run_id)
    assert rc == 0, [(r.test, r.outcome, r.message[:300]) for r in results]
    assert sorted(r.test for r in results) == ["test_agent_reports_board", "test_crepe_accuracy"]
    assert all(r.outcome == "passed" for r in results)


@needs_root
@pytest.mark.parametrize("whose", ["bastion", "board"])
def test_host_keys_stay_pinned_on_every_hop(behind, whose, tmp_path):
    """A wrong host key for the jump host or for the board behind it is refused by fleet and by
    Ansible alike (the known_hosts is restored afterwards)."""
    state = _sim_state(behind["state"])
    known = Path(state.known_hosts)
    saved = known.read_text()
    target = state.bastion.address if whose == "bastion" else state.boards[0].address
    other = sshd.ensure_keypair(tmp_path / "other_key", "other")
    lines = [f"{target} {sshd.public_key(other)}" if ln.split()[0] == target else ln for ln in saved.splitlines()]
    try:
        known.write_text("\n".join(lines) + "\n")
        b = load_inventory(behind["inventory"])[0]
        with pytest.raises(BoardUnreachable, match="host key") as e:
            connect(b, timeout_s=15)
        assert ("jump host sim-bastion" in str(e.value)) == (whose == "bastion"), str(e.value)
        # a fresh ControlPath dir: a master connection left by an earlier ping would be reused unchecked
        env = {**ansible_env(), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")}
        ping = subprocess.run([ansible_bin("ansible"), "-i", str(behind["inventory"]), "all", "-m", "ping"],
                              capture_output=True, text=True, env=env)
        assert ping.returncode != 0 and "UNREACHABLE" in ping.stdout, ping.stdout
        if whose == "board":  # (the jump's own ssh -W reports its refusal to a stderr Ansible does not show)
            assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in ping.stdout + ping.stderr
    finally:
        known.write_text(saved)


@needs_root
def test_proxy_command_reaches_the_board_too(behind, tmp_path):
    """The same board through ``ProxyCommand ssh -W %h:%p`` instead of ProxyJump."""
    state = _sim_state(behind["state"])
    b = load_inventory(behind["inventory"])[0]
    cmd = f"{shutil.which('ssh')} -F {state.ssh_config} -W %h:%p sim-bastion"
    t = resolve(b.host, user=b.user, port=b.port, key_file=b.key_file, known_hosts=b.known_hosts,
                ssh_args=f"-o 'ProxyCommand={cmd}'")
    assert t.proxy_command == cmd.replace("%h", b.host).replace("%p", "22")
    from dataclasses import replace

    conn = connect(replace(b, jump=(), proxy_command=t.proxy_command), timeout_s=15)
    try:
        assert b.host in conn.run("ip -o -4 addr show", hide=True, in_stream=False).stdout
    finally:
        conn.close()


@needs_root
def test_sim_down_removes_the_bastion(tmp_path):
    from fleet.sim import lifecycle

    state = lifecycle.up(tmp_path / "sim", tmp_path / "inv" / "sim.yml", mix="cpu:1", bastion=True)
    spots = [state.bastion.netns, state.boards[0].netns]
    assert all(n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout for n in spots)
    rep = lifecycle.down(tmp_path / "sim")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in spots)
    assert not Path(state.ssh_config).exists() and not Path(state.inventory).exists()
    assert any("sim-bastion" in s for s in rep.stopped) and not sshd.is_ours(state.bastion.pid, state.bastion.config)
