"""`fleet dashboard [--db PATH|URL] [--host 127.0.0.1] [--port 8765]`: the read-only web UI."""

from __future__ import annotations

import sys


def _port(value: str) -> int:
    """``--port``: a TCP port number 0-65535 (argparse reports anything else, exit 2)."""
    import argparse

    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port: give a number from 0 to 65535 (0 = any free port)")
    return int(value)


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="serve a read-only web UI over the results store (localhost by default)")
    p.add_argument("--db", help="results store: a SQLite file or a SQLAlchemy URL such as "
                   "postgresql+psycopg://USER@HOST/DB (default $FLEET_DB, else results/fleet.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8765, help="TCP port 0-65535 (default 8765; 0 = any free port)")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args) -> int:
    from fleet.dashboard.server import make_server
    from fleet.results.dburl import parse_target
    from fleet.results.store import db_location

    db = db_location(args.db)
    target = parse_target(db)  # a malformed URL fails here, before the server binds
    shown = target.display  # no password shown
    if target.path is not None and not target.path.exists():
        from fleet.errors import FleetError

        raise FleetError(f"no results store at {target.path}",
                         "give the store `fleet test` wrote with --db (or $FLEET_DB), or run `fleet test SUITE_DIR` first")
    try:
        srv = make_server(db, args.host, args.port)
    except OSError as e:
        raise _bind_error(e, args.host, args.port) from None
    print(f"fleet dashboard on http://{args.host}:{srv.server_port}/ over {shown} (read-only; Ctrl-C stops)",
          file=sys.stderr)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


def _bind_error(e: OSError, host: str, port: int):
    """The FleetError for a server that could not bind ``host:port``."""
    import errno
    import socket

    from fleet.errors import FleetError

    if e.errno == errno.EADDRINUSE:
        return FleetError(f"port {port} on {host} is in use (another dashboard or server listens there)",
                          f"give another --port, e.g. --port {port + 1 if port < 65535 else 8765}, or --port 0 for any free one")
    if e.errno == errno.EACCES:
        return FleetError(f"not allowed to listen on port {port} of {host} (ports below 1024 need root)",
                          "give a port from 1024 up, e.g. --port 8765")
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        return FleetError(f"cannot listen on --host {host}: {e.strerror or e}",
                          "give an address of this machine, e.g. --host 127.0.0.1 (or 0.0.0.0 for every interface)")
    return FleetError(f"cannot listen on {host}:{port}: {e.strerror or e}", "check --host and --port")
