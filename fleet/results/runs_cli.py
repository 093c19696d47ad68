"""`fleet runs [--suite S] [--status X] [--last N] [--json]`: the recent runs of the results store,
newest first (read-only: never creates a store)."""

from __future__ import annotations

import json
import sys

from fleet.errors import FleetError

STATUSES = ("running", "passed", "failed", "error", "interrupted")


def register(sub) -> None:
    p = sub.add_parser("runs", help="list recent runs (newest first), by suite and status")
    p.add_argument("--suite", help="only runs of this suite (its name, e.g. whisper_hybrid)")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p.add_argument("--last", type=_count, default=20, metavar="N", help="at most N runs (default 20)")
    p.add_argument("--db", help="results store: a SQLite file or a SQLAlchemy URL such as "
                   "postgresql+psycopg://USER@HOST/DB (default $FLEET_DB, else results/fleet.db)")
    p.add_argument("--json", action="store_true", help="print JSON (times as ISO 8601 UTC) instead of a table")
    p.set_defaults(func=cmd_runs)


def _count(value: str) -> int:
    import argparse

    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of runs: give a whole number >= 1")
    return int(value)


def run_row(r: dict) -> dict:
    """A store run row as ``fleet runs --json`` prints it: id, suite, status, started, finished
    (s since the epoch here; ISO 8601 UTC in the JSON), duration_s, controller, inventory, argv (list)."""
    try:
        argv = json.loads(r.get("argv") or "[]")
    except ValueError:
        argv = r.get("argv")
    dur = r["finished"] - r["started"] if r.get("finished") and r.get("started") else None
    return {"id": r["id"], "suite": r["suite"], "status": r["status"], "started": r["started"],
            "finished": r.get("finished"), "duration_s": None if dur is None else round(dur, 3),
            "controller": r.get("controller"), "inventory": r.get("inventory"), "argv": argv}


def cmd_runs(args) -> int:
    from fleet import jsonout
    from fleet.results.cli import open_read_only

    store = open_read_only(args.db)
    try:
        rows = [run_row(r) for r in store.runs(args.last, suite=args.suite, status=args.status)]
        if args.suite and not rows and args.suite not in store.suites():
            known = store.suites()
            from fleet.runner.suite_schema import did_you_mean

            raise FleetError(f"no run of suite '{args.suite}' in {store.path}",
                             f"{did_you_mean(args.suite, known)}suites with runs: {', '.join(known) or 'none'}")
    finally:
        store.close()
    if args.json:
        print(jsonout.dumps(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="runs (newest first)")
    for col in ("run", "suite", "status", "started (UTC)", "duration", "controller"):
        t.add_column(col)
    colors = {"passed": "green", "failed": "red", "error": "magenta", "running": "cyan", "interrupted": "yellow"}
    for r in rows:
        started = jsonout.iso_utc(r["started"])[:19].replace("T", " ")
        dur = "–" if r["duration_s"] is None else f"{r['duration_s']:.0f} s"
        t.add_row(r["id"], r["suite"], f"[{colors.get(r['status'], 'white')}]{r['status']}[/]", started, dur,
                  r["controller"] or "–")
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(t if rows else "no runs match")
    return 0
