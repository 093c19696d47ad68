"""The `fleet` command's errors for bad input: a message naming the thing and the fix, exit 2."""

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
    (suite / "suite.yml").write_text("pipeline: asr.whisper_hybrid\nmodel: m\ndataset: d\nrequires: {accelerators: [hailo8l]}\n")
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
    assert main(["results", "--db", str(tmp_path / "empty.db")]) == 2
    assert "has no runs yet" in capsys.readouterr().err


def test_results_unknown_run(capsys, tmp_path):
    from fleet.results.store import Store

    s = Store(tmp_path / "r.db")
    s.start_run("r1", "suite")
    assert main(["results", "nope", "--db", str(tmp_path / "r.db")]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
