"""aarch64 emulated boards under qemu-user: binfmt_misc, the board's root, its mounts, its processes.

An aarch64 board is a Debian arm64 root (``fleet.sim.rootfs``) that the kernel runs through
qemu-user: binfmt_misc hands every aarch64 ELF to ``qemu-aarch64-static`` (Debian's
``qemu-user-static`` registers it with flags ``PF``: F opens the interpreter at registration, so
it works inside a chroot that has no qemu of its own). Each board gets

- its own root: an overlay of the cached image (lower, never written) and the board's own upper
  folder (what deploy writes lives there), or a plain copy where overlayfs is not available;
- bind mounts of the host's /proc, /sys, /dev and /dev/pts into that root;
- a ``/proc/cpuinfo`` describing Cortex-A76 cores (implementer 0x41, part 0xd0b), bind-mounted
  over the root's /proc/cpuinfo. qemu-user 7.2 passes the host's x86 /proc/cpuinfo through, and
  ONNX Runtime's CPU detection (pytorch/cpuinfo) then crashes with SIGSEGV on any model;
- its sshd: the image's own arm64 ``/usr/sbin/sshd``, started with ``chroot`` inside the board's
  network namespace;
- the CPU qemu-user emulates set to a Cortex-A76 (``QEMU_CPU=cortex-a76`` in sshd's environment
  and, through sshd_config ``SetEnv``, in every session's, so every process on the board runs as
  one). qemu-user's default CPU model, ``max``, advertises in the auxiliary vector (AT_HWCAP /
  AT_HWCAP2) every extension qemu knows (SVE, SVE2, I8MM, BF16 ...), which no Pi 5 or RK3588 core
  has; ONNX Runtime 1.31 then picks its int8 GEMM kernels for those, and under qemu 7.2 they give
  wrong numbers: Whisper's INT8 encoder + decoder transcribed LJ002-0020 as ".®®®®..." (fp32 was
  right, "in 1813."). As a Cortex-A76 (HWCAP 0x119ffb, HWCAP2 0: dotprod, no SVE/I8MM) the same
  run gives "in 1813." in 14 s instead of 56 s.

Everything here acts on paths and pids the caller recorded: mounts are unmounted only when
/proc/self/mountinfo lists exactly that mount point, processes are signalled only when their
/proc/PID/root is the board's root. The binfmt_misc registration is the system's (Debian's
``update-binfmts``), shared with anything else on the machine, and is left in place.

Public sources: Linux Documentation/admin-guide/binfmt-misc.rst (flags P, F); Debian's
qemu-user-static and binfmt-support packages (update-binfmts(8)); Arm's Cortex-A76 TRM (MIDR:
implementer 0x41, part number 0xD0B); Linux arch/arm64/kernel/cpuinfo.c (the /proc/cpuinfo format).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from fleet.errors import FleetError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = "qemu-aarch64"
APT_HINT = "apt-get install qemu-user-static binfmt-support (make system-deps does it)"

#: the CPU model qemu-user emulates on every board (QEMU_CPU; `qemu-aarch64-static -cpu help`):
#: the Pi 5's and the RK3588's big core, so the auxiliary vector matches the cpuinfo below
QEMU_CPU = "cortex-a76"
#: the environment every process on an aarch64 board gets (sshd and, via SetEnv, its sessions)
BOARD_ENV = {"QEMU_CPU": QEMU_CPU}

# Features a Raspberry Pi 5's Cortex-A76 (r4p1) lists; qemu-user reports the emulated CPU model's
# (QEMU_CPU) in the auxiliary vector, which is what the runtime reads.
A76_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"


def _run(cmd: list[str], what: str, fix: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise FleetError(f"{what}: {cmd[0]} was not found", fix, exit_code=3) from None
    if check and proc.returncode != 0:
        raise FleetError(f"{what}: `{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()}", fix, exit_code=3)
    return proc


def binfmt_entry() -> dict[str, str]:
    """The kernel's qemu-aarch64 binfmt_misc entry as {'enabled', 'interpreter', 'flags'}, {} when none."""
    path = BINFMT_DIR / BINFMT_ENTRY
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {"enabled": lines[0].strip() if lines else ""}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key in ("interpreter", "flags:"):
            out[key.rstrip(":")] = value.strip()
    return out


def ensure_binfmt() -> dict[str, str]:
    """Make the kernel run aarch64 ELF files through qemu-user; returns the entry (see binfmt_entry).

    Mounts binfmt_misc on /proc/sys/fs/binfmt_misc when it is not mounted, then runs
    ``update-binfmts --enable qemu-aarch64`` when the entry is missing or disabled. Needs root.

    Raises:
        FleetError: not root, qemu-user-static/binfmt-support missing, or the entry lacks the F
            flag (its interpreter would have to exist inside every board's root).
    """
    entry = binfmt_entry()
    if entry.get("enabled") != "enabled":
        if os.geteuid() != 0:
            raise FleetError("aarch64 boards need binfmt_misc registration, which needs root", "run as root")
        if not (BINFMT_DIR / "status").exists():
            _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mounting binfmt_misc",
                 "check that the kernel has binfmt_misc (CONFIG_BINFMT_MISC)")
        if not Path("/usr/share/binfmts/qemu-aarch64").exists():
            raise FleetError("qemu-user-static is not installed (no /usr/share/binfmts/qemu-aarch64)", APT_HINT, 3)
        _run(["update-binfmts", "--enable", BINFMT_ENTRY], "registering qemu-aarch64 with binfmt_misc", APT_HINT)
        entry = binfmt_entry()
    if entry.get("enabled") != "enabled":
        raise FleetError(f"binfmt_misc entry {BINFMT_ENTRY} is not enabled after update-binfmts", APT_HINT, 3)
    if "F" not in entry.get("flags", ""):
        raise FleetError(
            f"binfmt_misc entry {BINFMT_ENTRY} has flags '{entry.get('flags', '')}', without F (fix binary)",
            "use Debian's qemu-user-static registration: update-binfmts --disable qemu-aarch64 && "
            "update-binfmts --enable qemu-aarch64",
            exit_code=3,
        )
    return entry


