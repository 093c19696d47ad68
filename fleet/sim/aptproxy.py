"""A controller-side apt proxy for boards without internet: Debian's apt-cacher-ng, fleet's own instance.

Boards get what their OS lacks (python3-venv on a freshly flashed Debian/Raspberry Pi OS) from
their own apt, pointed at this proxy with ``-o Acquire::http::Proxy=http://HOST:PORT`` by the
deploy's base role (host var ``fleet_apt_proxy``). The proxy fetches from the Debian mirror the
board's sources.list names and keeps every file in its cache (``$FLEET_CACHE/apt-cacher-ng``),
so the next board, or an air-gapped lab whose cache was filled once, is served from it.

`fleet sim up` starts one instance per emulated fleet, listening only on the host ends of that
fleet's boards' links (198.18.N.1), with its own configuration folder in the sim's state folder;
`fleet sim down` stops it by its recorded pid (checked against its command line, which names that
folder). A system-wide apt-cacher-ng (the Debian service on port 3142) is never touched.

Public source: the Apt-Cacher NG user manual (configuration keys CacheDir, LogDir, Port,
BindAddress, PidFile, SocketPath, ForeGround; ``apt-cacher-ng -c CONFDIR``), apt.conf(5)
(``Acquire::http::Proxy``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from fleet.errors import FleetError

ACNG = "/usr/sbin/apt-cacher-ng"
APT_HINT = "apt-get install apt-cacher-ng (make system-deps does it)"


def cache_dir() -> Path:
    """Where the proxy keeps the packages: ``$FLEET_CACHE/apt-cacher-ng`` (default ~/.cache/fleet/...)."""
    from fleet.sim.rootfs import cache_dir as fleet_cache

    return fleet_cache() / "apt-cacher-ng"


def _free_port(addresses: list[str], first: int = 3143) -> int:
    """The first port from ``first`` up that is free on every address. Below 32768: apt-cacher-ng
    3.7.4 (bookworm) fails to bind a port above 32767 ("Error resolving address for binding")."""
    for port in range(first, 32768):
        try:
            for a in addresses:
                with socket.socket() as s:
                    s.bind((a, port))
            return port
        except OSError:
            continue
    raise FleetError("no free TCP port below 32768 for apt-cacher-ng", "free one, or stop other proxies", 3)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_ours(pid: int, conf_dir: str | Path) -> bool:
    """True when ``pid`` is the apt-cacher-ng started with ``-c conf_dir``."""
    return pid > 0 and "apt-cacher-ng" in (cmd := _cmdline(pid)) and f"-c {conf_dir} " in f"{cmd} "


def start(work_dir: Path, addresses: list[str], timeout: float = 10.0) -> tuple[int, int]:
    """Start fleet's apt-cacher-ng listening on ``addresses``; returns (pid, port).

    ``work_dir`` gets ``conf/acng.conf``, ``log/`` and the PidFile. The port is a free one on the
    first address from 3143 up (3142 is the system instance's).

    Raises:
        FleetError: apt-cacher-ng is not installed, or did not answer within ``timeout`` seconds.
    """
    if not Path(ACNG).exists():
        raise FleetError("apt-cacher-ng is not installed: aarch64 boards get python3-venv through it", APT_HINT, 3)
    conf, log = work_dir / "conf", work_dir / "log"
    for d in (conf, log, cache_dir()):
        d.mkdir(parents=True, exist_ok=True)
    port = _free_port(addresses)
    pid_file = work_dir / "acng.pid"
    pid_file.unlink(missing_ok=True)
    (conf / "acng.conf").write_text(
        "\n".join([
            "# written by `fleet sim up`: the emulated boards' apt proxy (fleet.sim.aptproxy)",
            f"CacheDir: {cache_dir()}",
            f"LogDir: {log}",
            "SupportDir: /usr/lib/apt-cacher-ng",
            f"Port: {port}",
            f"BindAddress: {' '.join(addresses)}",
            f"PidFile: {pid_file}",
            f"SocketPath: {work_dir / 'acng.socket'}",
            "ForeGround: 0",
            "ExThreshold: 4",
            "",
        ])
    )
    cmd = [ACNG, "-c", str(conf)]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise FleetError(f"apt-cacher-ng did not start: {(proc.stderr or proc.stdout).strip()}",
                         f"see {log}/apt-cacher.err", exit_code=3)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if is_ours(pid, conf):
            try:
                with socket.create_connection((addresses[0], port), timeout=0.5):
                    return pid, port
            except OSError:
                pass
        time.sleep(0.05)
    raise FleetError(f"apt-cacher-ng with {conf} did not answer on {addresses[0]}:{port} in {timeout:.0f} s",
                     f"see {log}", exit_code=3)


def stop(pid: int, conf_dir: str | Path, timeout: float = 5.0) -> bool:
    """SIGTERM (then SIGKILL) the apt-cacher-ng ``pid`` when it is the one with ``conf_dir``; True when signalled."""
    if not is_ours(pid, conf_dir):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_ours(pid, conf_dir):
        time.sleep(0.05)
    if is_ours(pid, conf_dir):
        os.kill(pid, signal.SIGKILL)
    return True


def available() -> bool:
    """True when apt-cacher-ng is installed."""
    return Path(ACNG).exists() or bool(shutil.which("apt-cacher-ng"))
