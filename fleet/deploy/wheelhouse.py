"""The wheelhouse a board installs the agent from (boards have no internet).

``pip wheel --no-deps <project>`` gives the fleet wheel (it carries device_agent and
`fleet-agent`); ``pip download --only-binary=:all:`` adds the agent's dependencies
([project].dependencies of pyproject.toml) for the board's platform. The result is cached in
``.fleet/wheelhouse/<platform>/`` and rebuilt only when pyproject.toml or the agent's sources
(device_agent/) change (their sha256 is the cache key).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

from fleet.errors import FleetError

PYTHON_VERSION = "3.11"  # the boards' Python (Debian 12 / Raspberry Pi OS bookworm)
BUILD_DIRS = ("fleet", "device_agent")  # what the wheel is built from ([tool.setuptools] packages)
KEY_DIRS = ("device_agent",)  # what boards run: only a change here (or in SOURCE_FILES) rebuilds
SOURCE_FILES = ("pyproject.toml", "README.md", "setup.cfg", "MANIFEST.in")


@dataclass(frozen=True)
class Wheelhouse:
    """A built wheelhouse.

    Attributes:
        platform: the pip platform tag it was built for, "" for the controller's own platform.
        path: folder holding the wheels.
        fleet_wheel: file name of the fleet wheel inside ``path``.
        key: sha256 of the sources, platform and Python version it was built from.
        rebuilt: True when this call (re)built it, False when the cache was used.
        seconds: time spent building (0 when cached).
    """

    platform: str
    path: Path
    fleet_wheel: str
    key: str
    rebuilt: bool
    seconds: float = 0.0


def native_platform_name() -> str:
    """Cache folder name for the controller's own platform, e.g. ``native-linux_x86_64``."""
    return "native-" + re.sub(r"[^A-Za-z0-9]+", "_", sysconfig.get_platform())


def expand_platform(tag: str) -> list[str]:
    """Platform tags pip should accept for a board declared as ``tag``.

    pip's ``--platform manylinux_2_28_aarch64`` matches only wheels carrying that exact tag, while
    a glibc 2.28 board also runs manylinux_2_17..2_27 (manylinux2014) wheels. This lists them all.
    """
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag)
    if not m:
        return [tag]
    glibc, arch = int(m.group(1)), m.group(2)
    tags = [f"manylinux_2_{v}_{arch}" for v in range(glibc, 16, -1)]
    if glibc >= 17:
        tags.append(f"manylinux2014_{arch}")
    return tags


