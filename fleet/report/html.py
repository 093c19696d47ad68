"""HTML views of the results store, shared by ``fleet report`` (one static file) and
``fleet dashboard``. Every string from the store is HTML-escaped; plots are inline SVG; no
external assets, so a page opens offline.

``link`` arguments: a function ``(kind, **ids) -> href | None`` so the dashboard can link views
(the static report passes ``anchor_links`` and links within the page).
"""

from __future__ import annotations

import html
import json
import time
from collections import OrderedDict

from fleet.results import regress

OUTCOMES = ("passed", "failed", "error", "skipped", "not-run")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#fafbfc}
header{background:#1d2330;color:#fff;padding:.6em 1.2em}header a{color:#cfe3ff;margin-right:1em}
main{padding:1em 1.5em;max-width:1300px}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.88em}th,td{border:1px solid #d8dde3;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed{background:#d6f5dd}.failed{background:#ffd7d5}.error{background:#f3d4f5}.skipped,.not-run{background:#fff3c4}
.regression{color:#b00020;font-weight:600}.improvement{color:#0a7a2f;font-weight:600}.muted{color:#6b7480}
.emu{display:inline-block;font-size:.75em;background:#ffe9b0;border-radius:3px;padding:0 .3em;margin-left:.3em}
del.err{background:#ffd7d5;text-decoration:line-through}ins.err{background:#d6f5dd;text-decoration:none}
.sub{border-bottom:2px solid #b00020}.plot svg{max-width:100%;height:auto}details{margin:.4em 0}
code{font-size:.9em}
"""


def e(v) -> str:
    """HTML-escape anything (None → '')."""
    return html.escape("" if v is None else str(v), quote=True)


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        s = f"{v:.4g}"
    else:
        s = str(v)
    return f"{s} {unit}".strip()


def when(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "–"


def slug(*parts) -> str:
    """An HTML id from ``parts``, one-to-one: ASCII letters and digits kept, any other character
    as ``_<hex code>_`` and parts joined by ``-``, so ``test_x[a-b]`` and ``test_x[a_b]`` (two
    parameter sets of one test) get different anchors."""
    return "-".join("".join(ch if ch.isascii() and ch.isalnum() else f"_{ord(ch):x}_" for ch in str(p))
                    for p in parts)


def anchor_links(kind: str, **ids) -> str | None:
    """Links inside one static page (the report)."""
    if kind == "test":
        return "#" + slug("t", ids["board"], ids["test"])
    return None


def page(title: str, body: str, nav: str = "") -> str:
    """A complete HTML document with the inline stylesheet."""
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{e(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head>"
            f"<body><header><strong>fleet</strong> {nav}</header><main>{body}</main></body></html>")


# -- views -------------------------------------------------------------------------------------
def fleet_table(rows: list[dict]) -> str:
    """Fleet view: rows {name, board, accelerator, emulated, last_seen, health, fingerprint, run}."""
    out = ["<table id=\"fleet\"><tr><th>board</th><th>class</th><th>accelerator</th><th>emulated</th>"
           "<th>last seen</th><th>health</th><th>stack fingerprint</th><th>last run</th></tr>"]
    for b in rows:
        fp = b.get("fingerprint") or {}
        health = b.get("health") or "–"
        cls = {"pass": "passed", "passed": "passed", "fail": "failed", "failed": "failed",
               "error": "error"}.get(health, "")
        out.append(f"<tr data-board=\"{e(b['name'])}\"><td>{e(b['name'])}</td><td>{e(b.get('board'))}</td>"
                   f"<td>{e(b.get('accelerator'))}</td><td>{'yes' if b.get('emulated') else 'no'}</td>"
                   f"<td>{e(when(b.get('last_seen')))}</td><td class=\"{cls}\">{e(health)}</td>"
                   f"<td>{e(fp.get('status', '–'))}{' (ignored)' if fp.get('ignored') else ''} "
                   f"<span class=\"muted\">{e(b.get('stack_id', ''))}</span></td><td>{b.get('run_html', '')}</td></tr>")
    out.append("</table>")
    return "".join(out)


def fleet_rows(store, runs: int = 50) -> list[dict]:
    """The latest known state of every board over the last ``runs`` runs (Fleet view data)."""
    seen: dict[str, dict] = {}
    for run in store.runs(runs):
        for b in store.boards(run["id"]):
            if b["name"] in seen:
                continue
            info = b.get("info") or {}
            results = [r for r in store.results(run["id"]) if r.board == b["name"]]
            outcomes = {r.outcome for r in results}
            health = next((o for o in ("error", "failed") if o in outcomes), "passed" if outcomes else "not-run")
            stack = info.get("stack") or {}
            stack_id = (stack.get("os") or {}).get("name", "") if isinstance(stack, dict) else ""
            seen[b["name"]] = {**b, "last_seen": max([r.finished for r in results] or [run["started"]]),
                               "health": health, "fingerprint": info.get("doctor"), "stack_id": stack_id,
                               "run": run["id"]}
    return sorted(seen.values(), key=lambda r: r["name"])


def run_header(run: dict, boards: list[dict], results: list) -> str:
    counts = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
    dur = (run["finished"] - run["started"]) if run.get("finished") else None
    emu = [b["name"] for b in boards if b.get("emulated")]
    return (f"<h1>run <code>{e(run['id'])}</code> · {e(run['suite'])} · "
            f"<span class=\"{e(run['status'])}\">{e(run['status'])}</span></h1>"
            f"<p id=\"counts\">" + " · ".join(f"<span class=\"{o}\" data-count=\"{o}\">{o}: {counts[o]}</span>"
                                              for o in OUTCOMES if counts[o] or o in ("passed", "failed", "error"))
            + f"</p><p>started {e(when(run.get('started')))} · duration {e(fmt(dur, 's'))} · "
              f"controller {e(run.get('controller'))} · emulated boards: {e(', '.join(emu) or 'none')}</p>")


def matrix(boards: list[dict], results: list, link=anchor_links) -> str:
    """Suite × board matrix: one row per test, one column per board, cells coloured by outcome
    (``data-outcome``); a test a board did not run shows ``not-run``."""
    names = list(OrderedDict.fromkeys([b["name"] for b in boards] + [r.board for r in results]))
    emulated = {b["name"]: b.get("emulated") for b in boards}
    tests = list(OrderedDict.fromkeys(r.test for r in results))
    cell = {(r.board, r.test): r for r in results}
    out = ["<table id=\"matrix\"><tr><th>test \\ board</th>"]
    out += [f"<th>{e(n)}{'<span class=emu>emulated</span>' if emulated.get(n) else ''}</th>" for n in names]
    out.append("</tr>")
    for t in tests:
        out.append(f"<tr><th>{e(t)}</th>")
        for n in names:
            r = cell.get((n, t))
            oc = r.outcome if r else "not-run"
            txt = e(oc)
            href = link("test", board=n, test=t) if r else None
            if href:
                txt = f"<a href=\"{e(href)}\">{txt}</a>"
            title = e((r.message if r else "no result recorded")[:300])
            extra = f" · {r.duration_s:.1f}s" if r else ""
            out.append(f"<td class=\"{e(oc)}\" data-board=\"{e(n)}\" data-test=\"{e(t)}\" "
                       f"data-outcome=\"{e(oc)}\" title=\"{title}\">{txt}{e(extra)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def metrics_table(results: list) -> str:
    """Metric × board table (value with unit; direction in the row title)."""
    names = list(OrderedDict.fromkeys(r.board for r in results))
    rows: OrderedDict = OrderedDict()
    for r in results:
        for m in r.metrics:
            rows.setdefault((r.test, m.name, m.unit, m.direction), {})[r.board] = m.value
    if not rows:
        return "<p class=muted>no metrics recorded</p>"
    out = ["<table id=\"metrics\"><tr><th>test</th><th>metric</th><th>better</th>"]
    out += [f"<th>{e(n)}</th>" for n in names]
    out.append("</tr>")
    for (test, name, unit, direction), vals in rows.items():
        out.append(f"<tr><td>{e(test)}</td><td>{e(name)}</td><td>{e(direction)}</td>")
        out += [f"<td class=num>{e(fmt(vals.get(n), unit))}</td>" for n in names]
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def regressions_table(verdicts: list, only_flagged: bool = False) -> str:
    vs = [v for v in verdicts if v.flagged] if only_flagged else verdicts
    n_flag = sum(v.flagged for v in verdicts)
    head = (f"<p>{sum(v.status == 'regression' for v in verdicts)} regression(s), "
            f"{sum(v.status == 'improvement' for v in verdicts)} improvement(s); "
            f"{sum(v.status == 'insufficient' for v in verdicts)} metric(s) without enough history "
            f"(band = median ± {regress.DEFAULT_K:g}·MAD, MAD × {regress.MAD_SCALE}).</p>")
    if not vs:
        return head if n_flag or verdicts else "<p class=muted>no metrics to judge</p>"
    out = [head, "<table id=\"regressions\"><tr><th>board</th><th>test</th><th>metric</th><th>value</th>"
                 "<th>baseline median</th><th>band</th><th>Δ</th><th>n</th><th>status</th></tr>"]
    for v in vs:
        band = "–" if v.low is None else f"{v.low:.4g} … {v.high:.4g}"
        out.append(f"<tr><td>{e(v.board)}</td><td>{e(v.test)}</td><td>{e(v.metric)}</td>"
                   f"<td class=num>{e(fmt(v.value, v.unit))}</td><td class=num>{e(fmt(v.median))}</td>"
                   f"<td class=num>{e(band)}</td><td class=num>"
                   f"{e('–' if v.delta_pct is None else f'{v.delta_pct:+.1f}%')}</td><td class=num>{v.n}</td>"
                   f"<td class=\"{e(v.status)}\">{e(v.status)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def word_diff(reference: str, hypothesis: str) -> str:
    """Reference vs hypothesis with word errors marked (jiwer's alignment): deletions as
    ``<del class=err>``, insertions as ``<ins class=err>``, substitutions as both, side by side."""
    import jiwer

    ref, hyp = (reference or "").strip(), (hypothesis or "").strip()
    if not ref or not hyp:
        return (f"<del class=err>{e(ref)}</del>" if ref else "") + (f" <ins class=err>{e(hyp)}</ins>" if hyp else "")
    o = jiwer.process_words(ref, hyp)
    rw, hw = o.references[0], o.hypotheses[0]
    parts = []
    for c in o.alignments[0]:
        r = " ".join(rw[c.ref_start_idx:c.ref_end_idx])
        h = " ".join(hw[c.hyp_start_idx:c.hyp_end_idx])
        if c.type == "equal":
            parts.append(e(r))
        elif c.type == "delete":
            parts.append(f"<del class=err title=deleted>{e(r)}</del>")
        elif c.type == "insert":
            parts.append(f"<ins class=err title=inserted>{e(h)}</ins>")
        else:
            parts.append(f"<span class=sub title=substituted><del class=err>{e(r)}</del> "
                         f"<ins class=err>{e(h)}</ins></span>")
    return " ".join(parts)


def outputs_table(outputs) -> str:
    """Per-item outputs: text pairs (reference/hypothesis) with word errors marked, other fields as is."""
    if isinstance(outputs, dict):
        return f"<pre>{e(json.dumps(outputs, indent=1)[:20000])}</pre>"
    items = [o for o in outputs or [] if isinstance(o, dict)]
    if not items:
        return ""
    keys = [k for k in OrderedDict.fromkeys(k for o in items for k in o) if k not in ("reference", "hypothesis")]
    texts = any("reference" in o for o in items)
    out = ["<table class=outputs><tr>" + "".join(f"<th>{e(k)}</th>" for k in keys)
           + ("<th>reference vs hypothesis (<del class=err>missing</del> <ins class=err>extra</ins>)</th>"
              if texts else "") + "</tr>"]
    for o in items:
        out.append("<tr>" + "".join(f"<td class=num>{e(fmt(o.get(k)))}</td>" for k in keys))
        if texts:
            out.append(f"<td>{word_diff(str(o.get('reference', '')), str(o.get('hypothesis', '')))}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def item_latencies(outputs) -> list[float]:
    """Per-item latency in ms from outputs (``total_ms`` or ``ms`` of each item)."""
    vals = []
    for o in outputs if isinstance(outputs, list) else []:
        if isinstance(o, dict):
            v = o.get("total_ms", o.get("ms"))
            if isinstance(v, dict):
                v = v.get("total")
            if isinstance(v, (int, float)):
                vals.append(float(v))
    return vals


def test_detail(store, r, plots: bool = True) -> str:
    """One result: outcome, duration (setup + call + teardown) and node id, message, backends,
    metrics, outputs with errors marked, latency histogram and the telemetry plot
    (temperature/power, windows shaded, throttle marked)."""
    from fleet.report import plots as P

    out = [f"<h3 id=\"{slug('t', r.board, r.test)}\">{e(r.board)} · {e(r.test)} · "
           f"<span class=\"{e(r.outcome)}\">{e(r.outcome)}</span>"
           f"{'<span class=emu>emulated</span>' if r.emulated else ''}</h3>"
           f"<p class=\"duration muted\" data-duration-s=\"{r.duration_s:.3f}\">{r.duration_s:.1f} s "
           f"(setup + call + teardown){' · ' + e(r.nodeid) if r.nodeid else ''}</p>"]
    if r.message:
        out.append(f"<pre>{e(r.message[:4000])}</pre>")
    if r.backends:
        out.append("<p>backends: " + ", ".join(f"{e(k)}=<code>{e(v)}</code>" for k, v in r.backends.items()) + "</p>")
    if r.metrics:
        out.append("<table class=metrics><tr><th>metric</th><th>value</th><th>better</th></tr>" + "".join(
            f"<tr><td>{e(m.name)}</td><td class=num>{e(fmt(m.value, m.unit))}</td><td>{e(m.direction)}</td></tr>"
            for m in r.metrics) + "</table>")
    lat = item_latencies(r.outputs)
    if plots and lat:
        svg = P.latency_histogram({r.board: lat}, f"{r.board} · {r.test}: per-item latency")
        out.append(f"<div class=\"plot latency\">{svg}</div>")
    tel = store.telemetry(r.id, traces=True) if r.id is not None else {"traces": [], "aggregate": None}
    meas = (tel.get("aggregate") or {}).get("measurement") or {}
    if meas:
        out.append(f"<p>measurement: <strong class=\"{'passed' if meas.get('valid') else 'failed'}\">"
                   f"{e(meas.get('verdict'))}</strong> {e('; '.join(meas.get('reasons') or []))}</p>")
        lat = meas.get("latency") or {}
        if lat.get("n"):  # n beside the percentiles; a null one with why (fleet.measure.latency_stats)
            pct = [f"{k.removesuffix('_ms')} {fmt(lat.get(k), 'ms')}" for k in
                   ("p50_ms", "p90_ms", "p90_early_stopping_ms", "p99_ms") if k in lat]
            why = [f"{k.removesuffix('_ms')}: {v}" for k, v in (lat.get("unreported") or {}).items()]
            out.append(f"<p class=latency-n>latency n={e(lat['n'])}: {e(' · '.join(pct))}"
                       + (f" <span class=muted>(not reported: {e('; '.join(why))})</span>" if why else "") + "</p>")
    if plots and tel["traces"]:
        svg = P.telemetry_plot(tel["traces"], f"{r.board} · {r.test}: temperature and power")
        if svg:
            out.append(f"<div class=\"plot telemetry\" data-board=\"{e(r.board)}\">{svg}</div>")
    table = outputs_table(r.outputs)
    if table:
        out.append(f"<details open><summary>per-item outputs ({len(r.outputs)})</summary>{table}</details>")
    return "".join(out)


def render_report(store, run_id: str, baseline_runs: int = regress.DEFAULT_RUNS) -> str:
    """The run as one self-contained HTML page: header with counts, matrix, fleet (boards with
    fingerprint), per-board metrics, regressions against the previous ``baseline_runs`` runs,
    a latency histogram over boards, and every test's detail. Raises FleetError for an unknown run."""
    from fleet.errors import FleetError
    from fleet.report import plots as P

    run = store.run(run_id)
    if run is None:
        raise FleetError(f"no run '{run_id}' in {store.path}", "list runs with `fleet results --json`")
    boards = store.boards(run_id)
    results = store.results(run_id)
    verdicts = regress.regressions(store, run_id, runs=baseline_runs)
    rows = []
    for b in boards:
        info = b.get("info") or {}
        rs = [r for r in results if r.board == b["name"]]
        oc = {r.outcome for r in rs}
        rows.append({**b, "last_seen": max([r.finished for r in rs] or [run["started"]]),
                     "health": next((o for o in ("error", "failed") if o in oc), "passed" if oc else "not-run"),
                     "fingerprint": info.get("doctor")})
    body = [run_header(run, boards, results), "<h2>Matrix</h2>", matrix(boards, results),
            "<h2>Boards</h2>", fleet_table(rows), "<h2>Metrics</h2>", metrics_table(results),
            "<h2>Regressions</h2>", regressions_table(verdicts, only_flagged=True)]
    lat = {}
    for r in results:
        lat.setdefault(r.board, []).extend(item_latencies(r.outputs))
    svg = P.latency_histogram(lat, "per-item latency by board")
    if svg:
        body += ["<h2>Latency</h2>", f"<div class=\"plot latency\">{svg}</div>"]
    body.append("<h2>Tests</h2>")
    body += [test_detail(store, r) for r in results]
    body.append(f"<p class=muted>generated {e(when(time.time()))} from {e(store.path)} by fleet report</p>")
    return page(f"fleet report {run_id}", "".join(body))
