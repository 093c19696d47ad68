"""One OpenSSH sshd per emulated board: keys, config, start, readiness, stop.

The sshd daemonizes and writes its PidFile; it is recognised later by its command line, which
names its own config file, so `sim down` never signals a process it did not start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fleet.errors import FleetError

SSHD = "/usr/sbin/sshd"


def ensure_keypair(path: Path, comment: str) -> Path:
    """Make an ed25519 key pair at ``path`` (and ``path.pub``) unless it exists; returns ``path``.

    Raises:
        FleetError: ssh-keygen is missing or failed.
    """
    if path.exists() and path.with_suffix(path.suffix + ".pub").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(path.suffix + ".pub")):
        p.unlink(missing_ok=True)
    try:
        proc = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise FleetError("ssh-keygen was not found", "apt-get install openssh-client", exit_code=3) from None
    if proc.returncode != 0:
        raise FleetError(f"ssh-keygen failed for {path}: {proc.stderr.strip()}", "check the folder is writable", 3)
    return path


def public_key(path: Path) -> str:
    """``KEYTYPE KEY`` of a key pair (its .pub file, without the comment)."""
    return " ".join(path.with_suffix(path.suffix + ".pub").read_text().split()[:2])


def write_config(path: Path, *, address: str, port: int, host_key: Path, pid_file: Path, authorized_keys: Path,
                 set_env: dict[str, str] | None = None) -> Path:
    """Write a minimal sshd_config for one board: key login only, its own host key and PidFile;
    ``set_env``: more variables every session gets (sshd_config ``SetEnv``, OpenSSH >= 8.7)."""
    path.write_text(
        "\n".join(
            [
                "# written by `fleet sim up`: one emulated board",
                f"Port {port}",
                f"ListenAddress {address}",
                f"HostKey {host_key}",
                f"PidFile {pid_file}",
                f"AuthorizedKeysFile {authorized_keys}",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "UseDNS no",
                "X11Forwarding no",
                "MaxSessions 32",
                "MaxStartups 64:30:128",
                "Subsystem sftp internal-sftp",
                # The board logs in as the controller's user, so bash would source the controller's
                # ~/.bashrc for every command sshd runs (bash sources it for sshd-started shells at
                # SHLVL 0; on this machine pyenv init costs ~140 ms of CPU per command). A real
                # board's default ~/.bashrc returns at once for non-interactive shells
                # (Raspberry Pi OS / Debian skel: `case $- in *i*) ;; *) return;; esac`);
                # SHLVL=1 makes bash treat the command's shell as nested and skip ~/.bashrc, so an
                # emulated board starts its agent as a real one does.
                "SetEnv SHLVL=1" + "".join(f" {k}={v}" for k, v in (set_env or {}).items()),
                "",
            ]
        )
    )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(config: Path, pid_file: Path, log_file: Path, netns: str = "", timeout: float = 10.0,
          chroot: str | Path = "", env: dict[str, str] | None = None) -> int:
    """Start sshd with ``config`` (inside ``netns`` when given) and return the daemon's pid.

    Args:
        timeout: seconds to wait for the PidFile.
        chroot: a board root (aarch64): run that root's own ``/usr/sbin/sshd`` under ``chroot``;
            ``config``, ``pid_file`` and ``log_file`` are host paths inside it.
        env: variables added to sshd's environment (e.g. ``QEMU_CPU`` for qemu-user).

    Raises:
        FleetError: sshd exited with an error or wrote no PidFile in time (its log is quoted).
    """
    pid_file.unlink(missing_ok=True)
    cmd = [SSHD, "-f", str(config), "-E", str(log_file)]
    if chroot:
        cmd = ["chroot", str(chroot), SSHD, "-f", _inner(config, chroot), "-E", _inner(log_file, chroot)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, **env} if env else None)
    if proc.returncode != 0:
        raise FleetError(
            f"sshd did not start ({' '.join(cmd)}): {proc.stderr.strip()} {_tail(log_file)}",
            "check that openssh-server is installed (apt-get install openssh-server)",
            exit_code=3,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(pid_file.read_text().strip())
            if is_ours(pid, config, chroot):
                return pid
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.02)
    raise FleetError(f"sshd with {config} wrote no PidFile in {timeout:.0f} s {_tail(log_file)}", "see the log", 3)


def _tail(log_file: Path, lines: int = 5) -> str:
    try:
        text = log_file.read_text().strip().splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return f"(log {log_file}: {' | '.join(text)})" if text else ""


def answering(address: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to address:port succeeds and the peer speaks SSH first."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def answering_in(netns: str, address: str, port: int, timeout: float = 1.0) -> bool:
    """:func:`answering`, asked from inside network namespace ``netns`` (a board behind the
    emulated bastion is reachable from there only)."""
    probe = ("import socket,sys\n"
             "try:\n"
             f"  s=socket.create_connection(({address!r},{int(port)}),timeout={timeout})\n"
             f"  s.settimeout({timeout}); sys.exit(0 if s.recv(4).startswith(b'SSH-') else 1)\n"
             "except OSError:\n  sys.exit(1)\n")
    try:
        proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe],
                              capture_output=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def wait_answering(address: str, port: int, deadline: float, via: str = "") -> bool:
    """Poll until sshd at address:port answers (asked from namespace ``via`` when given) or
    ``deadline`` (time.monotonic()) passes."""
    while True:
        if (answering_in(via, address, port, timeout=0.5) if via else answering(address, port, timeout=0.5)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _inner(path: str | Path, chroot: str | Path) -> str:
    """``path`` (a host path inside ``chroot``) as the chrooted process sees it."""
    return "/" + os.path.relpath(str(path), str(chroot))


def is_ours(pid: int, config: str | Path, chroot: str | Path = "") -> bool:
    """True when ``pid`` is alive and is the sshd started with ``config`` (zombies are not).

    For a board under ``chroot`` the process must also have that root (/proc/PID/root), and its
    command line names the config as the board sees it (under qemu-user the command line is the
    interpreter's: ``/usr/libexec/qemu-binfmt/aarch64-binfmt-P /usr/sbin/sshd /usr/sbin/sshd -f ...``).
    """
    if pid <= 0:
        return False
    cmd = _cmdline(pid)
    if chroot:
        try:
            if os.readlink(f"/proc/{pid}/root") != str(Path(chroot).resolve()):
                return False
        except OSError:
            return False
        config = _inner(config, chroot)
    return "sshd" in cmd and f"-f {config} " in f"{cmd} "


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def descendants(pid: int) -> list[int]:
    """Pids of every process below ``pid`` (sshd's per-connection processes)."""
    kids = _children()
    out, todo = [], list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def stop(pid: int, config: str | Path, timeout: float = 5.0, chroot: str | Path = "") -> bool:
    """Stop the sshd ``pid`` started with ``config`` and its connection processes.

    Does nothing (returns False) when the pid is gone or is now another program.
    Sends SIGTERM, then SIGKILL after ``timeout`` seconds. Returns True when it signalled.
    """
    if not is_ours(pid, config, chroot):
        return False
    victims = [pid, *[p for p in descendants(pid) if "sshd" in _cmdline(p)]]
    for p in victims:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in victims):
            return True
        time.sleep(0.05)
    for p in victims:
        if _alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return True


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
