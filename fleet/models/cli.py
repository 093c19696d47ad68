"""``fleet models``: build model artifacts (``fleet models build MODEL [--target cpu]``).

Only argparse is imported at module level; torch and transformers load inside the handler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path


def register(subparsers) -> None:
    """Add ``models`` with its ``build`` sub-command to the ``fleet`` parser."""
    from fleet.models.build import KNOWN_MODELS, TARGETS

    p = subparsers.add_parser("models", help="build model artifacts (ONNX now; HEF/RKNN later)",
                              description="Build model artifacts and artifacts/manifest.json.")
    sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    b = sub.add_parser("build", help="build one model for one target",
                       description="Build, verify and record the artifacts of MODEL for TARGET. "
                                   "Does nothing if they are already built and unchanged.")
    b.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(KNOWN_MODELS)}")
    b.add_argument("--target", default="cpu", metavar="TARGET",
                   help=f"one of: {', '.join(TARGETS)} (default: cpu)")
    b.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="artifacts root (default: $FLEET_ARTIFACTS or <project>/artifacts)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--json", action="store_true",
                   help="print the entries and measurements as JSON on stdout")
    b.set_defaults(func=cmd_build)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_build(args: argparse.Namespace) -> int:
    """Handler of ``fleet models build``: progress on stderr (rich), summary table on stdout."""
    from rich.console import Console
    from rich.table import Table

    from fleet.models.build import Report, build
    from fleet.paths import artifacts_dir

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out_dir = args.out or artifacts_dir()
    err.print(f"[bold]fleet models build[/bold] {args.model} --target {args.target} → {out_dir}")
    report = Report(echo=err.print)
    spinner = err.status("building…") if not args.json and err.is_terminal else None
    with spinner or contextlib.nullcontext():
        entries = build(args.model, args.target, out_dir, force=args.force, report=report)
    if args.json:
        print(json.dumps({"entries": entries, "metrics": report.metrics}, indent=2))
        return 0
    table = Table(title=f"{args.model} ({args.target})")
    for col in ("role", "variant", "file", "MB", "sha256"):
        table.add_column(col, justify="right" if col == "MB" else "left")
    for e in entries:
        table.add_row(e["role"], e["variant"], Path(e["path"]).name, f"{e['bytes'] / 1e6:.1f}",
                      e["sha256"][:12])
    Console().print(table)
    return 0
