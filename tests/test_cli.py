"""The `fleet` command's errors for bad input: a message naming the thing and the fix, exit 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("sim", "deploy", "models", "test", "results"):
        assert cmd in out


def test_missing_suite_folder(capsys, tmp_path):
    assert main(["test", str(tmp_path / "nope"), "--inventory", str(tmp_path / "inv.yml")]) == 2
    err = capsys.readouterr().err
    assert "suite.yml not found" in err and "fix:" in err


def test_missing_inventory(capsys, tmp_path):
    rc = main(["test", str(ROOT / "suites" / "whisper_hybrid"), "--inventory", str(tmp_path / "inv.yml")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_no_board_matches_the_suite(capsys, tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    b1:\n      board: rk3588\n      accelerator: rk3588\n      fleet_root: /opt/fleet\n")
    suite = tmp_path / "s"
    suite.mkdir()
    (suite / "suite.yml").write_text("pipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\ndataset: speech\n"
                                     "requires: {accelerators: [hailo8l]}\n")
    (suite / "test_a.py").write_text("def test_a():\n    pass\n")
    assert main(["test", str(suite), "--inventory", str(inv), "--db", str(tmp_path / "r.db")]) == 2
    assert "no board in" in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()  # refused before the store is opened: nothing written


def test_pytest_options_after_double_dash_reach_fleet_test(monkeypatch, capsys):
    import fleet.runner.cli as runner_cli

    calls = []

    def fake_run_suite(suite_dir, inventory, limit, workers, db, keyword, junit, extra, **kwargs):
        calls.append((keyword, extra))
        raise SystemExit(0)  # stop before the results table

    monkeypatch.setattr(runner_cli, "run_suite", fake_run_suite)
    with pytest.raises(SystemExit):
        main(["test", "suites/whisper_hybrid", "-k", "wer", "--", "-x", "--maxfail", "2"])
    assert calls == [("wer", ["-x", "--maxfail", "2"])]
    # anywhere else `--` is refused, naming the command that takes it
    with pytest.raises(SystemExit) as e:
        main(["results", "--", "-x"])
    assert e.value.code == 2 and "pytest options for `fleet test` only" in capsys.readouterr().err


def test_results_on_an_empty_store(capsys, tmp_path):
    from fleet.results.store import Store

    Store(tmp_path / "empty.db").close()
    assert main(["results", "--db", str(tmp_path / "empty.db")]) == 2
    assert "has no runs yet" in capsys.readouterr().err


def test_results_unknown_run(capsys, tmp_path):
    from fleet.results.store import Store

    s = Store(tmp_path / "r.db")
    s.start_run("r1", "suite")
    assert main(["results", "nope", "--db", str(tmp_path / "r.db")]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------ issue 13 §4: no traceback, reads never write

FLEET = [sys.executable, "-m", "fleet"]


def _fleet(*argv, cwd=None, env=None, **kw) -> subprocess.CompletedProcess:
    """A real `fleet` process (what a user's terminal sees: stderr, exit status)."""
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(FLEET + [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=e,
                          timeout=120, **kw)


def _store_with_run(path, run_id="r1", suite="s", status="passed", started=1_700_000_000.0):
    from fleet.results.store import Store

    s = Store(path)
    s.start_run(run_id, suite)
    s.set_run_times(run_id, started=started, finished=started + 12.5)
    s.finish_run(run_id, status)
    s.set_run_times(run_id, finished=started + 12.5)
    s.close()


def test_fleet_test_without_arguments_names_only_the_suite(capsys):
    with pytest.raises(SystemExit) as e:
        main(["test"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "required: SUITE_DIR" in err and "pytest_args" not in err


@pytest.mark.parametrize("n", ["foo", "0", "-1", "2.5"])
def test_bad_worker_count_is_refused_before_anything(n, tmp_path):
    """`fleet test SUITE -n foo`: exit 2 naming -n and the fix; no store, no run, no lease."""
    p = _fleet("test", ROOT / "suites" / "whisper_hybrid", "-n", n, "--inventory", ROOT / "inventory" / "lab.yml",
               "--db", tmp_path / "r.db", env={"FLEET_HOME": str(tmp_path)})
    assert p.returncode == 2, p.stderr
    assert f"-n '{n}' is not a number of parallel workers" in p.stderr and "-n auto" in p.stderr
    assert "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_suite_checks_workers_too(tmp_path):
    from fleet.errors import FleetError
    from fleet.runner.cli import parse_workers, run_suite

    assert parse_workers("auto") == "auto" and parse_workers("3") == 3
    with pytest.raises(FleetError, match="not a number of parallel workers"):
        run_suite(str(ROOT / "suites" / "whisper_hybrid"), str(ROOT / "inventory" / "lab.yml"), workers="foo",
                  db=str(tmp_path / "r.db"))
    assert not (tmp_path / "r.db").exists()


def test_a_failure_after_the_run_exists_marks_it_and_frees_the_leases(tmp_path, monkeypatch):
    """Anything failing once the run row exists (here: pytest cannot be started) leaves the run
    `error`, not `running`, and no lease held."""
    import fleet.runner.cli as runner_cli
    from fleet.leases import LeaseStore
    from fleet.results.store import Store

    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    suite = tmp_path / "s"
    suite.mkdir()
    (suite / "suite.yml").write_text("pipeline: asr.whisper_hybrid\nmodel: whisper-tiny.en\ndataset: speech\n")
    (suite / "test_a.py").write_text("def test_a():\n    pass\n")
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    b1:\n      board: cpu\n      accelerator: cpu\n      emulated: true\n"
                   "      fleet_root: /nonexistent\n")

    def boom(cmd, env, stdout=None):
        raise OSError("cannot start pytest")

    monkeypatch.setattr(runner_cli, "_run_pytest", boom)
    db = tmp_path / "r.db"
    with pytest.raises(OSError):
        runner_cli.run_suite(str(suite), str(inv), db=str(db))
    store = Store(db)
    (run,) = store.runs()
    assert run["status"] == "error" and run["finished"]
    assert LeaseStore(db).list() == []


def test_internal_error_is_one_line_and_a_log(tmp_path, monkeypatch, capsys):
    """An unexpected exception: one line naming its type and a log with the traceback, exit 1."""
    import fleet.results.runs_cli as runs_cli

    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    _store_with_run(tmp_path / "r.db")

    def broken(r):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(runs_cli, "run_row", broken)
    assert main(["runs", "--db", str(tmp_path / "r.db")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("fleet: internal error: ZeroDivisionError: division by zero (traceback in ")
    log = err.rsplit("(traceback in ", 1)[1].rstrip(")\n")
    assert log.startswith(str(tmp_path / ".fleet" / "logs"))
    text = open(log).read()
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError" in text


def test_broken_pipe_is_quiet(tmp_path):
    """`fleet runs --json | head -1`: no BrokenPipeError traceback, exit 141 (128 + SIGPIPE)."""
    for i in range(300):
        _store_with_run(tmp_path / "r.db", run_id=f"r{i}", started=1_700_000_000.0 + i)
    proc = subprocess.Popen(FLEET + ["runs", "--json", "--last", "300", "--db", str(tmp_path / "r.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as `head` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""


def test_reading_commands_create_no_store(tmp_path):
    new = tmp_path / "new" / "fleet.db"
    for argv in (["results"], ["results", "--json"], ["runs"], ["report", "--out", tmp_path / "r.html"]):
        p = _fleet(*argv, "--db", new, env={"FLEET_HOME": str(tmp_path)})
        assert p.returncode == 2, (argv, p.stderr)
        assert f"no results store at {new}" in p.stderr and "fix: " in p.stderr
    p = _fleet("leases", "--json", "--db", new)
    assert p.returncode == 0 and json.loads(p.stdout) == []
    assert list(tmp_path.iterdir()) == []


def test_push_without_prometheus_is_refused(tmp_path, capsys):
    _store_with_run(tmp_path / "r.db")
    assert main(["results", "--db", str(tmp_path / "r.db"), "--push", "http://pg:9091"]) == 2
    err = capsys.readouterr().err
    assert "--push http://pg:9091 needs --prometheus" in err and "fix: add --prometheus" in err


# `fleet report --out DIR` and `fleet dashboard --port`: tests/test_report.py, tests/test_dashboard.py


def test_runs_lists_and_filters_with_iso_times(tmp_path, capsys):
    db = str(tmp_path / "r.db")
    _store_with_run(tmp_path / "r.db", "a1", "alpha", "passed", started=1_700_000_000.0)
    _store_with_run(tmp_path / "r.db", "a2", "alpha", "failed", started=1_700_000_100.0)
    _store_with_run(tmp_path / "r.db", "b1", "beta", "passed", started=1_700_000_200.0)
    assert main(["runs", "--db", db, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == ["b1", "a2", "a1"]   # newest first
    assert rows[0]["started"] == "2023-11-14T22:16:40.000Z" and rows[0]["finished"] == "2023-11-14T22:16:52.500Z"
    assert rows[0]["duration_s"] == 12.5
    assert main(["runs", "--db", db, "--json", "--suite", "alpha", "--status", "passed"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["a1"]
    assert main(["runs", "--db", db, "--suite", "alpah"]) == 2
    assert "did you mean 'alpha'?" in capsys.readouterr().err
    assert main(["runs", "--db", db]) == 0
    assert "a2" in capsys.readouterr().out


def test_results_json_times_are_iso(tmp_path, capsys):
    _store_with_run(tmp_path / "r.db")
    assert main(["results", "--db", str(tmp_path / "r.db"), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["run"]
    assert run["started"] == "2023-11-14T22:13:20.000Z"


def test_leases_json_times_are_iso(tmp_path, capsys):
    from fleet.leases import RunLeases

    db = tmp_path / "r.db"
    lz = RunLeases(db, "run-1", ttl_s=60)
    lz.acquire(["b1"])
    try:
        assert main(["leases", "--db", str(db), "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
    finally:
        lz.release()
    for k in ("acquired", "renewed", "expires", "until"):
        assert row[k].endswith("Z") and row[k][10] == "T", row


def test_logs_outside_a_checkout_go_to_the_cache(tmp_path, monkeypatch):
    from fleet.paths import logs_dir

    monkeypatch.delenv("FLEET_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert logs_dir() == tmp_path / "cache" / "fleet" / "logs"
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    assert logs_dir() == tmp_path / "home" / ".fleet" / "logs"
