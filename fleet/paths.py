"""Default locations, relative to the project (the folder holding pyproject.toml) or the CWD."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The fleet checkout: $FLEET_HOME, else the nearest parent of CWD with pyproject.toml, else CWD."""
    env = os.environ.get("FLEET_HOME")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").exists() and (p / "fleet").is_dir():
            return p
    return here


def state_dir() -> Path:
    """Controller state (.fleet/): emulated boards, wheelhouse, SSH keys."""
    return project_root() / ".fleet"


def logs_dir() -> Path:
    """Where ``fleet`` writes the traceback of an internal error: ``.fleet/logs/`` of the project
    ($FLEET_HOME or the checkout around the CWD), else ``$XDG_CACHE_HOME/fleet/logs`` (default
    ``~/.cache/fleet/logs``), so a command run outside a checkout leaves no ``.fleet/`` behind."""
    root = project_root()
    if os.environ.get("FLEET_HOME") or (root / "pyproject.toml").exists():
        return state_dir() / "logs"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fleet" / "logs"


def artifacts_dir() -> Path:
    """Built model artifacts and manifest.json (artifacts/)."""
    return Path(os.environ.get("FLEET_ARTIFACTS", project_root() / "artifacts"))


def runs_dir() -> Path:
    """Per-run artifacts: ansible-runner dirs, JUnit XML, logs (runs/<id>/)."""
    return project_root() / "runs"


def default_db() -> Path:
    """The SQLite results store."""
    return Path(os.environ.get("FLEET_DB", project_root() / "results" / "fleet.db"))


def data_root() -> Path:
    """The data root: the folder the data sets are read from (``docs/contracts.md`` §5).

    ``$FLEET_DATA`` when set; else ``../shared/data`` beside the checkout this package runs from
    when that folder exists (a lab or CI machine that keeps one copy of the data next to its
    clones; found from the code's location, so ``$FLEET_HOME`` and the CWD do not move it); else
    ``$XDG_CACHE_HOME/fleet/data`` (default ``~/.cache/fleet/data``), where ``fleet datasets fetch``
    puts what it downloads. The folder need not exist yet.
    """
    env = os.environ.get("FLEET_DATA")
    if env:
        return Path(env).expanduser().resolve()
    beside = shared_data_beside_checkout()
    if beside.is_dir():
        return beside.resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(cache) / "fleet" / "data").resolve()


def shared_data_beside_checkout() -> Path:
    """``../shared/data`` beside the checkout this package runs from (may not exist)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"
