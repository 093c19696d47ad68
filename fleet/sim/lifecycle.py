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
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fleet.errors import FleetError
from fleet.families import registry
from fleet.sim import aptproxy, netns, qemu, rootfs, sshd
from fleet.sim.state import SimBoard, SimState, clear_state, load_state, save_state

PYTHON = "/usr/bin/python3"


ARCHES = ("x86_64", "aarch64")
# aarch64 boards: where fleet installs inside the board's root, the pip platform of its
# wheelhouse (glibc 2.36 on bookworm), and what runs its CPU.
AARCH64_ROOT = "/opt/fleet"
AARCH64_WHEEL_PLATFORM = "manylinux_2_28_aarch64"
CPU_EMULATED = "qemu-user"


#: the families of ``fleet sim up`` without --mix (N boards: half the first, rounded up, half the second)
DEFAULT_MIX = ("pi5-hailo8l", "rk3588")


def parse_mix(mix: str | None, boards: int | None) -> list[tuple[str, int]]:
    """Turn ``--mix pi5-hailo8l:2,rk3588:1`` / ``--boards N`` into [(board family, count)].

    A mix entry names a board family (fleet.families: ``pi5-hailo8l``, ``pi5-hailo8``,
    ``pi5-hailo10h``, ``rk3588``, ``cpu``, or a plug-in's); the board gets the family's board
    class and accelerator.

    Without a mix, N boards are split half Pi 5 + Hailo-8L (rounded up), half RK3588. An
    ``@ARCH`` suffix (see plan_boards) is accepted and dropped here.

    Raises:
        FleetError: unknown board class, bad count, or --boards disagreeing with --mix.
    """
    return [(k, c) for k, c, _ in plan_boards(mix, boards)]


def plan_boards(mix: str | None, boards: int | None, arch: str = "x86_64") -> list[tuple[str, int, str]]:
    """[(board family, count, arch)] from ``--mix``/``--boards`` and ``--arch``.

    A mix entry may name its own architecture: ``pi5-hailo8l:1@aarch64,rk3588:1`` is one Pi 5
    under qemu-user and one x86 RK3588; entries without ``@`` take ``arch``. An aarch64 entry may
    also name its image's Debian suite (``rk3588:1@aarch64:bullseye``, see plan_suites); it is
    checked and dropped here.

    Raises:
        FleetError: unknown board family, architecture or suite, bad count, or --boards disagreeing with --mix.
    """
    return [(k, c, a) for k, c, a, _ in _plan(mix, boards, arch)]


def plan_suites(mix: str | None, boards: int | None, arch: str = "x86_64", suite: str | None = None) -> list[str]:
    """The Debian suite of each board plan_boards() plans, one per board in board_names() order:
    an entry's ``@aarch64:SUITE``, else ``suite`` (``--suite``), else bookworm; "" for x86 boards.

    Raises:
        FleetError: as plan_boards, or an unknown suite, or a suite given for x86 boards only.
    """
    default = suite or rootfs.DEFAULT_SUITE
    rootfs.image_spec(default)  # an unknown --suite fails here, naming the known ones
    out = []
    for _, count, a, s in _plan(mix, boards, arch):
        out += [(s or default) if a == "aarch64" else ""] * count
    if suite and not any(out):
        raise FleetError(f"--suite {suite} but no board is aarch64",
                         "add --arch aarch64 (or CLASS:N@aarch64 in --mix); x86 boards run the controller's userland")
    return out