def cpuinfo_text(cpus: int | None = None) -> str:
    """A /proc/cpuinfo of ``cpus`` Cortex-A76 cores (default: this machine's CPU count), as arm64
    Linux prints it (arch/arm64/kernel/cpuinfo.c): implementer 0x41 (Arm), part 0xd0b (Cortex-A76),
    variant 0x4 revision 1 (r4p1, the Pi 5's BCM2712)."""
    n = cpus or os.cpu_count() or 1
    block = (
        "processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: " + A76_FEATURES + "\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n"
    )
    return "".join(block.format(i=i) for i in range(n))


def mounted_points() -> set[str]:
    """Mount points listed in /proc/self/mountinfo (field 5, octal escapes decoded)."""
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        if len(parts) > 4:
            out.add(parts[4].encode().decode("unicode_escape"))
    return out


def _mount(args: list[str], target: Path) -> None:
    _run(["mount", *args, str(target)], f"mounting {target}", "run as root; see `dmesg | tail` for the kernel's reason")


def make_root(image_root: Path, board_dir: Path, cpus: int | None = None) -> tuple[Path, list[str]]:
    """Lay out one board's root and its mounts; returns (root, mount points in mount order).

    The root is ``board_dir/rootfs``: an overlay of ``image_root`` (read only) with
    ``board_dir/upper`` (kept between `sim up`s, so a second deploy finds what the first left),
    or a copy of the image when overlayfs refuses. Then /proc, /sys, /dev, /dev/pts are bound in
    and ``board_dir/cpuinfo`` over ``rootfs/proc/cpuinfo``.

    The caller must record every returned mount point at once (``unmount_all`` undoes them); on
    an error here the mounts already made are undone before the FleetError propagates.
    """
    root = board_dir / "rootfs"
    upper, work = board_dir / "upper", board_dir / "work"
    for d in (root, upper, work):
        d.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    try:
        if str(root) not in mounted_points():
            opts = f"lowerdir={image_root},upperdir={upper},workdir={work}"
            proc = _run(["mount", "-t", "overlay", "overlay", "-o", opts, str(root)], "overlay", "", check=False)
            if proc.returncode == 0:
                made.append(str(root))
            elif not (root / "usr").exists():  # no overlayfs here: a plain copy, made once
                shutil.rmtree(root)
                _run(["cp", "-a", "--reflink=auto", str(image_root), str(root)], f"copying {image_root}",
                     "check free space in the sim state folder")
        cpuinfo = board_dir / "cpuinfo"
        cpuinfo.write_text(cpuinfo_text(cpus))
        for _src, rel, args in (
            ("proc", "proc", ["-t", "proc", "proc"]),
            ("/sys", "sys", ["--bind", "/sys"]),
            ("/dev", "dev", ["--bind", "/dev"]),
            ("/dev/pts", "dev/pts", ["--bind", "/dev/pts"]),
            (str(cpuinfo), "proc/cpuinfo", ["--bind", str(cpuinfo)]),
        ):
            target = root / rel
            if rel != "proc/cpuinfo":
                target.mkdir(parents=True, exist_ok=True)
            _mount(args, target)
            made.append(str(target))
            if rel in ("sys", "dev", "dev/pts"):
                # a bind of a shared mount joins its peer group: mounts made under it (dev/pts)
                # would propagate back to the host's /dev. A slave receives, never sends.
                _run(["mount", "--make-slave", str(target)], f"making {target} a slave mount", "run as root")
        (root / "run" / "sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation dir
    except BaseException:
        unmount_all(made)
        raise
    return root, made


def unmount_all(points: list[str]) -> list[str]:
    """Unmount the given mount points, last first, each only while mountinfo lists it; returns
    those unmounted. A busy mount is detached lazily (``umount -l``) so nothing stays visible."""
    done = []
    for p in reversed(points):
        while p in mounted_points():  # a point mounted twice (a crashed `up` re-run) needs two
            if subprocess.run(["umount", p], capture_output=True).returncode != 0:
                if subprocess.run(["umount", "-l", p], capture_output=True).returncode != 0:
                    break
            done.append(p)
    return done


def processes_in(root: Path) -> list[int]:
    """Pids whose root directory (/proc/PID/root) is ``root``: every process of one board."""
    want = str(Path(root).resolve())
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "root") == want:
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def kill_processes_in(root: Path, timeout: float = 5.0) -> list[int]:
    """SIGTERM, then after ``timeout`` s SIGKILL, every process whose root is ``root``; returns
    the pids signalled. A board's agent, shells and sshd all have that root; nothing else does."""
    victims = processes_in(root)
    for p in victims:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes_in(root):
        time.sleep(0.05)
    for p in processes_in(root):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes_in(root):
        time.sleep(0.05)
    return victims


def in_root(root: Path, path: str | Path) -> Path:
    """Host path of ``path`` as the board sees it (``/etc/ssh/x`` -> ``ROOT/etc/ssh/x``)."""
    return Path(root) / str(path).lstrip("/")
