"""`fleet deploy`: provision the inventory's boards and print a per-host summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fleet.inventory import add_inventory_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `fleet deploy` to the `fleet` parser."""
    p = subparsers.add_parser("deploy", help="install the agent, models and suite data on boards (Ansible)")
    add_inventory_args(p)
    p.add_argument("--artifacts", type=Path, default=None, help="artifacts folder with manifest.json (default artifacts/)")
    p.add_argument("--data-root", type=Path, default=None, metavar="DIR",
                   help="where the data sets are read from (default $FLEET_DATA, else ../shared/data beside the checkout)")
    p.add_argument("--datasets", default=None, metavar="NAMES",
                   help="data sets every board gets, comma-separated NAME or NAME:SELECTION (e.g. speech:smoke), "
                        "or 'none' (default: those the catalog ships to boards; fleet datasets list)")
    p.add_argument("--models", default=None, help="models every board gets, comma-separated (default: every model in the manifest)")
    p.add_argument("--runs-dir", type=Path, default=None, help="where run folders go (default runs/)")
    p.add_argument("--json", action="store_true", help="print the per-host results as JSON (progress goes to stderr)")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    """Handler of `fleet deploy`: exit 0 all hosts fine, 1 a host failed, 3 hosts unreachable."""
    from rich.console import Console

    from fleet.deploy.report import render
    from fleet.deploy.run import deploy

    progress = Console(stderr=True)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    datasets = None if args.datasets is None else tuple(
        d.strip() for d in args.datasets.split(",") if d.strip() and d.strip() != "none")
    result = deploy(
        args.inventory,
        limit=args.limit,
        artifacts_dir=args.artifacts,
        data_root=args.data_root,
        datasets=datasets,
        runs_dir=args.runs_dir,
        models=models,
        console=progress,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        render(result, Console())
    return result.exit_code
