"""The dashboard server: stdlib ``ThreadingHTTPServer``, GET only, the store opened read-only
(SQLite ``mode=ro``) per request, pages built by :mod:`fleet.report.html` (inline CSS/SVG, no
JavaScript, no external assets).

Routes: ``/`` Fleet · ``/run/<id>`` Run · ``/run/<id>/test/<board>/<test>`` Test detail ·
``/trends?suite=S&metric=M`` Trends · ``/compare?a=RUN&b=RUN`` two runs side by side.
"""

from __future__ import annotations

import sqlite3
import sys
import traceback
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fleet.errors import FleetError
from fleet.report import html as H
from fleet.results import regress
from fleet.results.store import Store


class ReadOnlyStore(Store):
    """A :class:`Store` over an existing database opened read-only (no schema writes)."""

    def __init__(self, path: str | Path):
        # SQLite: mode=ro, FileNotFoundError if missing; PostgreSQL: default_transaction_read_only
        super().__init__(path, read_only=True)


def q(v) -> str:
    return urllib.parse.quote(str(v), safe="")


def dash_links(run_id: str):
    def link(kind: str, **ids):
        if kind == "test":
            return f"/run/{q(run_id)}/test/{q(ids['board'])}/{q(ids['test'])}"
        return None
    return link


NAV = '<a href="/">Fleet</a><a href="/trends">Trends</a><a href="/compare">Compare</a>'


def fleet_page(store) -> str:
    rows = H.fleet_rows(store)
    for r in rows:
        r["run_html"] = f"<a href=\"/run/{H.e(q(r['run']))}\">{H.e(r['run'])}</a>"
    runs = store.runs(30)
    items = "".join(f"<tr><td><a href=\"/run/{H.e(q(r['id']))}\">{H.e(r['id'])}</a></td><td>{H.e(r['suite'])}</td>"
                    f"<td class=\"{H.e(r['status'])}\">{H.e(r['status'])}</td><td>{H.e(H.when(r['started']))}</td></tr>"
                    for r in runs)
    body = ("<h1>Fleet</h1>" + H.fleet_table(rows) + "<h2>Runs</h2><table id=runs><tr><th>run</th><th>suite</th>"
            "<th>status</th><th>started</th></tr>" + items + "</table>")
    return H.page("fleet · boards", body, NAV)


def run_page(store, run_id: str) -> str | None:
    run = store.run(run_id)
    if run is None:
        return None
    boards, results = store.boards(run_id), store.results(run_id)
    verdicts = regress.regressions(store, run_id)
    body = (H.run_header(run, boards, results) + "<h2>Matrix</h2>" + H.matrix(boards, results, dash_links(run_id))
            + "<h2>Metrics</h2>" + H.metrics_table(results) + "<h2>Regressions</h2>"
            + H.regressions_table(verdicts, only_flagged=True)
            + f"<p><a href=\"/trends?suite={H.e(q(run['suite']))}\">trends of {H.e(run['suite'])}</a></p>")
    return H.page(f"fleet · run {run_id}", body, NAV)


def test_page(store, run_id: str, board: str, test: str) -> str | None:
    rs = [r for r in store.results(run_id) if r.board == board and r.test == test]
    if not rs:
        return None
    body = f"<p><a href=\"/run/{H.e(q(run_id))}\">← run {H.e(run_id)}</a></p>" + "".join(H.test_detail(store, r) for r in rs)
    return H.page(f"fleet · {board} · {test}", body, NAV)


def trends_page(store, suite: str | None, metric: str | None) -> str:
    from fleet.report import plots as P

    suites = store.suites()
    suite = suite or (suites[0] if suites else None)
    body = ["<h1>Trends</h1><p>suites: " + " ".join(f"<a href=\"/trends?suite={H.e(q(s))}\">{H.e(s)}</a>"
                                                   for s in suites) + "</p>"]
    if suite:
        metrics = store.metric_names(suite)
        metric = metric or ("latency_p50_ms" if "latency_p50_ms" in metrics else (metrics[0] if metrics else None))
        body.append("<p>metrics: " + " ".join(
            f"<a href=\"/trends?suite={H.e(q(suite))}&amp;metric={H.e(q(m))}\">{H.e(m)}</a>" for m in metrics) + "</p>")
        if metric:
            ser = regress.series(store, suite, metric)
            unit = next((p["unit"] for pts in ser.values() for p in pts), "")
            svg = P.trend_plot(ser, metric, unit or "")
            body.append(f"<h2>{H.e(metric)} · {H.e(suite)}</h2>"
                        + (f"<div class=\"plot trend\">{svg}</div>" if svg else "<p class=muted>no data</p>"))
    return H.page("fleet · trends", "".join(body), NAV)


