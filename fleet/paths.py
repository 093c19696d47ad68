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


def artifacts_dir() -> Path:
    """Built model artifacts and manifest.json (artifacts/)."""
    return Path(os.environ.get("FLEET_ARTIFACTS", project_root() / "artifacts"))


def runs_dir() -> Path:
    """Per-run artifacts: ansible-runner dirs, JUnit XML, logs (runs/<id>/)."""
    return project_root() / "runs"


def default_db() -> Path:
    """The SQLite results store."""
    return Path(os.environ.get("FLEET_DB", project_root() / "results" / "fleet.db"))
