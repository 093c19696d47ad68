"""`fleet test SUITE_DIR`: run a pytest suite on every matching board in parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fleet.errors import EXIT_INFRA, EXIT_TESTS_FAILED, FleetError


def register(sub) -> None:
    p = sub.add_parser("test", help="run a suite (pytest) on every matching board, boards in parallel")
    p.add_argument("suite_dir", help="suite folder, e.g. suites/whisper_hybrid")
    p.add_argument("--inventory", "-i", default="inventory/sim.yml", help="Ansible inventory (default inventory/sim.yml)")
    p.add_argument("--limit", help="only these hosts (Ansible-style pattern)")
    p.add_argument("-n", dest="workers", default="auto",
                   help="parallel workers: 'auto' = one per board (default), or a number")
    p.add_argument("--db", help="results store (default results/fleet.db or $FLEET_DB)")
    p.add_argument("-k", dest="keyword", help="pytest -k expression")
    p.add_argument("--junit", help="JUnit XML path (default runs/<run>/junit.xml)")
    p.add_argument("--ignore-fingerprint", action="store_true",
                   help="run on boards whose stack fingerprint fails `fleet doctor` (the run is labelled)")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    p.set_defaults(func=cmd_test)


def run_suite(suite_dir: str, inventory: str, limit: str | None = None, workers: str = "auto",
              db: str | None = None, keyword: str | None = None, junit: str | None = None,
              extra: list[str] | None = None, quiet: bool = False,
              ignore_fingerprint: bool = False) -> tuple[str, int]:
    """Run a suite on the matching boards; returns (run_id, exit code).

    A board whose stack fingerprint fails `fleet doctor` is refused (its tests are ``error``)
    unless ``ignore_fingerprint``; then it runs and the run is labelled (the boards' stored info
    has ``doctor.ignored``, the run's argv has ``--ignore-fingerprint``).

    Exit codes: 0 all passed; 1 a test failed; 3 infrastructure errors only (e.g. unreachable
    board) or pytest could not run.

    Raises:
        FleetError: bad suite.yml or inventory, or no board matches the suite.
    """
    from fleet.inventory import load_inventory
    from fleet.paths import runs_dir
    from fleet.results.junit import write_junit
    from fleet.results.store import new_run_id, open_store
    from fleet.runner.suite import load_suite

    suite = load_suite(suite_dir)
    boards = [b for b in load_inventory(inventory, limit) if suite.matches(b)]
    if not boards:
        raise FleetError(f"no board in {inventory} matches suite {suite.name} "
                         f"(requires accelerators {sorted(suite.accelerators)}, boards {sorted(suite.boards)})",
                         "add such a board to the inventory or widen requires: in suite.yml")
    store = open_store(db)
    run_id = new_run_id()
    run_dir = runs_dir() / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    boards_file = run_dir / "boards.json"
    boards_file.write_text(json.dumps([b.to_dict() for b in boards], indent=1))
    store.start_run(run_id, suite.name, inventory=str(Path(inventory).resolve()), argv=list(sys.argv) + (["--ignore-fingerprint"] if ignore_fingerprint and
                                           "--ignore-fingerprint" not in sys.argv else []))
    n = len(boards) if workers == "auto" else int(workers)
    cmd = [sys.executable, "-m", "pytest", str(suite.dir), "-p", "fleet.runner.plugin",
           "--fleet-run", run_id, "--fleet-boards", str(boards_file), "--fleet-db", str(store.path),
           "--fleet-suite", str(suite.dir), "--rootdir", str(suite.dir), "-p", "no:cacheprovider",
           "-o", "addopts=", "-q" if quiet else "-v"]
    if n > 1:
        cmd += ["-n", str(n), "--dist", "loadgroup"]
    if ignore_fingerprint:
        cmd += ["--fleet-ignore-fingerprint"]
    if keyword:
        cmd += ["-k", keyword]
    cmd += list(extra or [])
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    status = "error"
    rc = EXIT_INFRA
    try:
        proc = subprocess.run(cmd, env=env)
        results = store.results(run_id)
        outcomes = {r.outcome for r in results}
        if proc.returncode in (0, 1) and results:
            if "failed" in outcomes:
                status, rc = "failed", EXIT_TESTS_FAILED
            elif "error" in outcomes:
                status, rc = "error", EXIT_INFRA
            else:
                status, rc = "passed", 0
        elif proc.returncode == 5 or not results:
            status, rc = "error", EXIT_INFRA
        else:
            status, rc = ("failed" if "failed" in outcomes else "error"), (EXIT_TESTS_FAILED if "failed" in outcomes else EXIT_INFRA)
    except KeyboardInterrupt:
        status, rc = "interrupted", 130
        raise
    finally:
        store.finish_run(run_id, status)
        write_junit(store, run_id, junit or run_dir / "junit.xml")
        store.close()
    return run_id, rc


def cmd_test(args) -> int:
    import argparse

    from fleet.paths import runs_dir
    from fleet.results.cli import cmd_results

    run_id, rc = run_suite(args.suite_dir, args.inventory, args.limit, args.workers, args.db,
                           args.keyword, args.junit, args.pytest_args,
                           ignore_fingerprint=args.ignore_fingerprint)
    # the same table `fleet results RUN` prints
    cmd_results(argparse.Namespace(run=run_id, db=args.db, json=False, telemetry=False, csv=None))
    print(f"run {run_id}: JUnit XML in {args.junit or runs_dir() / run_id / 'junit.xml'}")
    return rc
