"""`fleet report [RUN] --out report.html`: one self-contained HTML file (inline CSS and SVG plots,
opens offline) with the run's matrix, metrics, per-item outputs, latency and telemetry plots and
regressions — what a CI job uploads as an artifact."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from fleet.errors import EXIT_INFRA, FleetError


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
    """Write the report; the output is checked before the store is read and written atomically
    (a temp file beside it, renamed; removed if anything fails).

    Raises:
        FleetError: ``--out`` is a folder or its parent is not a folder (exit 2), no store or no
            run (exit 2), the file cannot be written (exit 3).
    """
    from fleet.report.html import render_report
    from fleet.results.cli import open_read_only

    out = Path(args.out)
    if out.is_dir():
        raise FleetError(f"--out {out} is a folder, not an HTML file",
                         f"give a file name, e.g. --out {out / 'report.html'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise FleetError(f"--out {out}: {out.parent} is not a folder", "give a path inside a folder")
    store = open_read_only(args.db)
    try:
        run_id = args.run or store.latest_run()
        if not run_id:
            raise FleetError(f"the results store {store.path} has no runs yet", "run `fleet test SUITE_DIR` first")
        html = render_report(store, run_id, baseline_runs=args.baseline_runs)
    finally:
        store.close()
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is meant to be shared
        os.replace(tmp, out)
        tmp = None
    except OSError as e:
        raise FleetError(f"cannot write the report {out}: {e.strerror or e}",
                         "check that the folder exists and is writable, or give another --out", EXIT_INFRA) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    print(f"wrote {out} ({len(html) // 1024} KiB) for run {run_id}", file=sys.stderr)
    return 0
