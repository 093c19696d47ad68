"""``fleet datasets list|verify|fetch``: the data sets of the catalog against a data root.

Exit status: 0 every data set asked for is present and verified (``fetch``: is now); 1 ``verify``
found a data set missing or wrong; 2 bad input (unknown data set); 3 a fetch failed (network,
origin changed) — the data root is then left as it was.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from fleet.errors import FleetError

_ROOT_HELP = ("data root (default: $FLEET_DATA, else ../shared/data beside the checkout when it exists, "
              "else ~/.cache/fleet/data)")


def register(subparsers) -> None:
    """Add ``fleet datasets`` with ``list``, ``verify`` and ``fetch`` to the ``fleet`` parser."""
    p = subparsers.add_parser("datasets", help="list, verify and fetch the data sets in the data root ($FLEET_DATA)",
                              description="The data sets the suites and model builds read, checked against "
                                          "the catalog (fleet/datasets/catalog/*.yml: files, sha256, public "
                                          "origin). docs/contracts.md §5.")
    sub = p.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND")
    ls = sub.add_parser("list", help="every data set of the catalog and whether the data root has it "
                                     "(presence and size; `verify` checks sha256)")
    v = sub.add_parser("verify", help="check every file's sha256 against the catalog (exit 1 when one is missing or wrong)")
    v.add_argument("names", nargs="*", metavar="NAME", help="data sets to check (default: all)")
    f = sub.add_parser("fetch", help="download what the data root lacks from the recorded public origin, "
                                     "verified by sha256",
                       description="Download the missing or wrong files of each data set, check every sha256, "
                                   "then move them into the data root; on any failure nothing is left behind.")
    f.add_argument("names", nargs="*", metavar="NAME", help="data sets to fetch (default: all)")
    f.add_argument("--mirror", metavar="URL", default=None,
                   help="a lab mirror of a data root (http(s):// or file://) to read every file from, "
                        "instead of the public origins")
    for q in (ls, v, f):
        q.add_argument("--data-root", type=Path, default=None, metavar="DIR", help=_ROOT_HELP)
        q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_list)
    v.set_defaults(func=cmd_verify)
    f.set_defaults(func=cmd_fetch)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _root(args) -> tuple[Path, str]:
    """(data root, where it came from) for the header line."""
    from fleet import paths
    from fleet.datasets.local import resolve_root

    root = resolve_root(args.data_root)
    beside = paths.shared_data_beside_checkout()
    why = ("--data-root" if args.data_root else "$FLEET_DATA" if os.environ.get("FLEET_DATA")
           else "../shared/data beside the checkout" if beside.is_dir() and beside.resolve() == root
           else "the user cache")
    return root, why


def _console():
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def cmd_list(args: argparse.Namespace) -> int:
    """Handler of ``fleet datasets list``: always exit 0."""
    from fleet.datasets.catalog import load_catalog
    from fleet.datasets.local import verify

    root, why = _root(args)
    rows = []
    for ds in load_catalog().values():
        state = verify(ds.name, root, hashed=False)
        rows.append({"name": ds.name, "path": ds.path, "files": len(ds.files), "bytes": sum(e.bytes for e in ds.files),
                     "deploy": ds.deploy, "present": state.ok, "state": state.summary(), "selections": sorted(ds.selections),
                     "description": ds.description, "license": ds.license, "origin": ds.origin})
    if args.json:
        print(json.dumps({"data_root": str(root), "data_root_from": why, "datasets": rows}, indent=2))
        return 0
    from rich.table import Table

    t = Table(title=f"data sets · data root {root} ({why})")
    for col in ("name", "folder", "files", "MB", "boards", "in data root", "description"):
        t.add_column(col, justify="right" if col in ("files", "MB") else "left")
    for r in rows:
        t.add_row(r["name"], r["path"], str(r["files"]), f"{r['bytes'] / 1e6:.1f}", "yes" if r["deploy"] else "no",
                  "[green]yes[/]" if r["present"] else f"[red]{r['state']}[/]", r["description"])
    _console().print(t)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Handler of ``fleet datasets verify``: 0 all verified, 1 one missing or wrong."""
    from fleet.datasets.fetch import fetch_names
    from fleet.datasets.local import verify

    root, why = _root(args)
    results = [verify(n, root) for n in fetch_names(args.names)]
    if args.json:
        print(json.dumps({"data_root": str(root), "datasets": [r.to_dict() for r in results]}, indent=2))
    else:
        c = _console()
        c.print(f"data root {root} ({why})", highlight=False)
        for r in results:
            c.print(f"{r.name:14} {'[green]' if r.ok else '[red]'}{r.summary()}[/]", highlight=False)
            for x in r.extra:
                c.print(f"{'':14} note: {x} is not in the catalog (left alone)", highlight=False)
        if not all(r.ok for r in results):
            bad = " ".join(r.name for r in results if not r.ok)
            c.print(f"fix: fleet datasets fetch {bad}", highlight=False)
    return 0 if all(r.ok for r in results) else 1


def cmd_fetch(args: argparse.Namespace) -> int:
    """Handler of ``fleet datasets fetch``: 0 all present, else the first failure's exit code
    (every data set is tried; each failure leaves the data root as it was)."""
    from fleet.datasets.fetch import fetch, fetch_names

    root, why = _root(args)
    names = fetch_names(args.names)
    c = _console()
    if not args.json:
        c.print(f"data root {root} ({why}){' · mirror ' + args.mirror if args.mirror else ''}", highlight=False)
    done, failed = [], []
    for n in names:
        try:
            r = fetch(n, root, mirror=args.mirror)
        except FleetError as e:
            failed.append((n, e))
            if not args.json:
                c.print(f"{n:14} [red]failed[/]: {e}", highlight=False)
            continue
        done.append(r)
        if not args.json:
            what = ("present (sha256 verified)" if r.status == "present" else
                    f"fetched {len(r.fetched)} files, {r.downloaded_bytes / 1e6:.1f} MB downloaded, in {r.seconds:.1f} s")
            c.print(f"{n:14} [green]{what}[/]", highlight=False)
    if args.json:
        print(json.dumps({"data_root": str(root), "datasets": [r.to_dict() for r in done],
                          "failed": [{"name": n, "error": e.message, "fix": e.fix} for n, e in failed]}, indent=2))
    return failed[0][1].exit_code if failed else 0
