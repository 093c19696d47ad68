"""Security (docs/faults.md "Security"): no secret from the controller's environment, and no
SSH private key content, ends up in anything fleet writes or prints.

A token is put in the environment of `fleet deploy` and `fleet test` (FLEET_TEST_TOKEN), and the
sim's SSH private key is the one every board accepts. Then every output is searched for either:
the deploy's runs/<id>/ (ansible-runner's private data dir: env/, job events, stdout, command),
the test run's runs/<id>/, the results store file, JUnit XML, `fleet results --json`,
`fleet report` HTML, and what the commands printed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.deploy.run import deploy
from fleet.paths import artifacts_dir
from fleet.sim import lifecycle
from fleet.sim.state import load_state

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "sk-fleettest-" + secrets.token_hex(16)

pytestmark = pytest.mark.slow

SUITE_YML = """name: secrets
pipeline: asr.whisper_hybrid
model: whisper-tiny.en
dataset: speech
request_timeout_s: 10
"""

SUITE_TESTS = '''
import os


def test_info(agent, record):
    info = agent.info()
    assert info["board"]
    record.metric("one", 1, "count", "higher")


def test_fails_on_purpose_with_env_in_scope(agent):
    # a failing test's report (traceback, locals) must not carry the environment's secrets either
    env = dict(os.environ)
    assert len(env) < 0, "this test fails on purpose"
'''


def _needles(key_file: Path) -> dict[str, bytes]:
    body = [ln for ln in key_file.read_text().splitlines() if ln and not ln.startswith("-----")]
    out = {"token": TOKEN.encode()}
    # any full line of the key's base64 body (the first line is mostly a fixed header: skip it)
    for i, ln in enumerate(body[1:], 1):
        if len(ln) >= 40:
            out[f"key line {i}"] = ln.encode()
    assert len(out) > 1, "no key body lines found"
    return out


def _scan(paths: list[Path], needles: dict[str, bytes]) -> list[str]:
    leaks = []
    for top in paths:
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for f in files:
            data = f.read_bytes()
            leaks += [f"{what} in {f}" for what, n in needles.items() if n in data]
    return leaks


def test_no_secret_in_any_output(tmp_path_factory, monkeypatch):
    arts = artifacts_dir()
    assert (arts / "manifest.json").exists(), f"no artifacts in {arts}: run `fleet models build whisper-tiny.en`"
    base = tmp_path_factory.mktemp("secrets")
    state_dir, inv = base / "sim", base / "inventory" / "sim.yml"
    suite = base / "suite"
    suite.mkdir()
    (suite / "suite.yml").write_text(SUITE_YML)
    (suite / "test_secrets_suite.py").write_text(SUITE_TESTS)
    monkeypatch.setenv("FLEET_TEST_TOKEN", TOKEN)
    env = {**os.environ, "FLEET_HOME": str(base), "FLEET_TEST_TOKEN": TOKEN}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    printed = []

    def fleet(*args: str, ok=(0,)) -> str:
        p = subprocess.run([sys.executable, "-m", "fleet.cli", *args], check=False, env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=180)
        printed.append(p.stdout + p.stderr)
        assert p.returncode in ok, (args, p.returncode, p.stdout, p.stderr)
        return p.stdout

    try:
        lifecycle.up(state_dir, inv, mix="pi5-hailo8l:1,rk3588:1", use_netns=os.geteuid() == 0)
        key_file = Path(load_state(state_dir).key_file)
        needles = _needles(key_file)
        result = deploy(inv, artifacts_dir=arts, runs_dir=base / "runs", models=("whisper-tiny.en",))
        assert result.exit_code == 0, result.to_dict()
        db, junit, html = base / "results.db", base / "junit.xml", base / "report.html"
        fleet("test", str(suite), "--inventory", str(inv), "--db", str(db), "--junit", str(junit), ok=(1,))
        results_json = fleet("results", "--json", "--db", str(db))
        assert "test_fails_on_purpose" in results_json
        fleet("report", "--db", str(db), "--out", str(html))
        assert html.exists() and junit.exists()
        # the deploy's ansible-runner folder: the token was in its environment
        pdd = Path(result.run_dir) / "ansible"
        assert (pdd / "artifacts" / "site" / "stdout").exists()
        assert not (pdd / "env" / "envvars").exists() or TOKEN.encode() not in (pdd / "env" / "envvars").read_bytes()
        outputs = [base / "runs", db, junit, html] + [p for p in base.glob("results.db*")]
        printed_file = base / "printed.txt"
        printed_file.write_text("\n".join(printed) + results_json)
        leaks = _scan(outputs + [printed_file], needles)
        assert leaks == [], leaks
    finally:
        lifecycle.down(state_dir)
