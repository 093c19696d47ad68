"""`fleet dashboard [--db PATH|URL] [--host 127.0.0.1] [--port 8765]`: the read-only web UI."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="serve a read-only web UI over the results store (localhost by default)")
    p.add_argument("--db", help="results store: a SQLite file or a SQLAlchemy URL such as "
                   "postgresql+psycopg://USER@HOST/DB (default $FLEET_DB, else results/fleet.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args) -> int:
    from fleet.dashboard.server import make_server
    from fleet.results.dburl import parse_target
    from fleet.results.store import db_location

    db = db_location(args.db)
    shown = parse_target(db).display  # a malformed URL fails here, before the server binds; no password shown
    srv = make_server(db, args.host, args.port)
    print(f"fleet dashboard on http://{args.host}:{srv.server_port}/ over {shown} (read-only; Ctrl-C stops)",
          file=sys.stderr)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0
