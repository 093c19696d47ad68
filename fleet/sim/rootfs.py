"""The Debian arm64 root image aarch64 emulated boards start from, built once and cached.

The image is what a freshly flashed board has: Debian 12 bookworm ``minbase`` with ``python3``
and ``openssh-server`` and nothing else fleet needs — in particular **without** ``python3-venv``
(Debian splits ``ensurepip`` out of the standard library: ``import venv`` works on a bare board,
``python3 -m venv`` does not), so the deploy's base role has to bring it as it must on a real board.

Other suites (``image_spec``: bullseye with Python 3.9, trixie with Python 3.13) are cached
beside it, one folder each, as boards whose Python is not bookworm's.

It lives outside the repository, in ``$FLEET_CACHE/images/<name>/`` (default
``~/.cache/fleet/images``)::

    root/           the arm64 tree (the lower layer of every board's overlay; never written)
    packages.txt    ``dpkg-query -W`` of the image: package, version, architecture per line
    image.json      how it was built (suite, variant, include, mirror), Python version, sizes,
                    build seconds, sha256 of packages.txt and of the whole tree (``tree_sha256``)
    build.log       debootstrap's output

It is rebuilt only when asked (``fleet sim image build --rebuild``); ``fleet sim up --arch
aarch64`` builds it when it is missing. A build goes to a temporary folder beside it and is renamed
into place only when complete, so a failed or interrupted build leaves the old image (or none).

Public sources: debootstrap(8) (``--arch``, ``--variant=minbase``, ``--include``); Debian's
python3.11 packaging (ensurepip in ``python3.11-venv``); sshd(8) (host keys).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fleet.errors import FleetError
from fleet.sim import qemu

DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_HINT = "apt-get install debootstrap qemu-user-static binfmt-support (make system-deps does it)"


@dataclass(frozen=True)
class ImageSpec:
    """What to debootstrap. ``name`` is the cache folder; the other fields go into image.json."""

    name: str = "debian-bookworm-arm64"
    suite: str = "bookworm"
    arch: str = "arm64"
    variant: str = "minbase"
    include: tuple[str, ...] = ("python3", "openssh-server")
    # must NOT be in the image: what the deploy has to install on a bare board
    absent: tuple[str, ...] = ("python3-venv", "python3.11-venv")


DEFAULT_IMAGE = ImageSpec()

#: Debian suites an aarch64 board image can be built from, with the Python each ships (Debian's
#: python3 package: bullseye 3.9, bookworm 3.11, trixie 3.13). Vendor images follow their suite:
#: many RK3588 images are bullseye, Raspberry Pi OS is bookworm.
SUITES = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
DEFAULT_SUITE = "bookworm"


def image_spec(suite: str = DEFAULT_SUITE) -> ImageSpec:
    """The image of one Debian suite (cache folder ``debian-<suite>-arm64``).

    Raises:
        FleetError: a suite not in SUITES (names the ones that are).
    """
    if suite not in SUITES:
        raise FleetError(f"unknown Debian suite '{suite}' for an aarch64 board image",
                         f"use one of {', '.join(SUITES)} (e.g. --suite trixie)")
    if suite == DEFAULT_SUITE:
        return DEFAULT_IMAGE
    py = SUITES[suite]
    return ImageSpec(name=f"debian-{suite}-arm64", suite=suite, absent=("python3-venv", f"python{py}-venv"))


def cache_dir() -> Path:
    """``$FLEET_CACHE``, else ``$XDG_CACHE_HOME/fleet`` (default ``~/.cache/fleet``)."""
    env = os.environ.get("FLEET_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleet").resolve()


def image_dir(spec: ImageSpec = DEFAULT_IMAGE) -> Path:
    """The cache folder of one image (``cache_dir()/images/<name>``)."""
    return cache_dir() / "images" / spec.name


def load_image(spec: ImageSpec = DEFAULT_IMAGE) -> dict | None:
    """image.json of a complete cached image (with ``root`` set to its tree), or None when there is none."""
    d = image_dir(spec)
    try:
        meta = json.loads((d / "image.json").read_text())
    except (OSError, ValueError):
        return None
    if not (d / "root" / "usr" / "bin").is_dir():
        return None
    meta["root"] = str(d / "root")
    return meta


def tree_sha256(root: Path) -> tuple[str, int, int]:
    """sha256 over a tree's sorted entries (relative path, type, permission bits, and the file's
    sha256, the link's target or the device number); returns (hex digest, files, bytes)."""
    h = hashlib.sha256()
    files = size = 0
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entry = f"L {rel} {os.readlink(p)}"
            elif stat.S_ISREG(st.st_mode):
                fh = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        fh.update(chunk)
                entry = f"F {rel} {mode:o} {fh.hexdigest()}"
                files += 1
                size += st.st_size
            elif stat.S_ISDIR(st.st_mode):
                entry = f"D {rel} {mode:o}"
            else:
                entry = f"S {rel} {mode:o} {st.st_mode >> 12:o} {st.st_rdev}"
            h.update(entry.encode(errors="surrogateescape") + b"\n")
    return h.hexdigest(), files, size


def _in_use(root: Path) -> bool:
    """True when an overlay mount uses ``root`` as its lower layer (a board is up on it)."""
    text = Path("/proc/self/mountinfo").read_text()
    return f"lowerdir={root}" in text


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _chroot(root: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})


