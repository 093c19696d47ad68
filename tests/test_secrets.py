"""Security (docs/faults.md "Security"): no secret from the controller's environment, and no
SSH private key content, ends up in anything fleet writes or prints.

A token is put in the environment of `fleet deploy` and `fleet test` (FLEET_TEST_TOKEN), and the
sim's SSH private key is the one every board accepts. Then every output is searched for either:
the deploy's runs/<id>/ (ansible-runner's private data dir: env/, job events, stdout, command),
the test run's runs/<id>/, the results store file, JUnit XML, `fleet results --json`,
`fleet report` HTML, and what the commands printed. The same run also goes into a PostgreSQL store
whose URL carries a password (tests/pg_server.py): the password is a needle too, searched in the
derived outputs, every row of that store, and the errors of a wrong password or an unreachable server.
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


def _dump_tables(pg_server, db: str) -> str:
    """Every row of every table of the PostgreSQL store, as text."""
    import psycopg
    from pg_server import _psycopg_url

    with psycopg.connect(_psycopg_url(pg_server.url_for(db))) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")]
        return "\n".join(str(r[0]) for t in tables for r in conn.execute(f'SELECT t::text FROM "{t}" t'))


def test_no_secret_in_any_output(tmp_path_factory, monkeypatch, pg_server):
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
        # a results store on PostgreSQL whose URL carries a password (the lab-server case)
        pg_password = "pg-" + secrets.token_hex(12)
        role, pg_db = pg_server.password_role(pg_password)
        pg_url = f"postgresql+psycopg://{role}:{pg_password}@127.0.0.1:{pg_server.port}/{pg_db}"
        needles["database password"] = pg_password.encode()
        result = deploy(inv, artifacts_dir=arts, runs_dir=base / "runs", models=("whisper-tiny.en",))
        assert result.exit_code == 0, result.to_dict()
        db, junit, html = base / "results.db", base / "junit.xml", base / "report.html"
        fleet("test", str(suite), "--inventory", str(inv), "--db", str(db), "--junit", str(junit), ok=(1,))
        results_json = fleet("results", "--json", "--db", str(db))
        assert "test_fails_on_purpose" in results_json
        fleet("report", "--db", str(db), "--out", str(html))
        assert html.exists() and junit.exists()
        # the same run into the PostgreSQL store, then everything derived from it
        pg_junit, pg_html = base / "pg-junit.xml", base / "pg-report.html"
        fleet("test", str(suite), "--inventory", str(inv), "--db", pg_url, "--junit", str(pg_junit), ok=(1,))
        pg_json = fleet("results", "--json", "--db", pg_url)
        assert "test_fails_on_purpose" in pg_json
        results_json += pg_json + fleet("results", "--prometheus", "--db", pg_url)
        results_json += fleet("results", "--metrics-json", "-", "--db", pg_url)
        fleet("report", "--db", pg_url, "--out", str(pg_html))
        fleet("leases", "--json", "--db", pg_url)
        fleet("results", "--db", pg_url.replace(pg_password, "not-" + pg_password[3:]), ok=(3,))  # wrong password
        fleet("results", "--db", pg_url.replace("127.0.0.1:", "127.0.0.1:1"), ok=(3,))  # nothing listens there
        stored = _dump_tables(pg_server, pg_db)
        assert "test_fails_on_purpose" in stored
        printed.append(stored)
        # the deploy's ansible-runner folder: the token was in its environment
        pdd = Path(result.run_dir) / "ansible"
        assert (pdd / "artifacts" / "site" / "stdout").exists()
        assert not (pdd / "env" / "envvars").exists() or TOKEN.encode() not in (pdd / "env" / "envvars").read_bytes()
        outputs = [base / "runs", db, junit, html, pg_junit, pg_html] + [p for p in base.glob("results.db*")]
        printed_file = base / "printed.txt"
        printed_file.write_text("\n".join(printed) + results_json)
        leaks = _scan(outputs + [printed_file], needles)
        assert leaks == [], leaks
    finally:
        lifecycle.down(state_dir)
