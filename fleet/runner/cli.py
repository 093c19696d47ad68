"""`fleet test SUITE_DIR`: run a pytest suite on every matching board in parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fleet.errors import EXIT_INFRA, EXIT_TESTS_FAILED, FleetError
from fleet.inventory import add_inventory_args

#: outcomes a resume keeps (the test ran to a verdict); error / not-run are run again
FINISHED = ("passed", "failed", "skipped")


def auto_workers(boards, cpus: int | None = None) -> int:
    """``-n auto``: one pytest-xdist worker per board, except that a fleet of only emulated boards
    gets at most one worker per controller CPU (at least 2).

    Why: an emulated board's agent runs on the controller's own CPUs, so a worker per board adds
    only worker start-up (pytest, xdist and the plugin's imports: ~0.7 s of CPU each) and nothing
    to overlap; on 2 CPUs, 24 emulated boards ran benchmarks/fleet_scale.py's trivial suite in
    46-97 s with 24 workers and 26-36 s with 2 (two runs; README "Fan-out at scale"). Real
    boards compute on their own CPUs while their worker waits on SSH, so each keeps its own
    worker (boards sharing a worker would run one after another).

    Args:
        boards: the boards the suite runs on (fleet.inventory.Board).
        cpus: controller CPUs (default: the CPUs this process may run on).
    """
    n = len(boards)
    if boards and all(b.emulated for b in boards):
        cpus = cpus or len(os.sched_getaffinity(0))
        n = min(n, max(2, cpus))
    return n


def parse_workers(value) -> str | int:
    """``-n``: ``"auto"`` or a whole number of pytest-xdist workers >= 1.

    Raises:
        FleetError: anything else (exit 2), before any lease or run exists.
    """
    text = str(value).strip()
    if text == "auto":
        return "auto"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise FleetError(f"-n {value!r} is not a number of parallel workers",
                     "give -n auto (one worker per board) or a whole number >= 1, e.g. -n 4")


def _workers_arg(value: str):
    import argparse

    try:
        return parse_workers(value)
    except FleetError as e:
        raise argparse.ArgumentTypeError(f"{e.message}: {e.fix}") from None


def register(sub) -> None:
    p = sub.add_parser("test", help="run a suite (pytest) on every matching board, boards in parallel",
                       usage="fleet test SUITE_DIR [options] [-- PYTEST_ARGS ...]")
    p.add_argument("suite_dir", metavar="SUITE_DIR", help="suite folder, e.g. suites/whisper_hybrid")
    add_inventory_args(p)
    p.add_argument("-n", dest="workers", default="auto", type=_workers_arg,
                   help="parallel workers: 'auto' = one per board (default; emulated boards: at most one per CPU), or a number")
    p.add_argument("--db", help="results store: a SQLite file or a SQLAlchemy URL such as "
                   "postgresql+psycopg://USER@HOST/DB (default $FLEET_DB, else results/fleet.db)")
    p.add_argument("-k", dest="keyword", help="pytest -k expression")
    p.add_argument("--junit", help="JUnit XML path (default runs/<run>/junit.xml)")
    p.add_argument("--ignore-fingerprint", action="store_true",
                   help="run on boards whose stack fingerprint fails `fleet doctor` (the run is labelled)")
    p.add_argument("--smoke", action="store_true",
                   help="run the suite's smoke selection (suite.yml smoke:) on every board; boards whose CPU "
                        "is emulated (inventory cpu_emulated) always run it")
    p.add_argument("--resume", metavar="RUN",
                   help="resume RUN: keep its passed/failed/skipped results, re-run only what errored or did not run")
    p.add_argument("--lease-wait", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for boards leased by another run (default 0: skip them as not-run)")
    p.add_argument("--lease-ttl", type=float, default=None, metavar="S",
                   help="lease expiry (s), renewed every S/3 while the run lives (default 60)")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON (as `fleet results RUN --json`)")
    # pytest's own options go after `--` (fleet.cli splits them off into pytest_args); not a
    # positional argument, which argparse would list as required when SUITE_DIR is missing
    p.set_defaults(func=cmd_test, pytest_args=[])


def run_suite(suite_dir: str, inventory: str, limit: str | None = None, workers: str = "auto",
              db: str | None = None, keyword: str | None = None, junit: str | None = None,
              extra: list[str] | None = None, quiet: bool = False,
              ignore_fingerprint: bool = False, resume: str | None = None,
              lease_wait: float = 0.0, lease_ttl: float | None = None, pytest_stdout=None,
              smoke: bool = False) -> tuple[str, int]:
    """Run a suite on the matching boards; returns (run_id, exit code).

    A board whose stack fingerprint fails `fleet doctor` is refused (its tests are ``error``)
    unless ``ignore_fingerprint``; then it runs and the run is labelled (the boards' stored info
    has ``doctor.ignored``, the run's argv has ``--ignore-fingerprint``).

    Exit codes: 0 all passed; 1 a test failed; 3 infrastructure errors only (e.g. unreachable
    board, board lost), nothing ran (every board leased by another run), or pytest could not
    run; 130 interrupted (KeyboardInterrupt is re-raised after the run is marked
    ``interrupted``, pytest stopped, leases released).

    Leases (fleet.leases): every board is leased for this run before pytest starts and renewed
    while it lives; a board another live run holds is waited for up to ``lease_wait`` s, then its
    tests are recorded ``not-run`` ("leased by <owner> (run <id>) until <time>").

    ``smoke``: every board runs the suite's smoke selection (boards whose CPU is emulated always
    do; fleet.runner.emulation); each board's stored info says which selection it ran.

    ``resume``: reuse that run id and its boards; (board, test) pairs already passed, failed or
    skipped are kept and not re-run; error / not-run rows are dropped and their tests run again
    (runs/<run>/resumes.json records each resume and what it re-ran).

    Raises:
        FleetError: bad suite.yml or inventory, or no board matches the suite.
    """
    from fleet.inventory import default_inventory, load_inventory

    inventory = default_inventory(inventory)
    from fleet.paths import runs_dir
    from fleet.results.dburl import redact_argv
    from fleet.results.junit import write_junit
    from fleet.results.store import open_store
    from fleet.runner.suite import load_suite

    n_workers = parse_workers(workers)  # before anything is leased or written
    suite = load_suite(suite_dir)
    # a bad inventory fails before the results store is opened: nothing written, not even an empty store
    matching = None if resume else [b for b in load_inventory(inventory, limit) if suite.matches(b)]
    if matching is not None and not matching:
        # refused before the store is opened: no empty store, no run row for a run that never was
        raise FleetError(f"no board in {inventory} matches suite {suite.name} "
                         f"(requires accelerators {sorted(suite.accelerators)}, boards {sorted(suite.boards)})",
                         "add such a board to the inventory or widen requires: in suite.yml")
    store = open_store(db)
    # from here on, whatever fails (even an error of ours) marks the run and frees its leases:
    # never a run left `running` or a board held
    run_id: str | None = None
    run_dir: Path | None = None
    leases = None
    status, rc = "error", EXIT_INFRA
    try:
        done: list[list[str]] = []
        if resume:
            prev = store.run(resume)
            if prev is None:
                raise FleetError(f"no run '{resume}' in {store.path}", "list runs with `fleet runs`")
            if prev["suite"] != suite.name:
                raise FleetError(f"run {resume} ran suite {prev['suite']}, not {suite.name}",
                                 "resume it with its own suite folder")
            rid = resume
            run_dir = runs_dir() / rid
            boards_file = run_dir / "boards.json"
            if boards_file.exists():
                from fleet.inventory import Board

                boards = [Board.from_dict(b) for b in json.loads(boards_file.read_text())]
            else:
                boards = [b for b in load_inventory(prev.get("inventory") or inventory, limit) if suite.matches(b)]
            done, dropped = _prepare_resume(store, rid)
            run_dir.mkdir(parents=True, exist_ok=True)
            boards_file.write_text(json.dumps([b.to_dict() for b in boards], indent=1))
            log = run_dir / "resumes.json"
            history = json.loads(log.read_text()) if log.exists() else []
            history.append({"resumed_at": time.time(), "argv": redact_argv(sys.argv), "kept": done, "rerun": dropped})
            log.write_text(json.dumps(history, indent=1))
            argv = json.loads(prev.get("argv") or "[]") + ["--resume", rid]
            store.reopen_run(rid, argv)
            run_id = rid  # from here a failure marks the resumed run
        else:
            boards = matching
            # a fresh id the store has not seen (several controllers may share a PostgreSQL store)
            run_id = store.new_run(suite.name, inventory=str(Path(inventory).resolve()), argv=list(sys.argv) + (["--ignore-fingerprint"] if ignore_fingerprint and
                                   "--ignore-fingerprint" not in sys.argv else []))
            run_dir = runs_dir() / run_id
            run_dir.mkdir(parents=True, exist_ok=True)
            boards_file = run_dir / "boards.json"
            boards_file.write_text(json.dumps([b.to_dict() for b in boards], indent=1))
        from fleet.leases import DEFAULT_TTL_S, RunLeases

        leases = RunLeases(store.target.location(), run_id, ttl_s=lease_ttl or DEFAULT_TTL_S)
        leases.acquire([b.name for b in boards], wait_s=lease_wait)
        import shutil

        shutil.rmtree(run_dir / "lost", ignore_errors=True)  # lost-board markers of an earlier attempt
        not_run_file = run_dir / "not_run.json"
        not_run_file.write_text(json.dumps(leases.refused, indent=1))
        done_file = run_dir / "done.json"
        done_file.write_text(json.dumps(done))
        n = auto_workers(boards) if n_workers == "auto" else n_workers
        env = dict(os.environ)
        # Suites run with the plugins they need and no others: pytest would otherwise load every
        # plugin installed in the venv (anyio, platformdirs, playwright ...) and, with bytecode off,
        # re-compile their assertion-rewritten modules in the controller and in every xdist worker:
        # ~1.3 s of CPU per process on this machine (cProfile of one `fleet test`).
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        cmd = [sys.executable, "-m", "pytest", str(suite.dir), "-p", "xdist.plugin", "-p", "fleet.runner.plugin",
               "--fleet-run", run_id, "--fleet-boards", str(boards_file), "--fleet-db", _child_db(store, env),
               "--fleet-suite", str(suite.dir), "--rootdir", str(suite.dir), "-p", "no:cacheprovider",
               "-o", "addopts=", "-q" if quiet else "-v"]
        n = min(n, len(boards))  # a board is exclusive: a worker beyond one per board has nothing to run
        if n > 1:  # each worker runs the boards it owns (fleet.runner.plugin.owned_boards)
            cmd += ["-n", str(n), "--dist", "each"]
        if ignore_fingerprint:
            cmd += ["--fleet-ignore-fingerprint"]
        if smoke:
            cmd += ["--fleet-smoke"]
        if leases.refused:
            cmd += ["--fleet-not-run", str(not_run_file)]
        if done:
            cmd += ["--fleet-done", str(done_file)]
        if keyword:
            cmd += ["-k", keyword]
        cmd += list(extra or [])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        returncode = _run_pytest(cmd, env, stdout=pytest_stdout)
        results = store.results(run_id)
        outcomes = {r.outcome for r in results} - {"not-run"}
        if returncode in (0, 1) and outcomes:
            if "failed" in outcomes:
                status, rc = "failed", EXIT_TESTS_FAILED
            elif "error" in outcomes:
                status, rc = "error", EXIT_INFRA
            else:
                status, rc = "passed", 0
        elif returncode == 5 or not outcomes:
            status, rc = "error", EXIT_INFRA
        else:
            status, rc = ("failed" if "failed" in outcomes else "error"), (EXIT_TESTS_FAILED if "failed" in outcomes else EXIT_INFRA)
    except KeyboardInterrupt:
        status, rc = "interrupted", 130
        raise
    finally:
        try:
            if leases is not None:
                leases.release()
        finally:
            try:
                if run_id is not None:
                    store.finish_run(run_id, status)
                    write_junit(store, run_id, junit or run_dir / "junit.xml")
            finally:
                store.close()
    return run_id, rc


def _prepare_resume(store, run_id: str) -> tuple[list[list[str]], list[list[str]]]:
    """Keep the run's finished (board, test) pairs, drop its error / not-run rows (they run again).

    Returns:
        (kept pairs, dropped pairs), each ``[board, test]``.
    """
    results = store.results(run_id)
    finished = {(r.board, r.test) for r in results if r.outcome in FINISHED}
    dropped = sorted({(r.board, r.test) for r in results if (r.board, r.test) not in finished})
    ids = [r.id for r in results if (r.board, r.test) not in finished]
    store.delete_results(ids)  # one transaction
    return [list(p) for p in sorted(finished)], [list(p) for p in dropped]


def _child_db(store, env: dict) -> str:
    """The ``--fleet-db`` value for the pytest child: the SQLite path, or for a server ``-`` with the
    URL (it may hold a password) in the child's $FLEET_DB, never on its command line."""
    if store.target.path is not None:
        return str(store.target.path)
    env["FLEET_DB"] = store.target.secret_url()
    return "-"


def _run_pytest(cmd: list[str], env: dict, stdout=None) -> int:
    """Run pytest; on KeyboardInterrupt (Ctrl-C reaches the whole process group, `kill -INT`
    only us) make sure pytest stops too: give it a moment to see its own SIGINT, forward one,
    then SIGTERM and SIGKILL. Its workers close their agent sessions (the agents exit) on the
    way out. Re-raises KeyboardInterrupt."""
    import signal

    proc = subprocess.Popen(cmd, env=env, stdout=stdout)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        for sig, wait_s in ((None, 2.0), (signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if sig is not None and proc.poll() is None:
                proc.send_signal(sig)
            try:
                proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting politely
                continue
        raise


def cmd_test(args) -> int:
    """`fleet test`: run the suite, then print the run's table (or with --json its summary:
    ``fleet results RUN --json`` plus ``exit_code`` and ``junit``; pytest's own output then goes
    to stderr so stdout is only the JSON)."""
    import argparse

    from fleet.paths import runs_dir
    from fleet.results.cli import cmd_results

    run_id, rc = run_suite(args.suite_dir, args.inventory, args.limit, args.workers, args.db,
                           args.keyword, args.junit, args.pytest_args,
                           ignore_fingerprint=args.ignore_fingerprint, resume=args.resume,
                           lease_wait=args.lease_wait, lease_ttl=args.lease_ttl,
                           pytest_stdout=sys.stderr if args.json else None, smoke=args.smoke)
    junit = str(args.junit or runs_dir() / run_id / "junit.xml")
    if args.json:
        from fleet import jsonout
        from fleet.results.cli import open_read_only, summarize

        store = open_read_only(args.db)
        try:
            data = summarize(store, run_id)
        finally:
            store.close()
        print(jsonout.dumps({**data, "exit_code": rc, "junit": junit}))
        return rc
    # the same table `fleet results RUN` prints
    cmd_results(argparse.Namespace(run=run_id, db=args.db, json=False, telemetry=False, csv=None))
    print(f"run {run_id}: JUnit XML in {junit}")
    return rc
