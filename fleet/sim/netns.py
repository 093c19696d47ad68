"""Network namespaces and veth pairs for emulated boards (root only).

Each board gets namespace ``fleetsim-<tag>-<board>`` and a veth pair: host end in the root
namespace (198.18.N.1/30), board end in the namespace (198.18.N.2/30). Addresses come from
198.18.0.0/15, the RFC 2544 benchmarking range, so they never clash with a real network.
Everything here acts only on names the caller passes in (those recorded in the state file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import subprocess
from dataclasses import dataclass

from fleet.errors import FleetError

PREFIX = "fleetsim-"
POOL = ipaddress.ip_network("198.18.0.0/15")


@dataclass(frozen=True)
class Link:
    """Names and addresses of one board's namespace and veth pair."""

    netns: str
    host_if: str
    board_if: str
    host_addr: str
    board_addr: str


def tag_for(state_dir: str) -> str:
    """Short tag (4 hex digits) that keeps names of sims with different state dirs apart."""
    return hashlib.sha1(str(state_dir).encode()).hexdigest()[:4]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise FleetError(
            f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}",
            "run `fleet sim up` as root, or use --no-netns for boards on 127.0.0.1",
            exit_code=3,
        )
    return proc


# Host-wide lock: two `sim up` at once (two test sessions, a benchmark beside a test) would
# otherwise read the same free blocks and both try to take them.
LOCK_FILE = "/run/lock/fleet-sim-netns.lock"


@contextlib.contextmanager
def allocation_lock():
    """Hold the host-wide allocation lock (flock on ``LOCK_FILE``) from choosing addresses to
    having created the links; released on exit, or by the kernel if the process dies."""
    with open(LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def used_blocks() -> set[int]:
    """Indexes N of the 198.18/15 /24 blocks that already carry an address in the root namespace."""
    out = _ip("-4", "-o", "addr", "show").stdout
    used = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" not in parts:
            continue
        addr = ipaddress.ip_interface(parts[parts.index("inet") + 1]).ip
        if addr in POOL:
            used.add((int(addr) - int(POOL.network_address)) >> 8)
    return used


def allocate(count: int, used: set[int]) -> list[tuple[str, str]]:
    """Pick ``count`` free /30 subnets: one per unused /24 block, as (host_addr, board_addr).

    Raises:
        FleetError: the pool is exhausted (more than 510 boards in use).
    """
    base = int(POOL.network_address)
    out = []
    for n in range(1, POOL.num_addresses >> 8):
        if n in used or (n & 0xFF) in (0, 255):
            continue
        out.append((str(ipaddress.ip_address(base + (n << 8) + 1)), str(ipaddress.ip_address(base + (n << 8) + 2))))
        if len(out) == count:
            return out
    raise FleetError("no free 198.18.0.0/15 subnet left for emulated boards", "run `fleet sim down` for old sims")


def exists(netns: str) -> bool:
    """True when the named network namespace exists."""
    out = _ip("netns", "list", check=False).stdout
    return any(line.split()[0] == netns for line in out.splitlines() if line.strip())


def link_exists(ifname: str) -> bool:
    """True when the named link exists in the root namespace."""
    return _ip("link", "show", "dev", ifname, check=False).returncode == 0


#: Where the private links between the bastion and the boards behind it take their /30s: block
#: 255 of the pool, which allocate() never hands out, so they never clash with a board's link.
BEHIND_BASTION = ipaddress.ip_network("198.19.255.0/24")


def behind_bastion(idx: int) -> tuple[str, str]:
    """(bastion end, board end) addresses of the ``idx``-th board's private link to the bastion.

    Raises:
        FleetError: more than 63 boards behind one bastion.
    """
    if not 0 <= idx < BEHIND_BASTION.num_addresses // 4:
        raise FleetError(f"at most {BEHIND_BASTION.num_addresses // 4} boards fit behind the emulated bastion",
                         "use fewer boards with --bastion")
    base = int(BEHIND_BASTION.network_address) + 4 * idx
    return str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))


def create(link: Link, outer: str = "") -> None:
    """Make the namespace, the veth pair and both addresses, and bring lo and both ends up.

    Args:
        outer: the namespace the host end goes into ("" = the root namespace; the bastion's for a
            board only the bastion reaches: the root namespace then has no link to the board).

    Raises:
        FleetError: an `ip` command failed (not root, name taken, ...). The caller cleans up.
    """
    at = ["-n", outer] if outer else []
    _ip("netns", "add", link.netns)
    _ip(*at, "link", "add", link.host_if, "type", "veth", "peer", "name", link.board_if, "netns", link.netns)
    _ip(*at, "addr", "add", f"{link.host_addr}/30", "dev", link.host_if)
    _ip(*at, "link", "set", link.host_if, "up")
    _ip("-n", link.netns, "link", "set", "lo", "up")
    _ip("-n", link.netns, "addr", "add", f"{link.board_addr}/30", "dev", link.board_if)
    _ip("-n", link.netns, "link", "set", link.board_if, "up")


def delete(netns: str, host_if: str) -> list[str]:
    """Delete a recorded veth pair and namespace if they still exist; returns what was removed.

    Only names starting with ``fleetsim-`` (namespaces) are touched.
    """
    removed = []
    if host_if and link_exists(host_if):
        if _ip("link", "del", host_if, check=False).returncode == 0:
            removed.append(f"link {host_if}")
    if netns and netns.startswith(PREFIX) and exists(netns):
        if _ip("netns", "del", netns, check=False).returncode == 0:
            removed.append(f"netns {netns}")
    return removed