def agent_dependencies(project: Path) -> list[str]:
    """The agent's requirements: ``[project].dependencies`` of pyproject.toml.

    Raises:
        FleetError: pyproject.toml missing or unreadable.
    """
    try:
        data = tomllib.loads((project / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FleetError(f"cannot read {project / 'pyproject.toml'}: {e}", "run fleet from the project checkout") from None
    return list(data.get("project", {}).get("dependencies", []))


def _source_files(project: Path, dirs: tuple[str, ...] = BUILD_DIRS) -> list[Path]:
    files = [project / f for f in SOURCE_FILES if (project / f).is_file()]
    for d in dirs:
        for p in sorted((project / d).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"):
                files.append(p)
    return files


def source_key(project: Path, platform: str, python_version: str = PYTHON_VERSION) -> str:
    """sha256 over device_agent's sources, pyproject.toml, target platform and Python version.

    The wheel also carries the controller package (fleet/), but boards only run device_agent
    (which never imports fleet), so controller edits do not make every board reinstall.
    """
    h = hashlib.sha256(f"{platform}\0{python_version}\0".encode())
    for p in _source_files(project, KEY_DIRS):
        h.update(str(p.relative_to(project)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


class NoWheel(FleetError):
    """pip found no wheel of ``requirement`` for the board's platform and Python (exit code 3).

    Attributes:
        requirement: the requirement pip named (``onnxruntime==1.31.1``).
        platform: the pip platform tag asked for ("" = the controller's own).
        python_version: the Python MAJOR.MINOR asked for ("" when not known).
    """

    def __init__(self, message: str, fix: str, requirement: str, platform: str = "", python_version: str = ""):
        super().__init__(message, fix, exit_code=3)
        self.requirement, self.platform, self.python_version = requirement, platform, python_version


def _pip(args: list[str], what: str, platform: str = "", python_version: str = "") -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        missing = re.search(r"No matching distribution found for (\S+)", proc.stderr or "")
        if missing:
            # e.g. pyworld-prebuilt (WORLD for vc.pitch_shift) ships cp311 manylinux_2_28 wheels for
            # x86_64 and aarch64 only; boards can never build an sdist (no compiler, no internet)
            raise NoWheel(
                f"building the wheelhouse failed while {what}: no wheel of {missing.group(1)} for the "
                f"board's platform/Python ({tail})",
                "boards need a platform with wheels for every agent dependency: glibc >= 2.28 "
                "(fleet_wheel_platform manylinux_2_28_x86_64 or manylinux_2_28_aarch64) and Python "
                f"{PYTHON_VERSION}; check the board's fleet_wheel_platform", missing.group(1), platform, python_version)
        raise FleetError(
            f"building the wheelhouse failed while {what}: {tail}",
            "check that PyPI (or your pip index/cache) is reachable from the controller and the platform tag is right",
            exit_code=3,
        )


def _build(project: Path, platform: str, dest: Path, python_version: str) -> None:
    stage = dest.parent / f".src-{dest.name}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        for p in _source_files(project):  # build from exactly the hashed files, leave the tree clean
            q = stage / p.relative_to(project)
            q.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, q)
        wheel_args = ["wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(dest)]
        if importlib.util.find_spec("setuptools") is not None:
            wheel_args.append("--no-build-isolation")  # no download of setuptools for each build
        _pip([*wheel_args, str(stage)], "building the fleet wheel (pip wheel)")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    deps = agent_dependencies(project)
    if deps:
        args = ["download", "--only-binary=:all:", "--disable-pip-version-check", "-q", "--dest", str(dest)]
        args += ["--python-version", python_version, "--implementation", "cp"]
        if platform:
            for tag in expand_platform(platform):
                args += ["--platform", tag]
        _pip([*args, *deps], f"downloading the agent's dependencies for {platform or 'this machine'} (pip download)",
             platform, python_version)


def ensure_wheelhouse(
    project: Path,
    cache: Path,
    platform: str = "",
    python_version: str = PYTHON_VERSION,
) -> Wheelhouse:
    """Return the wheelhouse for ``platform``, building it only when the sources changed.

    Args:
        project: the fleet checkout (holds pyproject.toml).
        cache: the wheelhouse cache folder (``.fleet/wheelhouse``).
        platform: pip platform tag (``manylinux_2_28_aarch64``), "" for the controller's own.
        python_version: the boards' Python major.minor.

    Raises:
        NoWheel: a dependency has no wheel for this platform and Python (fleet.deploy.preflight
            turns it into a refusal of the boards that need this wheelhouse).
        FleetError: pip failed otherwise (exit code 3, with pip's last lines).
    """
    name = platform or native_platform_name()
    if python_version != PYTHON_VERSION:  # another Python for the same platform: its own folder
        name += f"-py{python_version}"
    cache.mkdir(parents=True, exist_ok=True)
    path, stamp = cache / name, cache / f"{name}.json"
    key = source_key(project, platform, python_version)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel deploys, tests)
        try:
            info = json.loads(stamp.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("key") == key and path.is_dir() and (path / info.get("fleet_wheel", "-")).is_file():
            return Wheelhouse(platform, path, info["fleet_wheel"], key, rebuilt=False)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache))
        try:
            _build(project, platform, tmp, python_version)
            wheels = sorted(tmp.glob("fleet-*.whl"))
            if len(wheels) != 1:
                raise FleetError(f"pip wheel left {len(wheels)} fleet wheels in {tmp}", "report this as a bug", 3)
            old = cache / f".old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.monotonic() - t0
        stamp.write_text(json.dumps({"key": key, "fleet_wheel": wheels[0].name, "platform": platform,
                                     "python_version": python_version, "built": time.time()}, indent=2))
        return Wheelhouse(platform, path, wheels[0].name, key, rebuilt=True, seconds=seconds)
