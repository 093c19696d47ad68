"""WORLD on the boards: pyworld comes as prebuilt wheels (PyPI `pyworld-prebuilt`, module `pyworld`)
because PyPI's `pyworld` is an sdist that the boards' wheelhouse (`pip download --only-binary`)
cannot take. Checks the pinned wheel exists for the aarch64 boards (real pip against the index the
wheelhouse uses) and that a platform without a wheel gets a clear error.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from fleet.deploy import wheelhouse
from fleet.errors import FleetError

ROOT = Path(__file__).resolve().parents[1]


def _pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if d.startswith("pyworld-prebuilt==")]
    assert len(pins) == 1, deps
    assert not any(d.split("==")[0].split(">")[0] in ("pyworld", "torch", "torchcrepe", "librosa") for d in deps)
    return pins[0]


@pytest.mark.slow
def test_pinned_pyworld_wheel_exists_for_aarch64_boards(tmp_path):
    args = ["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "--dest",
            str(tmp_path), "--python-version", wheelhouse.PYTHON_VERSION, "--implementation", "cp"]
    for tag in wheelhouse.expand_platform("manylinux_2_28_aarch64"):
        args += ["--platform", tag]
    proc = subprocess.run([sys.executable, "-m", "pip", *args, _pin()], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert any(n.startswith("pyworld/pyworld.cpython-311-aarch64-linux-gnu") for n in names), names


def test_a_platform_without_the_wheel_gets_a_clear_error(monkeypatch):
    def fake_run(cmd, capture_output, text):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the "
                                           "requirement pyworld-prebuilt==0.3.6.post1 (from versions: none)\n"
                                           "ERROR: No matching distribution found for pyworld-prebuilt==0.3.6.post1\n")

    monkeypatch.setattr(wheelhouse.subprocess, "run", fake_run)
    with pytest.raises(FleetError) as e:
        wheelhouse._pip(["download", "pyworld-prebuilt==0.3.6.post1"], "downloading the agent's dependencies")
    assert "no wheel of pyworld-prebuilt==0.3.6.post1" in e.value.message
    assert "manylinux_2_28_aarch64" in e.value.fix and e.value.exit_code == 3
