"""A board is an exclusive resource: with `fleet test -n N`, all tests of one board run on one
pytest-xdist worker, boards in parallel. `fleet test` runs xdist's ``--dist each`` and every worker
keeps the boards it owns (fleet.runner.plugin.owned_boards), so it knows them all before its first
test. Checked with the real plugin and real xdist workers on a suite that needs no SSH."""

import json
import os
import re
import subprocess
import sys

import pytest

from fleet.inventory import Board
from fleet.runner.plugin import owned_boards

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow


def _boards(n: int) -> list[Board]:
    return [Board(f"b{i}", "rk3588", "rk3588", True, "/opt/fleet", "h", 22, "root") for i in range(n)]


def _run_suite(tmp_path, boards, workers: int, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a 4-test-per-board suite (plus one board-less test) as `fleet test` runs pytest; returns
    the process and {board or "-": [worker per test run, in order]} read from the files it wrote."""
    (tmp_path / "boards.json").write_text(json.dumps([b.to_dict() for b in boards]))
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    out = tmp_path / "seen"
    out.mkdir(exist_ok=True)
    (suite / "test_where.py").write_text(
        "import os, time, pytest\n"
        f"OUT = {str(out)!r}\n"
        "def _mark(name):\n"
        "    with open(os.path.join(OUT, name), 'a') as f:\n"
        "        f.write(os.environ.get('PYTEST_XDIST_WORKER', 'main') + '\\n')\n"
        "@pytest.mark.parametrize('k', range(4))\n"
        "def test_where(board, k):\n"
        "    time.sleep(0.02)\n"
        "    _mark(f'{board.name}-{k}')\n"
        "def test_no_board():\n"
        "    _mark('-')\n")
    cmd = [sys.executable, "-m", "pytest", str(suite), "-p", "xdist.plugin", "-p", "fleet.runner.plugin",
           "--fleet-boards", str(tmp_path / "boards.json"), "-p", "no:cacheprovider", "-q",
           "--rootdir", str(suite), *extra]
    if workers > 1:
        cmd += ["-n", str(workers), "--dist", "each"]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    seen = {f.name: f.read_text().split() for f in out.iterdir()}
    return proc, seen


def test_each_board_stays_on_one_worker_and_every_test_runs_once(tmp_path):
    proc, seen = _run_suite(tmp_path, _boards(5), 3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(seen) == {f"b{i}-{k}" for i in range(5) for k in range(4)} | {"-"}
    assert all(len(w) == 1 for w in seen.values()), seen  # each test exactly once, not once per worker
    workers = {b: {seen[f"{b}-{k}"][0] for k in range(4)} for b in (f"b{i}" for i in range(5))}
    assert all(len(w) == 1 for w in workers.values()), workers  # one worker per board
    assert set().union(*workers.values()) == {"gw0", "gw1", "gw2"}  # and boards spread over all workers
    assert "21 passed" in proc.stdout, proc.stdout
    # the progress counts all workers' tests (xdist's `each` would count one worker's and pass 100 %)
    shown = [int(p) for p in re.findall(r"\[\s*(\d+)%\]", proc.stdout)]
    assert shown and max(shown) == 100, proc.stdout


def test_a_worker_left_without_tests_does_not_fail_the_run(tmp_path):
    # A resume whose first worker's boards all finished: that worker collects nothing. xdist's
    # `each` mode would report the run as "no tests collected" (exit 5) if it reported last.
    done = tmp_path / "done.json"
    # gw0's boards, every parameter (a done pair names the test as stored: with its parameters)
    done.write_text(json.dumps([[b, f"test_where[{k}]"] for b in ("b0", "b2") for k in range(4)]))
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "conftest.py").write_text(  # and gw0 reports its collection last
        "import os, time\n"
        "def pytest_collection_modifyitems(items):\n"
        "    if os.environ.get('PYTEST_XDIST_WORKER') == 'gw0':\n"
        "        time.sleep(1.5)\n")
    proc, seen = _run_suite(tmp_path, _boards(4), 2, "--fleet-done", str(done), "-k", "not no_board")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(seen) == sorted(f"{b}-{k}" for b in ("b1", "b3") for k in range(4))


@pytest.mark.parametrize("n_boards,workers", [(1, 1), (5, 1), (5, 2), (24, 2), (24, 5), (3, 3)])
def test_owned_boards_partition_the_fleet(n_boards, workers):
    boards = _boards(n_boards)
    if workers == 1:
        assert owned_boards(boards, None, 1) == {b.name for b in boards}
        return
    parts = [owned_boards(boards, f"gw{k}", workers) for k in range(workers)]
    assert set().union(*parts) == {b.name for b in boards}
    assert sum(len(p) for p in parts) == n_boards  # disjoint
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


def test_auto_workers_caps_emulated_fleets_only():
    # Emulated agents share the controller's cores: a worker per board only adds start-up cost
    # there (benchmarks/fleet_scale.py). Real boards compute on the board: one worker each.
    from fleet.runner.cli import auto_workers
    emu = [Board(f"e{i}", "rk3588", "rk3588", True, "/opt/fleet", "h", 22, "root") for i in range(24)]
    real = [Board(f"r{i}", "rk3588", "rk3588", False, "/opt/fleet", "h", 22, "root") for i in range(24)]
    assert auto_workers(emu, cpus=2) == 2 and auto_workers(emu, cpus=16) == 16
    assert auto_workers(emu[:1], cpus=2) == 1
    assert auto_workers(real, cpus=2) == 24 and auto_workers(emu[:12] + real[:1], cpus=2) == 13
