"""The emulated fleet's state file (``state_dir/state.json``): what `sim up` made, so that
`sim down` removes exactly that and nothing else."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleet.errors import FleetError

STATE_FILE = "state.json"
SCHEMA = 1


@dataclass
class SimBoard:
    """One emulated board as `sim up` made it.

    Attributes:
        name: inventory hostname (``sim-pi5-1``).
        board: board class (``pi5-hailo8l`` | ``rk3588`` | ``cpu``).
        accelerator: the NPU it stands in for.
        root: the board's fleet_root (absolute path on this machine; inside ``chroot`` for aarch64).
        address: where its sshd listens (198.18.N.2, or 127.0.0.1).
        port: sshd's TCP port.
        config: absolute path of its sshd_config (also used to recognise its sshd process).
        netns: network namespace name, "" when run on loopback.
        host_if: host end of the veth pair in the root namespace (in the bastion's namespace for
            a board behind the bastion), "" when none.
        host_addr: address of the host end (198.18.N.1), "" when none.
        pid: sshd's listener pid, 0 when not started.
        via: the bastion's namespace when the board is reachable only through the bastion
            (`fleet sim up --bastion`), else "".
        arch: ``aarch64`` for a board under qemu-user, "" for the controller's own userland.
        chroot: host path of an aarch64 board's root (its overlay mount), "" for x86 boards. Its
            ``root`` and sshd paths are then paths inside that root, ``config`` a host path in it.
        mounts: mount points `sim up` made for the board, in mount order (unmounted last first).
        python_version: the board's Python (``3.11``), "" when it is the controller's.
        suite: the Debian suite of an aarch64 board's image (``bookworm``, ``trixie``...), "" for x86.
    """

    name: str
    board: str
    accelerator: str
    root: str
    address: str
    port: int
    config: str
    netns: str = ""
    host_if: str = ""
    host_addr: str = ""
    pid: int = 0
    via: str = ""
    arch: str = ""
    chroot: str = ""
    mounts: list[str] = field(default_factory=list)
    python_version: str = ""
    suite: str = ""


@dataclass
class SimState:
    """Everything one emulated fleet made. Written after every step of `sim up`.

    Attributes:
        state_dir: folder holding keys, configs, board roots and this state file.
        inventory: the Ansible inventory written for the boards.
        known_hosts: the known_hosts file pinning every board's host key.
        key_file: the client private key the boards accept.
        user: the SSH user (root, or the current user without root).
        netns: True when boards run in network namespaces.
        boards: the boards, in creation order.
        bastion: the jump host in front of the boards (`fleet sim up --bastion`), or None.
        ssh_config: the ssh_config file naming the bastion (its address, key, known_hosts), or "".
        apt_proxy_pid: pid of the fleet's apt-cacher-ng (aarch64 boards' apt), 0 when none.
        apt_proxy_conf: its configuration folder (named on its command line: how it is recognised).
        apt_proxy_port: its TCP port on each board's host-end address.
    """

    state_dir: str
    inventory: str = ""
    known_hosts: str = ""
    key_file: str = ""
    user: str = "root"
    netns: bool = True
    boards: list[SimBoard] = field(default_factory=list)
    schema: int = SCHEMA
    bastion: SimBoard | None = None
    ssh_config: str = ""
    apt_proxy_pid: int = 0
    apt_proxy_conf: str = ""
    apt_proxy_port: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-able dict (what state.json holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SimState":
        """Rebuild from ``to_dict()`` output. Raises TypeError for unknown keys."""
        d = dict(d)
        boards = [SimBoard(**b) for b in d.pop("boards", [])]
        bastion = d.pop("bastion", None)
        return cls(boards=boards, bastion=SimBoard(**bastion) if bastion else None, **d)


def state_path(state_dir: Path) -> Path:
    """The state file inside ``state_dir``."""
    return Path(state_dir) / STATE_FILE


def save_state(state: SimState) -> None:
    """Write the state file atomically (temp file in the same folder, then rename)."""
    path = state_path(Path(state.state_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_dict(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(state_dir: Path) -> SimState | None:
    """Read the state file, or None when there is none.

    Raises:
        FleetError: the file exists but is not a state file fleet wrote.
    """
    path = state_path(Path(state_dir))
    if not path.exists():
        return None
    try:
        return SimState.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise FleetError(
            f"sim state file {path} is unreadable: {e}",
            "remove the leftovers by hand (ip netns list | grep fleetsim-, pgrep -a sshd) and delete the file",
        ) from None


def clear_state(state_dir: Path) -> None:
    """Remove the state file (after `sim down` removed everything it lists)."""
    state_path(Path(state_dir)).unlink(missing_ok=True)