def compare_page(store, a: str | None, b: str | None) -> str:
    runs = store.runs(50)
    opts = lambda sel: "".join(f"<option value=\"{H.e(r['id'])}\"{' selected' if r['id'] == sel else ''}>"
                               f"{H.e(r['id'])} · {H.e(r['suite'])}</option>" for r in runs)
    a = a or (runs[1]["id"] if len(runs) > 1 else None)
    b = b or (runs[0]["id"] if runs else None)
    body = [f"<h1>Compare runs</h1><form method=get action=/compare><select name=a>{opts(a)}</select> vs "
            f"<select name=b>{opts(b)}</select> <button>compare</button></form>"]
    if a and b and store.run(a) and store.run(b):
        vals: dict = {}
        for col, rid in (("a", a), ("b", b)):
            for r in store.results(rid):
                for m in r.metrics:
                    vals.setdefault((r.board, r.test, m.name, m.unit, m.direction), {})[col] = m.value
        rows = []
        for (board, test, name, unit, direction), v in vals.items():
            d = (v["b"] - v["a"]) if "a" in v and "b" in v and v["a"] is not None and v["b"] is not None else None
            pct = f"{100 * d / abs(v['a']):+.1f}%" if d is not None and v["a"] else "–"
            worse = d is not None and ((direction == "lower" and d > 0) or (direction == "higher" and d < 0))
            rows.append(f"<tr><td>{H.e(board)}</td><td>{H.e(test)}</td><td>{H.e(name)}</td>"
                        f"<td class=num>{H.e(H.fmt(v.get('a'), unit))}</td><td class=num>{H.e(H.fmt(v.get('b'), unit))}</td>"
                        f"<td class=\"num {'regression' if worse and d else ''}\">{H.e(pct)}</td></tr>")
        body.append(f"<table id=compare><tr><th>board</th><th>test</th><th>metric</th><th>{H.e(a)}</th>"
                    f"<th>{H.e(b)}</th><th>Δ</th></tr>{''.join(rows)}</table>")
    return H.page("fleet · compare", "".join(body), NAV)


class Handler(BaseHTTPRequestHandler):
    server_version = "fleet-dashboard"
    db_path: Path

    def log_message(self, fmt, *args):  # quiet; errors still reach stderr via send_error
        pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        qs = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            store = ReadOnlyStore(self.db_path)
        except (FileNotFoundError, sqlite3.Error, FleetError) as e:
            return self._send(503, H.page("fleet", f"<h1>no results store</h1><p>{H.e(e)}</p>"))
        try:
            page = None
            if not parts:
                page = fleet_page(store)
            elif parts[0] == "run" and len(parts) == 2:
                page = run_page(store, parts[1])
            elif parts[0] == "run" and len(parts) == 5 and parts[2] == "test":
                page = test_page(store, parts[1], parts[3], parts[4])
            elif parts == ["trends"]:
                page = trends_page(store, qs.get("suite"), qs.get("metric"))
            elif parts == ["compare"]:
                page = compare_page(store, qs.get("a"), qs.get("b"))
            if page is None:
                return self._send(404, H.page("fleet · not found", f"<h1>not found</h1><p>{H.e(url.path)}</p>", NAV))
            self._send(200, page)
        except Exception as exc:  # a bug or an odd stored value: say so (escaped), keep serving
            traceback.print_exc(file=sys.stderr)
            self._send(500, H.page("fleet · error", f"<h1>this page failed</h1><p>{H.e(type(exc).__name__)}: "
                                   f"{H.e(exc)}</p><p>report it with the URL; other pages still work</p>", NAV))
        finally:
            store.close()

    def _read_only(self):
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard is read-only")

    do_POST = do_PUT = do_DELETE = do_PATCH = _read_only


def make_server(db_path: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A dashboard server for the store at ``db_path`` (a SQLite file or a SQLAlchemy URL; not
    started; port 0 picks a free port)."""
    from fleet.results.dburl import is_url

    handler = type("BoundHandler", (Handler,), {"db_path": db_path if is_url(db_path) else Path(db_path)})
    srv = ThreadingHTTPServer((host, port), handler)
    srv.daemon_threads = True
    return srv
