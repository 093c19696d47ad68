"""Bring an emulated fleet up, report on it, take it down.

`up` records every namespace, link and pid in the state file as soon as it exists, so a failure
half-way (or a crash) still leaves `down` able to remove exactly what was made.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fleet.errors import FleetError
from fleet.sim import netns, sshd
from fleet.sim.state import SimBoard, SimState, clear_state, load_state, save_state

# board class -> (accelerator, short name used in hostnames)
BOARD_KINDS = {
    "pi5-hailo8l": ("hailo8l", "pi5"),
    "rk3588": ("rk3588", "rk3588"),
    "cpu": ("cpu", "cpu"),
}
PYTHON = "/usr/bin/python3"


def parse_mix(mix: str | None, boards: int | None) -> list[tuple[str, int]]:
    """Turn ``--mix pi5-hailo8l:2,rk3588:1`` / ``--boards N`` into [(board class, count)].

    Without a mix, N boards are split half Pi 5 + Hailo-8L (rounded up), half RK3588.

    Raises:
        FleetError: unknown board class, bad count, or --boards disagreeing with --mix.
    """
    if not mix:
        n = 3 if boards is None else boards
        if n < 1:
            raise FleetError(f"--boards {n}: need at least one board", "use --boards 1 or more")
        return [(k, c) for k, c in (("pi5-hailo8l", (n + 1) // 2), ("rk3588", n // 2)) if c]
    out: list[tuple[str, int]] = []
    for part in [p.strip() for p in mix.split(",") if p.strip()]:
        kind, _, count = part.partition(":")
        if kind not in BOARD_KINDS:
            raise FleetError(f"--mix: unknown board class '{kind}'", f"use {', '.join(BOARD_KINDS)}")
        try:
            c = int(count or "1")
        except ValueError:
            raise FleetError(f"--mix: '{part}' has no numeric count", "write CLASS:COUNT, e.g. rk3588:1") from None
        if c < 1:
            raise FleetError(f"--mix: '{part}' asks for {c} boards", "give each class a count of 1 or more")
        out.append((kind, c))
    total = sum(c for _, c in out)
    if not out:
        raise FleetError("--mix is empty", "write e.g. --mix pi5-hailo8l:2,rk3588:1")
    if boards is not None and boards != total:
        raise FleetError(f"--boards {boards} but --mix adds up to {total}", "give one of them, or make them agree")
    return out


def known_hosts_path(inventory: Path) -> Path:
    """Where the known_hosts for an inventory goes: ``inventory/sim.yml`` -> ``inventory/sim_known_hosts``."""
    return inventory.with_name(f"{inventory.stem}_known_hosts")


def _alive_parts(state: SimState) -> list[str]:
    everything = state.boards + ([state.bastion] if state.bastion else [])
    parts = [f"sshd {b.name} (pid {b.pid})" for b in everything if sshd.is_ours(b.pid, b.config)]
    if state.netns:
        parts += [f"netns {b.netns}" for b in everything if b.netns and netns.exists(b.netns)]
    return parts


def up(
    state_dir: Path,
    inventory: Path,
    *,
    mix: str | None = None,
    boards: int | None = None,
    use_netns: bool | None = None,
    replace: bool = False,
    timeout: float = 15.0,
    bastion: bool = False,
) -> SimState:
    """Start the emulated boards and write their inventory and known_hosts.

    Args:
        state_dir: folder for keys, sshd configs, board roots and state.json.
        inventory: path of the Ansible inventory to write (its known_hosts goes beside it).
        mix, boards: which boards (see parse_mix).
        use_netns: namespaces + veth (default: when root); False = sshd on 127.0.0.1.
        replace: take an already running sim in state_dir down first.
        timeout: seconds to wait for all sshds to answer.
        bastion: put the boards behind an emulated jump host: an sshd in its own namespace, the only
            one with a link to the boards' namespaces (the root namespace has none), named in an
            ssh_config beside the inventory; the inventory reaches the boards with
            ``-F SSH_CONFIG -o ProxyJump=sim-bastion`` as a lab's would (needs namespaces).

    Raises:
        FleetError: a sim is already running (without replace), not root with use_netns, an
            sshd that did not start or answer in time (everything started is removed first).
    """
    state_dir = Path(state_dir).resolve()
    inventory = Path(inventory).resolve()
    kinds = parse_mix(mix, boards)
    is_root = os.geteuid() == 0
    if use_netns is None:
        use_netns = is_root
    if use_netns and not is_root:
        raise FleetError("network namespaces need root", "run as root, or pass --no-netns (sshd on 127.0.0.1)")
    if bastion and not use_netns:
        raise FleetError("--bastion needs network namespaces (root, without --no-netns)",
                         "run `fleet sim up --bastion` as root")
    old = load_state(state_dir)
    if old is not None:
        alive = _alive_parts(old)
        if alive and not replace:
            raise FleetError(
                f"a sim is already running in {state_dir}: {', '.join(alive)}",
                "use it (inventory " + (old.inventory or "?") + "), or `fleet sim down`, or `fleet sim up --replace`",
            )
        down(state_dir)

    state_dir.mkdir(parents=True, exist_ok=True)
    key = sshd.ensure_keypair(state_dir / "id_ed25519", "fleet-sim-client")
    authorized = state_dir / "authorized_keys"
    authorized.write_text(sshd.public_key(key) + " fleet-sim-client\n")
    state = SimState(
        state_dir=str(state_dir),
        inventory=str(inventory),
        known_hosts=str(known_hosts_path(inventory)),
        key_file=str(key),
        user="root" if is_root else getpass.getuser(),
        netns=use_netns,
    )
    save_state(state)
    try:
        names = [(kind, f"sim-{BOARD_KINDS[kind][1]}-{i}") for kind, c in kinds for i in range(1, c + 1)]
        tag = netns.tag_for(str(state_dir))
        # Only netns allocation needs the host-wide lock; loopback boards take free ports.
        with netns.allocation_lock() if use_netns else contextlib.nullcontext():
            addrs = netns.allocate(len(names) + bool(bastion), netns.used_blocks()) if use_netns else []
            if bastion:
                state.bastion = _start_bastion(state, tag, addrs.pop())
                state.ssh_config = str(ssh_config_path(inventory))
                save_state(state)
            for idx, (kind, name) in enumerate(names):
                bdir = state_dir / "boards" / name
                root = bdir / "root"
                root.mkdir(parents=True, exist_ok=True)
                board = SimBoard(
                    name=name,
                    board=kind,
                    accelerator=BOARD_KINDS[kind][0],
                    root=str(root),
                    address="127.0.0.1",
                    port=0,
                    config=str(bdir / "sshd_config"),
                )
                if use_netns:
                    host_addr, board_addr = netns.behind_bastion(idx) if bastion else addrs[idx]
                    link = netns.Link(
                        netns=f"{netns.PREFIX}{tag}-{name}",
                        host_if=f"fs{tag}{'j' if bastion else 'h'}{idx}",
                        board_if=f"fs{tag}b{idx}",
                        host_addr=host_addr,
                        board_addr=board_addr,
                    )
                    board.netns, board.host_if, board.host_addr = link.netns, link.host_if, link.host_addr
                    board.address, board.port = link.board_addr, 22
                    board.via = state.bastion.netns if bastion else ""
                    state.boards.append(board)
                    save_state(state)  # record before making, so down() can remove a half-made link
                    netns.create(link, outer=board.via)
                else:
                    board.port = sshd.free_port()
                    state.boards.append(board)
                host_key = sshd.ensure_keypair(bdir / "ssh_host_ed25519_key", name)
                sshd.write_config(
                    Path(board.config),
                    address=board.address,
                    port=board.port,
                    host_key=host_key,
                    pid_file=bdir / "sshd.pid",
                    authorized_keys=authorized,
                )
                board.pid = sshd.start(Path(board.config), bdir / "sshd.pid", bdir / "sshd.log", board.netns)
                save_state(state)
        deadline = time.monotonic() + timeout
        for b in ([state.bastion] if state.bastion else []) + state.boards:
            if not sshd.wait_answering(b.address, b.port, deadline, via=b.via):
                raise FleetError(
                    f"emulated board {b.name}: sshd at {b.address}:{b.port} did not answer in {timeout:.0f} s",
                    f"see {Path(b.config).parent / 'sshd.log'}; everything started was removed",
                    exit_code=3,
                )
        write_known_hosts(state)
        if state.bastion:
            write_ssh_config(state)
        write_inventory(state)
        save_state(state)
    except BaseException:
        down(state_dir)
        raise
    return state


#: Inventory name of the emulated jump host (its ssh_config ``Host``).
BASTION = "sim-bastion"


def ssh_config_path(inventory: Path) -> Path:
    """Where the ssh_config naming the bastion goes: ``inventory/sim.yml`` -> ``inventory/sim_ssh_config``."""
    return inventory.with_name(f"{inventory.stem}_ssh_config")


def _start_bastion(state: SimState, tag: str, addrs: tuple[str, str]) -> SimBoard:
    """Make the bastion's namespace (linked to the root namespace) and start its sshd: TCP
    forwarding on (sshd's default), which a ProxyJump (``ssh -W``, direct-tcpip) needs."""
    bdir = Path(state.state_dir) / "bastion"
    bdir.mkdir(parents=True, exist_ok=True)
    b = SimBoard(name=BASTION, board="bastion", accelerator="", root=str(bdir), address=addrs[1], port=22,
                 config=str(bdir / "sshd_config"), netns=f"{netns.PREFIX}{tag}-bastion",
                 host_if=f"fs{tag}hb", host_addr=addrs[0])
    state.bastion = b
    save_state(state)  # recorded before it is made, so down() removes a half-made one
    netns.create(netns.Link(b.netns, b.host_if, f"fs{tag}bb", b.host_addr, b.address))
    host_key = sshd.ensure_keypair(bdir / "ssh_host_ed25519_key", BASTION)
    sshd.write_config(Path(b.config), address=b.address, port=b.port, host_key=host_key,
                      pid_file=bdir / "sshd.pid", authorized_keys=Path(state.state_dir) / "authorized_keys")
    b.pid = sshd.start(Path(b.config), bdir / "sshd.pid", bdir / "sshd.log", b.netns)
    return b


def write_ssh_config(state: SimState) -> Path:
    """Write the ssh_config that names the bastion, as a lab's ~/.ssh/config would: its address,
    user, key and the known_hosts pinning its host key (OpenSSH applies command-line ``-o``
    options to the destination only, so a jump host's settings must come from a config file)."""
    b = state.bastion
    path = Path(state.ssh_config)
    path.write_text(
        "# written by `fleet sim up --bastion`; the inventory passes it with -F\n"
        f"Host {BASTION}\n"
        f"  HostName {b.address}\n"
        f"  Port {b.port}\n"
        f"  User {state.user}\n"
        f"  IdentityFile {state.key_file}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {state.known_hosts}\n"
        "  StrictHostKeyChecking yes\n"
    )
    return path


def write_known_hosts(state: SimState) -> Path:
    """Write known_hosts lines pinning each board's host key (``ADDRESS`` or ``[ADDRESS]:PORT``),
    and the bastion's when there is one."""
    path = Path(state.known_hosts)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for b in ([state.bastion] if state.bastion else []) + state.boards:
        host = b.address if b.port == 22 else f"[{b.address}]:{b.port}"
        lines.append(f"{host} {sshd.public_key(Path(b.config).parent / 'ssh_host_ed25519_key')}")
    path.write_text("\n".join(lines) + "\n")
    return path


def ssh_common_args(known_hosts: str) -> str:
    """The ssh options every fleet SSH connection to the sim uses: pinned host keys, one identity."""
    return (
        f"-o UserKnownHostsFile={shlex.quote(known_hosts)} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    )


def write_inventory(state: SimState) -> Path:
    """Write the standard Ansible YAML inventory for the emulated boards (contracts §1).

    Hosts sit under ``all`` and under a group per board class (``pi5_hailo8l``, ``rk3588``, ``cpu``).
    """
    hosts = {}
    groups: dict[str, dict] = {}
    for b in state.boards:
        hosts[b.name] = {
            "board": b.board,
            "accelerator": b.accelerator,
            "emulated": True,
            "fleet_root": b.root,
            "ansible_host": b.address,
            "ansible_port": b.port,
            "ansible_user": state.user,
            "ansible_ssh_private_key_file": state.key_file,
            "fleet_known_hosts": state.known_hosts,
            "ansible_ssh_common_args": ssh_common_args(state.known_hosts) + (
                f" -F {shlex.quote(state.ssh_config)} -o ProxyJump={BASTION}" if state.bastion else ""),
            "ansible_python_interpreter": PYTHON,
        }
        groups.setdefault(b.board.replace("-", "_"), {"hosts": {}})["hosts"][b.name] = None
    doc = {"all": {"hosts": hosts, "children": groups}}
    path = Path(state.inventory)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Emulated fleet written by `fleet sim up` (state: {state.state_dir}).\n"
        "# Each host is a real sshd; `fleet sim down` stops them and removes this file.\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    os.replace(tmp, path)
    return path


@dataclass
class DownReport:
    """What `down` removed: pids signalled, namespaces/links deleted, files removed."""

    stopped: list[str]
    removed: list[str]
    skipped: list[str]


def down(state_dir: Path, purge: bool = False) -> DownReport:
    """Stop the recorded sshds and delete the recorded namespaces and links.

    A pid whose /proc/<pid>/cmdline no longer names its sshd_config is left alone (skipped).
    The inventory and known_hosts `up` wrote are removed. With ``purge``, the whole state dir
    (keys, board roots) goes too; without it, board roots stay so a new `up` deploys faster.
    """
    state_dir = Path(state_dir).resolve()
    rep = DownReport([], [], [])
    state = load_state(state_dir)
    if state is None:
        if purge and state_dir.exists():
            shutil.rmtree(state_dir)
        return rep
    everything = state.boards + ([state.bastion] if state.bastion else [])
    for b in everything:
        if b.pid:
            if sshd.stop(b.pid, b.config):
                rep.stopped.append(f"{b.name} sshd pid {b.pid}")
            else:
                rep.skipped.append(f"{b.name} pid {b.pid} (not running or not ours)")
    for b in everything:  # boards first: their links' host ends live in the bastion's namespace
        if b.netns or b.host_if:
            rep.removed += netns.delete(b.netns, "" if b.via else b.host_if)
    for f in (state.inventory, state.known_hosts, state.ssh_config):
        if f and Path(f).exists():
            Path(f).unlink()
            rep.removed.append(f)
    clear_state(state_dir)
    if purge:
        shutil.rmtree(state_dir, ignore_errors=True)
    return rep


@dataclass
class BoardStatus:
    """One row of `sim status`."""

    name: str
    board: str
    address: str
    port: int
    pid: int
    alive: bool
    answering: bool
    netns: str


def status(state_dir: Path) -> tuple[SimState | None, list[BoardStatus]]:
    """Check each recorded board: sshd pid alive (and ours), sshd answering on its address."""
    state = load_state(Path(state_dir).resolve())
    if state is None:
        return None, []
    rows = [
        BoardStatus(
            name=b.name,
            board=b.board,
            address=b.address,
            port=b.port,
            pid=b.pid,
            alive=sshd.is_ours(b.pid, b.config),
            answering=(sshd.answering_in(b.via, b.address, b.port) if b.via else sshd.answering(b.address, b.port))
            if b.port else False,
            netns=b.netns,
        )
        for b in state.boards
    ]
    return state, rows


def stop_board(state_dir: Path, name: str) -> bool:
    """Stop one board's sshd (its namespace stays): a lost board, for tests and drills.

    Returns True when it was running. Raises FleetError for an unknown board name.
    """
    state = load_state(Path(state_dir).resolve())
    board = next((b for b in (state.boards if state else []) if b.name == name), None)
    if board is None:
        raise FleetError(f"no emulated board '{name}' in {state_dir}", "see `fleet sim status`")
    return sshd.stop(board.pid, board.config)


def start_board(state_dir: Path, name: str, timeout: float = 10.0) -> int:
    """Start one board's sshd again after :func:`stop_board` (the board is back from a reboot).

    Returns its new listener pid (recorded in the state file, so `sim down` stops it). A board
    whose sshd still runs is left as it is and its pid returned.

    Raises:
        FleetError: unknown board name, or sshd did not start or answer within ``timeout`` (s).
    """
    state_dir = Path(state_dir).resolve()
    state = load_state(state_dir)
    board = next((b for b in (state.boards if state else []) if b.name == name), None)
    if board is None:
        raise FleetError(f"no emulated board '{name}' in {state_dir}", "see `fleet sim status`")
    if sshd.is_ours(board.pid, board.config):
        return board.pid
    bdir = Path(board.config).parent
    board.pid = sshd.start(Path(board.config), bdir / "sshd.pid", bdir / "sshd.log", board.netns, timeout=timeout)
    save_state(state)
    if not sshd.wait_answering(board.address, board.port, time.monotonic() + timeout, via=board.via):
        raise FleetError(f"emulated board {name}: sshd at {board.address}:{board.port} did not answer in "
                         f"{timeout:.0f} s after a restart", f"see {bdir / 'sshd.log'}", exit_code=3)
    return board.pid
