"""A board is an exclusive resource: with `fleet test -n N`, all tests of one board run on one
pytest-xdist worker (--dist loadgroup on the plugin's xdist_group marks), boards in parallel.
Checked with the real plugin and real xdist workers on a suite that needs no SSH."""

import json
import subprocess
import sys

from fleet.inventory import Board


def test_each_board_stays_on_one_worker(tmp_path):
    boards = [Board(f"b{i}", "rk3588", "rk3588", True, "/opt/fleet", "h", 22, "root") for i in range(3)]
    (tmp_path / "boards.json").write_text(json.dumps([b.to_dict() for b in boards]))
    suite = tmp_path / "suite"
    suite.mkdir()
    out = tmp_path / "seen"
    out.mkdir()
    (suite / "test_where.py").write_text(
        "import os, time, pytest\n"
        "@pytest.mark.parametrize('k', range(4))\n"
        "def test_where(board, k):\n"
        "    time.sleep(0.05)\n"
        f"    open(os.path.join({str(out)!r}, f'{{board.name}}-{{k}}'), 'w').write(os.environ['PYTEST_XDIST_WORKER'])\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-p", "fleet.runner.plugin",
                           "--fleet-boards", str(tmp_path / "boards.json"), "-n", "3", "--dist", "loadgroup",
                           "-p", "no:cacheprovider", "-q", "--rootdir", str(suite)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers: dict[str, set] = {}
    for f in out.iterdir():
        workers.setdefault(f.name.split("-")[0], set()).add(f.read_text())
    assert set(workers) == {"b0", "b1", "b2"}
    assert all(len(w) == 1 for w in workers.values()), workers  # one worker per board
    assert len(set().union(*workers.values())) > 1  # and boards spread over workers


def test_auto_workers_caps_emulated_fleets_only():
    # Emulated agents share the controller's cores: a worker per board only adds start-up cost
    # there (benchmarks/fleet_scale.py). Real boards compute on the board: one worker each.
    from fleet.runner.cli import auto_workers
    emu = [Board(f"e{i}", "rk3588", "rk3588", True, "/opt/fleet", "h", 22, "root") for i in range(24)]
    real = [Board(f"r{i}", "rk3588", "rk3588", False, "/opt/fleet", "h", 22, "root") for i in range(24)]
    assert auto_workers(emu, cpus=2) == 2 and auto_workers(emu, cpus=16) == 16
    assert auto_workers(emu[:1], cpus=2) == 1
    assert auto_workers(real, cpus=2) == 24 and auto_workers(emu[:12] + real[:1], cpus=2) == 13
