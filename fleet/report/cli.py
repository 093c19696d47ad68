"""`fleet report [RUN] --out report.html`: one self-contained HTML file (inline CSS and SVG plots,
opens offline) with the run's matrix, metrics, per-item outputs, latency and telemetry plots and
regressions — what a CI job uploads as an artifact."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fleet.errors import FleetError


def register(sub) -> None:
    p = sub.add_parser("report", help="write a run's self-contained HTML report (default: the latest run)")
    p.add_argument("run", nargs="?", help="run id (default: latest)")
    p.add_argument("--db", help="results store: a SQLite file or a SQLAlchemy URL such as "
                   "postgresql+psycopg://USER@HOST/DB (default $FLEET_DB, else results/fleet.db)")
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--baseline-runs", type=int, default=10, metavar="N",
                   help="earlier runs of the suite used as the regression baseline (default 10)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from fleet.report.html import render_report
    from fleet.results.store import open_store

    store = open_store(args.db)
    run_id = args.run or store.latest_run()
    if not run_id:
        raise FleetError(f"the results store {store.path} has no runs yet", "run `fleet test SUITE_DIR` first")
    html = render_report(store, run_id, baseline_runs=args.baseline_runs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out} ({len(html) // 1024} KiB) for run {run_id}", file=sys.stderr)
    return 0
