"""`fleet leases [--limit PATTERN] [--json]` lists board leases; `fleet leases release BOARD [--yes]`
(or `release --limit PATTERN`) frees them."""

from __future__ import annotations

import sys

from fleet.errors import FleetError
from fleet.inventory import INVENTORY_HELP, LIMIT_HELP


def register(sub) -> None:
    p = sub.add_parser("leases", help="list board leases, or free one (`fleet leases release BOARD`)")
    p.add_argument("action", nargs="?", choices=["list", "release"], default="list",
                   help="list (default) or release")
    p.add_argument("board", nargs="?", help="the board to release")
    p.add_argument("--limit", "-l", default=None, metavar="PATTERN",
                   help=LIMIT_HELP + "; only the leases of those boards are listed or released")
    p.add_argument("--inventory", "-i", default=None, help=INVENTORY_HELP + "; read only with --limit")
    p.add_argument("--db", help="results store holding the leases: a SQLite file or a SQLAlchemy URL "
                   "(default $FLEET_DB, else results/fleet.db)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--yes", "-y", action="store_true", help="release without asking")
    p.set_defaults(func=cmd_leases)


def _db_path(db: str | None):
    import os

    from fleet.paths import default_db

    return db or os.environ.get("FLEET_DB") or default_db()


def _missing_sqlite(db) -> bool:
    """True when ``db`` names a SQLite file that does not exist (a server URL: False)."""
    from fleet.results.dburl import parse_target

    target = parse_target(db)
    return target.path is not None and not target.path.exists()


def _limited(args) -> set[str] | None:
    """Board names ``--limit`` selects in the inventory (Ansible's pattern code), None without it."""
    if not args.limit:
        return None
    from fleet.inventory import load_inventory

    return {b.name for b in load_inventory(args.inventory, args.limit)}


def cmd_leases(args) -> int:
    from fleet import jsonout
    from fleet.leases import LeaseStore

    if args.limit and args.board:
        raise FleetError("`fleet leases release` takes a board or --limit, not both",
                         "e.g. fleet leases release sim-pi5-1, or fleet leases release --limit pi5_hailo8l --yes")
    chosen = _limited(args)  # a bad inventory or pattern fails before the store is opened
    db = _db_path(args.db)
    if args.action == "list" and _missing_sqlite(db):
        # listing only reads: no store there means no lease, and no empty store is created
        print("[]" if args.json else f"no board is leased (no results store at {db})")
        return 0
    store = LeaseStore(db)
    try:
        if args.action == "release":
            if chosen is not None:
                return _release_many(store, args, chosen)
            return _release(store, args)
        leases = [lz for lz in store.list() if chosen is None or lz.board in chosen]
        if args.json:
            # times as ISO 8601 UTC (``until`` too: the table's local-time text is not for tools)
            print(jsonout.dumps([{**lz.to_dict(), "until": lz.expires} for lz in leases]))
            return 0
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"board leases ({store.path})")
        for col in ("board", "owner", "run", "expires", "state"):
            t.add_column(col)
        for lz in leases:
            t.add_row(lz.board, lz.owner, lz.run_id, lz.until,
                      "[yellow]expired[/]" if lz.expired else ("[red]holder dead[/]" if lz.holder_dead() else "[green]held[/]"))
        console = Console() if sys.stdout.isatty() else Console(width=140)
        console.print(t if leases else "no board is leased")
        return 0
    finally:
        store.close()


def _release(store, args) -> int:
    if not args.board:
        raise FleetError("`fleet leases release` needs a board name", "e.g. fleet leases release sim-pi5-1")
    lease = store.get(args.board)
    if lease is None:
        raise FleetError(f"board {args.board} is not leased", "see `fleet leases`")
    if not args.yes:
        if not sys.stdin.isatty():
            raise FleetError(f"refusing to release {args.board} ({lease.describe()}) without confirmation",
                             "pass --yes (stdin is not a terminal)")
        answer = input(f"release {args.board}, {lease.describe()}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("not released")
            return 1
    store.release(board=args.board)
    print(f"released {args.board} ({lease.describe()})")
    return 0


def _release_many(store, args, boards: set[str]) -> int:
    """Release the leases of the boards ``--limit`` selected (those that hold one)."""
    leases = [lz for lz in store.list() if lz.board in boards]
    if not leases:
        print(f"none of {', '.join(sorted(boards))} is leased")
        return 0
    what = ", ".join(f"{lz.board} ({lz.describe()})" for lz in leases)
    if not args.yes:
        if not sys.stdin.isatty():
            raise FleetError(f"refusing to release {what} without confirmation", "pass --yes (stdin is not a terminal)")
        if input(f"release {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not released")
            return 1
    for lz in leases:
        store.release(board=lz.board)
        print(f"released {lz.board} ({lz.describe()})")
    return 0
