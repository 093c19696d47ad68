"""The rknn-toolkit2 toolchain venv: where it lives, how it is installed, what it holds.

rknn-toolkit2 2.5.0 (PyPI, cp311 manylinux x86_64 wheel) pins ``numpy<=1.26.4``,
``onnx<=1.18.0`` and ``torch<=2.4.0`` (its wheel METADATA), which clash with the project's
numpy 2 / onnx 1.23 / torch 2.13, so it gets a venv of its own that fleet drives as a
subprocess (``fleet.models.compile.rknn``).

Install recipe (measured here, see README "NPU builds"): the toolkit with ``--no-deps``, then its
requirements pinned explicitly, with two deliberate departures from its METADATA:

- ``torch==2.13.0`` (the CPU wheel) instead of ``torch<=2.4.0``: PyPI's torch 2.4.0 for Linux
  x86_64 pulls the nvidia-* CUDA wheels (several GB); ``import rknn.api`` needs torch, but the
  ONNX path (config/load_onnx/build/export_rknn/simulator) runs with 2.13 (checked by
  ``fleet toolchain install rknn``, which imports ``rknn.api`` and creates an ``RKNN()``);
- ``opencv-python-headless`` instead of ``opencv-python`` (same ``cv2`` module, no GUI libs);
- ``setuptools==69.5.1`` installed last with ``--no-deps``: the toolkit imports
  ``pkg_resources`` (gone from recent setuptools), while torch 2.13 declares setuptools>=77.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import FleetError

TOOLKIT = "rknn-toolkit2"
TOOLKIT_VERSION = "2.5.0"
# the toolkit's requirements, pinned to the versions tested with it here (see module docstring)
DEPENDENCIES = (
    "numpy==1.26.4",
    "onnx==1.18.0",
    "onnxruntime==1.22.1",
    "protobuf==4.25.4",
    "psutil==7.2.2",
    "ruamel.yaml==0.19.1",
    "scipy==1.17.1",
    "tqdm==4.70.1",
    "opencv-python-headless==4.11.0.86",
    "fast-histogram==0.14",
    "torch==2.13.0",
)
# installed last, alone and --no-deps: torch 2.13 declares setuptools>=77, which no longer ships
# pkg_resources; the toolkit imports pkg_resources and torch does not need setuptools to run
PKG_RESOURCES = "setuptools==69.5.1"
ENV_VAR = "FLEET_RKNN_VENV"
INSTALL_HINT = (f"fleet toolchain install rknn  (creates a venv with {TOOLKIT}=={TOOLKIT_VERSION} "
                f"from PyPI; or point ${ENV_VAR} at a venv that has it)")


def default_venv() -> Path:
    """$FLEET_RKNN_VENV, else ~/.cache/fleet/toolchains/rknn (kept across checkouts: the
    install downloads ~300 MB)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleet" / \
        "toolchains" / "rknn"


def venv_python(venv: Path | None = None) -> Path:
    """The venv's python (``bin/python``), whether or not it exists."""
    return Path(venv or default_venv()) / "bin" / "python"


@dataclass
class RknnStatus:
    """State of the rknn toolchain venv.

    Attributes:
        venv: the venv folder.
        python: its interpreter.
        installed: the interpreter exists and ``import rknn.api`` works in it.
        version: rknn-toolkit2's version (package metadata), or None.
        reason: why it is not usable (empty when installed).
    """

    venv: Path
    python: Path
    installed: bool
    version: str | None
    reason: str = ""


_PROBE = ("import json, importlib.metadata as m\n"
          "v = m.version('rknn-toolkit2')\n"
          "from rknn.api import RKNN\n"
          "print(json.dumps({'version': v}))\n")


def status(venv: Path | None = None, timeout: float = 120.0) -> RknnStatus:
    """Probe the venv: does its python import ``rknn.api``, and which toolkit version is it?

    Runs ``<venv>/bin/python -c <probe>`` (the toolkit's import takes a few seconds: it loads
    torch and onnxruntime).
    """
    venv = Path(venv or default_venv())
    py = venv_python(venv)
    if not py.exists():
        return RknnStatus(venv, py, False, None, f"no venv at {venv}")
    try:
        p = subprocess.run([str(py), "-c", _PROBE], capture_output=True, text=True,
                           timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return RknnStatus(venv, py, False, None, f"{py} did not run: {e}")
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return RknnStatus(venv, py, False, None, f"import rknn.api failed in {venv}: {tail}")
    try:
        version = json.loads(p.stdout.strip().splitlines()[-1])["version"]
    except (ValueError, IndexError, KeyError):
        return RknnStatus(venv, py, False, None, f"unexpected probe output {p.stdout[-200:]!r}")
    return RknnStatus(venv, py, True, version)


def install(venv: Path | None = None, python: str | None = None, echo=print,
            runner=subprocess.run) -> RknnStatus:
    """Create the venv and pip-install rknn-toolkit2 with its pinned requirements.

    Args:
        venv: target folder (default ``default_venv()``); created if missing, reused if present.
        python: interpreter that creates the venv (default: this one; the toolkit's wheel is
            cp311 here, and PyPI has wheels for cp38..cp312).
        echo: progress sink (one line per step).
        runner: ``subprocess.run``-compatible callable (tests pass a recorder).

    Returns:
        the status after install (``installed`` True).

    Raises:
        FleetError: venv creation or a pip step failed (pip's last lines included), or the
            toolkit does not import afterwards (exit 3).
    """
    venv = Path(venv or default_venv())
    py = venv_python(venv)
    steps = []
    if not py.exists():
        steps.append(("create venv", [python or sys.executable, "-m", "venv", str(venv)]))
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
    steps.append((f"{TOOLKIT}=={TOOLKIT_VERSION} (--no-deps)",
                  pip + ["--no-deps", f"{TOOLKIT}=={TOOLKIT_VERSION}"]))
    steps.append(("its requirements, pinned", pip + list(DEPENDENCIES)))
    steps.append((f"{PKG_RESOURCES} (pkg_resources, --no-deps)",
                  pip + ["--no-deps", PKG_RESOURCES]))
    for title, cmd in steps:
        t0 = time.perf_counter()
        p = runner(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            tail = "\n".join(((p.stderr or "") + (p.stdout or "")).strip().splitlines()[-8:])
            raise FleetError(f"installing the rknn toolchain into {venv} failed at '{title}' "
                             f"(exit {p.returncode}):\n{tail}",
                             f"check network access to PyPI, then rerun; or delete {venv}",
                             exit_code=3)
        echo(f"[green]✓[/green] {title} [dim]({time.perf_counter() - t0:.1f} s)[/dim]")
    st = status(venv)
    if not st.installed:
        raise FleetError(f"{TOOLKIT} was installed into {venv} but does not import: {st.reason}",
                         f"delete {venv} and rerun fleet toolchain install rknn", exit_code=3)
    return st