def build(
    spec: ImageSpec = DEFAULT_IMAGE,
    *,
    rebuild: bool = False,
    mirror: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Build (or find) the cached image; returns its image.json (plus ``root``).

    Args:
        spec: the image.
        rebuild: build again even when a complete image is cached (refused while a board uses it).
        mirror: Debian mirror URL (default ``$FLEET_DEBIAN_MIRROR``, else deb.debian.org).
        log: called with one line per step, for progress output.

    Takes about 4.5 min on a 2-core machine (debootstrap's second stage runs under qemu-user).
    Needs root (debootstrap, chroot) and the Debian packages debootstrap + qemu-user-static.

    Raises:
        FleetError: not root, tools missing, debootstrap failed (its log named), the image has a
            package it must not have, or --rebuild while boards run on the image.
    """
    d = image_dir(spec)
    with _lock(d.parent / f".{spec.name}.lock"):
        have = load_image(spec)
        if have and not rebuild:
            return have
        if os.geteuid() != 0:
            raise FleetError("building the aarch64 board image needs root (debootstrap, chroot)", "run as root")
        if have and _in_use(d / "root"):
            raise FleetError(f"image {d} is in use by running aarch64 boards", "`fleet sim down` first, then rebuild")
        if not shutil.which("debootstrap"):
            raise FleetError("debootstrap is not installed", APT_HINT, exit_code=3)
        qemu.ensure_binfmt()
        mirror = mirror or os.environ.get("FLEET_DEBIAN_MIRROR") or DEFAULT_MIRROR
        tmp = d.parent / f".build-{spec.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            t0 = time.monotonic()
            cmd = ["debootstrap", f"--arch={spec.arch}", f"--variant={spec.variant}",
                   f"--include={','.join(spec.include)}", spec.suite, str(tmp / "root"), mirror]
            log(f"debootstrap {spec.suite} {spec.arch} {spec.variant} + {', '.join(spec.include)} from {mirror} "
                "(about 4.5 min)")
            with open(tmp / "build.log", "w") as lf:
                proc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                tail = (tmp / "build.log").read_text().strip().splitlines()[-3:]
                keep = d.parent / f"failed-{spec.name}.log"
                shutil.copy(tmp / "build.log", keep)
                raise FleetError(
                    f"debootstrap failed (exit {proc.returncode}): {' | '.join(tail)}",
                    f"see {keep}; check the mirror ({mirror}) is reachable, or set FLEET_DEBIAN_MIRROR",
                    exit_code=3,
                )
            meta = _finish(tmp / "root", spec, mirror, log)
            meta["build_seconds"] = round(time.monotonic() - t0, 1)
            (tmp / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
            if d.exists():
                shutil.rmtree(d)
            os.replace(tmp, d)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"image {d}: {meta['size_bytes'] / 1e6:.0f} MB, Python {meta['python']}, "
            f"built in {meta['build_seconds']:.0f} s")
        return load_image(spec) or meta


def _finish(root: Path, spec: ImageSpec, mirror: str, log: Callable[[str], None]) -> dict:
    """Make the fresh tree a flashed board's: no shared host keys, no package caches; record what it holds."""
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()  # each board gets its own host key at `sim up`, as each flashed board makes its own
    for cache in (root / "var" / "cache" / "apt").glob("*.bin"):
        cache.unlink()
    shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (root / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    q = _chroot(root, "dpkg-query", "-W", "-f", "${db:Status-Status} ${Package} ${Version} ${Architecture}\n")
    if q.returncode != 0:
        raise FleetError(f"dpkg-query in the new image failed: {q.stderr.strip()}", "rebuild with --rebuild", 3)
    packages = "".join(sorted(line.split(" ", 1)[1] + "\n" for line in q.stdout.splitlines()
                              if line.startswith("installed ")))
    installed = {line.split()[0] for line in packages.splitlines()}
    venvs = {p for p in installed if re.fullmatch(r"python3(\.\d+)?-venv", p)}  # whatever the suite's Python
    wrong = sorted((set(spec.absent) | venvs) & installed)
    if wrong:
        raise FleetError(f"the image has {', '.join(wrong)}, which a bare board must not have",
                         "remove it from the image's --include", exit_code=3)
    (root.parent / "packages.txt").write_text(packages)
    py = _chroot(root, "python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])")
    if py.returncode != 0:
        raise FleetError(f"python3 does not run in the new image: {py.stderr.strip()}",
                         "check the qemu-aarch64 binfmt entry (cat /proc/sys/fs/binfmt_misc/qemu-aarch64)", 3)
    machine = _chroot(root, "uname", "-m").stdout.strip()
    log("hashing the tree")
    digest, files, size = tree_sha256(root)
    return {
        "name": spec.name,
        "suite": spec.suite,
        "arch": spec.arch,
        "machine": machine,
        "variant": spec.variant,
        "include": list(spec.include),
        "absent": list(spec.absent),
        "mirror": mirror,
        "python": py.stdout.strip(),
        "packages": len(installed),
        "packages_sha256": hashlib.sha256(packages.encode()).hexdigest(),
        "tree_sha256": digest,
        "files": files,
        "size_bytes": size,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def verify(spec: ImageSpec = DEFAULT_IMAGE) -> tuple[bool, str]:
    """Re-hash the cached tree and packages.txt against image.json; returns (ok, message).

    Raises:
        FleetError: there is no cached image.
    """
    meta = load_image(spec)
    if meta is None:
        raise FleetError(f"no cached image in {image_dir(spec)}", "build it: fleet sim image build")
    d = image_dir(spec)
    pk = hashlib.sha256((d / "packages.txt").read_bytes()).hexdigest()
    digest, files, size = tree_sha256(d / "root")
    bad = [n for n, a, b in (("packages.txt", pk, meta["packages_sha256"]), ("tree", digest, meta["tree_sha256"]))
           if a != b]
    if bad:
        return False, f"{' and '.join(bad)} changed since the build ({files} files, {size / 1e6:.0f} MB)"
    return True, f"tree sha256 {digest[:16]}… matches ({files} files, {size / 1e6:.0f} MB)"