def _plan(mix: str | None, boards: int | None, arch: str) -> list[tuple[str, int, str, str]]:
    families = registry().families
    if arch not in ARCHES:
        raise FleetError(f"--arch {arch}: unknown architecture", f"use {' or '.join(ARCHES)}")
    if not mix:
        n = 3 if boards is None else boards
        if n < 1:
            raise FleetError(f"--boards {n}: need at least one board", "use --boards 1 or more")
        return [(k, c, arch, "") for k, c in ((DEFAULT_MIX[0], (n + 1) // 2), (DEFAULT_MIX[1], n // 2)) if c]
    out: list[tuple[str, int, str, str]] = []
    for part in [p.strip() for p in mix.split(",") if p.strip()]:
        spec, _, part_arch = part.partition("@")
        part_arch, _, part_suite = part_arch.partition(":")
        part_arch, part_suite = part_arch.strip() or arch, part_suite.strip()
        if part_arch not in ARCHES:
            raise FleetError(f"--mix: '{part}' names unknown architecture '{part_arch}'",
                             f"write CLASS:COUNT@ARCH with ARCH {' or '.join(ARCHES)}, e.g. pi5-hailo8l:1@aarch64")
        if part_suite:
            if part_arch != "aarch64":
                raise FleetError(f"--mix: '{part}' names a Debian suite for an {part_arch} board",
                                 "only aarch64 boards have an image: write CLASS:COUNT@aarch64:SUITE")
            if part_suite not in rootfs.SUITES:
                raise FleetError(f"--mix: '{part}' names unknown Debian suite '{part_suite}'",
                                 f"use one of {', '.join(rootfs.SUITES)}, e.g. rk3588:1@aarch64:bullseye")
        kind, _, count = spec.partition(":")
        if kind not in families:
            raise FleetError(f"--mix: unknown board family '{kind}'", f"use {', '.join(families)}")
        try:
            c = int(count or "1")
        except ValueError:
            raise FleetError(f"--mix: '{part}' has no numeric count", "write CLASS:COUNT, e.g. rk3588:1") from None
        if c < 1:
            raise FleetError(f"--mix: '{part}' asks for {c} boards", "give each class a count of 1 or more")
        out.append((kind, c, part_arch, part_suite))
    total = sum(c for _, c, _, _ in out)
    if not out:
        raise FleetError("--mix is empty", "write e.g. --mix pi5-hailo8l:2,rk3588:1")
    if boards is not None and boards != total:
        raise FleetError(f"--boards {boards} but --mix adds up to {total}", "give one of them, or make them agree")
    return out


def board_names(plan: list[tuple[str, int, str]]) -> list[tuple[str, str, str]]:
    """[(board family, hostname, arch)]: ``sim-pi5-1`` for x86 boards, ``sim-pi5-a64-1`` for aarch64
    (``pi5`` is the family's ``sim_host``)."""
    families = registry().families
    seen: dict[tuple[str, str], int] = {}
    out = []
    for kind, count, arch in plan:
        for _ in range(count):
            i = seen[(kind, arch)] = seen.get((kind, arch), 0) + 1
            infix = "-a64" if arch == "aarch64" else ""
            out.append((kind, f"sim-{families[kind].sim_host}{infix}-{i}", arch))
    return out


def _sshd_alive(b: SimBoard) -> bool:
    return sshd.is_ours(b.pid, b.config, b.chroot)


def known_hosts_path(inventory: Path) -> Path:
    """Where the known_hosts for an inventory goes: ``inventory/sim.yml`` -> ``inventory/sim_known_hosts``."""
    return inventory.with_name(f"{inventory.stem}_known_hosts")


def _alive_parts(state: SimState) -> list[str]:
    everything = state.boards + ([state.bastion] if state.bastion else [])
    parts = [f"sshd {b.name} (pid {b.pid})" for b in everything if _sshd_alive(b)]
    if state.netns:
        parts += [f"netns {b.netns}" for b in everything if b.netns and netns.exists(b.netns)]
    if state.apt_proxy_pid and aptproxy.is_ours(state.apt_proxy_pid, state.apt_proxy_conf):
        parts.append(f"apt-cacher-ng (pid {state.apt_proxy_pid})")
    mounted = qemu.mounted_points()
    parts += [f"mount {m}" for b in state.boards for m in b.mounts if m in mounted]
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
    arch: str = "x86_64",
    suite: str | None = None,
    log=lambda s: None,
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
        arch: architecture of the boards whose --mix entry names none (``x86_64`` | ``aarch64``).
            An aarch64 board is a copy (overlay) of the cached Debian arm64 image run under
            qemu-user (fleet.sim.qemu, fleet.sim.rootfs); the image is built when missing (~4.5 min).
        suite: Debian suite of the aarch64 boards' image whose --mix entry names none
            (``bullseye`` | ``bookworm`` | ``trixie``; default bookworm). Each suite is its own image.
        log: called with a line of progress (the image build).

    Raises:
        FleetError: a sim is already running (without replace), not root with use_netns, an
            sshd that did not start or answer in time (everything started is removed first).
    """
    state_dir = Path(state_dir).resolve()
    inventory = Path(inventory).resolve()
    plan = plan_boards(mix, boards, arch)
    suites = plan_suites(mix, boards, arch, suite)
    is_root = os.geteuid() == 0
    if use_netns is None:
        use_netns = is_root
    if use_netns and not is_root:
        raise FleetError("network namespaces need root", "run as root, or pass --no-netns (sshd on 127.0.0.1)")
    if bastion and not use_netns:
        raise FleetError("--bastion needs network namespaces (root, without --no-netns)",
                         "run `fleet sim up --bastion` as root")
    images: dict[str, dict] = {}
    if any(a == "aarch64" for _, _, a in plan):
        if not is_root:
            raise FleetError("aarch64 boards need root (binfmt_misc, mounts, chroot)", "run `fleet sim up` as root")
        qemu.ensure_binfmt()
        for s in dict.fromkeys(x for x in suites if x):
            images[s] = rootfs.build(rootfs.image_spec(s), log=log)
        timeout = max(timeout, 60.0)
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
        names = board_names(plan)
        tag = netns.tag_for(str(state_dir))
        # Only netns allocation needs the host-wide lock; loopback boards take free ports.
        with netns.allocation_lock() if use_netns else contextlib.nullcontext():
            addrs = netns.allocate(len(names) + bool(bastion), netns.used_blocks()) if use_netns else []
            if bastion:
                state.bastion = _start_bastion(state, tag, addrs.pop())
                state.ssh_config = str(ssh_config_path(inventory))
                save_state(state)
            for idx, (kind, name, board_arch) in enumerate(names):
                bdir = state_dir / "boards" / name
                root = bdir / "root"
                if board_arch != "aarch64":
                    root.mkdir(parents=True, exist_ok=True)
                fam = registry().get(kind)
                board = SimBoard(
                    name=name,
                    board=fam.board_class,
                    accelerator=fam.accelerator,
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
                if board_arch == "aarch64":
                    board.suite = suites[idx]
                    _start_aarch64(state, board, bdir, images[suites[idx]], authorized)
                    continue
                board.python_version = _python_version(PYTHON)
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
        arm = [b for b in state.boards if b.arch == "aarch64"]
        if arm:  # their apt reaches Debian only through the controller
            state.apt_proxy_conf = str(state_dir / "aptproxy" / "conf")
            save_state(state)
            state.apt_proxy_pid, state.apt_proxy_port = aptproxy.start(
                state_dir / "aptproxy", list(dict.fromkeys(b.host_addr or "127.0.0.1" for b in arm)))
            save_state(state)
        deadline = time.monotonic() + timeout
        for b in ([state.bastion] if state.bastion else []) + state.boards:
            if not sshd.wait_answering(b.address, b.port, deadline, via=b.via):
                raise FleetError(
                    f"emulated board {b.name}: sshd at {b.address}:{b.port} did not answer in {timeout:.0f} s",
                    f"see {_log_path(b)}; everything started was removed",
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


def _python_version(python: str) -> str:
    """MAJOR.MINOR of an x86 board's interpreter (the controller's own ``python``), "" when it does not run."""
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


SSHD_DIR = "/etc/ssh/fleet"  # inside an aarch64 board's root: its sshd_config, host key, authorized_keys


def _log_path(b: SimBoard) -> Path:
    return qemu.in_root(b.chroot, "/var/log/fleet-sshd.log") if b.chroot else Path(b.config).parent / "sshd.log"


def _start_aarch64(state: SimState, board: SimBoard, bdir: Path, image: dict, authorized: Path) -> None:
    """Make an aarch64 board's root (overlay of the image, mounts, ARM cpuinfo) and start the
    image's own sshd in it, recording each step in the state file as it is made."""
    stamp = bdir / "image.sha256"
    if stamp.exists() and stamp.read_text().strip() != image["tree_sha256"]:
        # the board's upper layer was written over another image: start it afresh
        for d in ("upper", "work", "rootfs"):
            if str(bdir / d) not in qemu.mounted_points():
                shutil.rmtree(bdir / d, ignore_errors=True)
    bdir.mkdir(parents=True, exist_ok=True)
    board.arch, board.python_version = "aarch64", ".".join(image["python"].split(".")[:2])
    board.chroot = str(bdir / "rootfs")
    save_state(state)  # record the root before mounting, so down() unmounts what is under it
    root, board.mounts = qemu.make_root(Path(image["root"]), bdir)
    save_state(state)
    stamp.write_text(image["tree_sha256"] + "\n")
    board.root = AARCH64_ROOT
    qemu.in_root(root, AARCH64_ROOT).mkdir(parents=True, exist_ok=True)
    sdir = qemu.in_root(root, SSHD_DIR)
    sdir.mkdir(parents=True, exist_ok=True)
    host_key = sshd.ensure_keypair(sdir / "ssh_host_ed25519_key", board.name)
    shutil.copy(authorized, sdir / "authorized_keys")
    board.config = str(sdir / "sshd_config")
    sshd.write_config(
        Path(board.config),
        address=board.address,
        port=board.port,
        host_key=Path(SSHD_DIR) / host_key.name,
        pid_file=Path("/run/fleet-sshd.pid"),
        authorized_keys=Path(SSHD_DIR) / "authorized_keys",
        set_env=qemu.BOARD_ENV,  # every session's processes emulate a Cortex-A76 (fleet.sim.qemu)
    )
    save_state(state)
    board.pid = sshd.start(Path(board.config), qemu.in_root(root, "/run/fleet-sshd.pid"),
                           _log_path(board), board.netns, timeout=60.0, chroot=root, env=qemu.BOARD_ENV)
    save_state(state)


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

    Hosts sit under ``all`` and under a group per board class (``pi5_hailo8l``, ``pi5_hailo10h``,
    ``rk3588``, ``cpu``).
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
        if b.arch != "aarch64" and b.python_version:  # the controller's /usr/bin/python3
            hosts[b.name]["fleet_python_version"] = b.python_version
        if b.arch == "aarch64":
            hosts[b.name].update({
                "arch": "aarch64",
                "fleet_wheel_platform": AARCH64_WHEEL_PLATFORM,
                "fleet_python_version": b.python_version,
                "cpu_emulated": CPU_EMULATED,
            })
            if state.apt_proxy_port:
                hosts[b.name]["fleet_apt_proxy"] = f"http://{b.host_addr or '127.0.0.1'}:{state.apt_proxy_port}"
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
    For an aarch64 board, every process whose root is the board's root is stopped, then every
    mount `up` recorded for it (and any other mount under its root) is unmounted; the image cache
    and the binfmt_misc registration (the system's) stay.
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
            if sshd.stop(b.pid, b.config, chroot=b.chroot):
                rep.stopped.append(f"{b.name} sshd pid {b.pid}")
            else:
                rep.skipped.append(f"{b.name} pid {b.pid} (not running or not ours)")
        if b.chroot:
            # the board's agent, shells, anything its sshd started: every process rooted in it
            rep.stopped += [f"{b.name} pid {p} (root {b.chroot})" for p in qemu.kill_processes_in(Path(b.chroot))]
            under = sorted((m for m in qemu.mounted_points() if m == b.chroot or m.startswith(b.chroot + "/")),
                           key=len)
            points = list(dict.fromkeys([*b.mounts, *under]))
            rep.removed += [f"mount {m}" for m in qemu.unmount_all(points)]
    if state.apt_proxy_conf and not state.apt_proxy_pid:  # `up` failed before it recorded the pid
        with contextlib.suppress(OSError, ValueError):
            state.apt_proxy_pid = int((Path(state.apt_proxy_conf).parent / "acng.pid").read_text().strip())
    if state.apt_proxy_pid:
        if aptproxy.stop(state.apt_proxy_pid, state.apt_proxy_conf):
            rep.stopped.append(f"apt-cacher-ng pid {state.apt_proxy_pid}")
        else:
            rep.skipped.append(f"apt-cacher-ng pid {state.apt_proxy_pid} (not running or not ours)")
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
            alive=_sshd_alive(b),
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
    return sshd.stop(board.pid, board.config, chroot=board.chroot)


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
    if _sshd_alive(board):
        return board.pid
    bdir = Path(board.config).parent
    if board.chroot:
        board.pid = sshd.start(Path(board.config), qemu.in_root(board.chroot, "/run/fleet-sshd.pid"),
                               _log_path(board), board.netns, timeout=max(timeout, 60.0), chroot=board.chroot)
    else:
        board.pid = sshd.start(Path(board.config), bdir / "sshd.pid", bdir / "sshd.log", board.netns, timeout=timeout)
    save_state(state)
    if not sshd.wait_answering(board.address, board.port, time.monotonic() + timeout, via=board.via):
        raise FleetError(f"emulated board {name}: sshd at {board.address}:{board.port} did not answer in "
                         f"{timeout:.0f} s after a restart", f"see {_log_path(board)}", exit_code=3)
    return board.pid
