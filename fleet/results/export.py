"""Outputs derived from the results store (never computed separately): a metrics JSON per run,
Prometheus text exposition, a push to a Pushgateway, and the regressions view of ``fleet results``.

``fleet results [RUN] --metrics-json FILE | --prometheus [--push URL] | --regressions``.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from fleet.errors import FleetError
from fleet.results import regress

METRICS_SCHEMA = 1


def register_args(p) -> None:
    """Add the export options to the `fleet results` parser."""
    p.add_argument("--metrics-json", metavar="FILE", help="write the run's metrics JSON to FILE ('-' = stdout)")
    p.add_argument("--prometheus", action="store_true", help="print the run's metrics in Prometheus text format")
    p.add_argument("--push", metavar="URL", help="with --prometheus: push to this Pushgateway (e.g. http://pg:9091)")
    p.add_argument("--regressions", action="store_true",
                   help="judge every metric against the previous runs' median ± k·MAD")
    p.add_argument("--baseline-runs", type=int, default=regress.DEFAULT_RUNS, metavar="N",
                   help=f"earlier runs of the suite in the baseline (default {regress.DEFAULT_RUNS})")
    p.add_argument("--k", type=float, default=regress.DEFAULT_K, help="band width in scaled MADs (default 3)")
    p.add_argument("--fail-on-regression", action="store_true", help="with --regressions: exit 1 if any")


def wants_export(args) -> bool:
    return bool(getattr(args, "metrics_json", None) or getattr(args, "prometheus", False)
                or getattr(args, "regressions", False))


# -- metrics JSON ------------------------------------------------------------------------------
def metrics_json(store, run_id: str, with_regressions: bool = True, **regress_kw) -> dict:
    """The run as a metrics document (schema 1)::

        {"schema": 1, "run": {id, suite, status, started, finished, controller},
         "boards": [{name, board, accelerator, emulated, fingerprint}],
         "results": [{board, test, outcome, message, duration_s, emulated, backends,
                      metrics: [{name, value, unit, direction}]}],
         "regressions": [Verdict as dict, only the flagged ones]}

    Units are the store's (``ms``, ``ratio``, ``J``, ``W``, ``°C``, ``count``…); ``direction`` says
    which way is better. Raises FleetError for an unknown run.
    """
    run = store.run(run_id)
    if run is None:
        raise FleetError(f"no run '{run_id}' in {store.path}", "list runs with `fleet results --json`")
    boards = []
    for b in store.boards(run_id):
        info = b.get("info") or {}
        boards.append({"name": b["name"], "board": b.get("board"), "accelerator": b.get("accelerator"),
                       "emulated": b.get("emulated"), "fingerprint": info.get("doctor")})
    results = [{"board": r.board, "test": r.test, "outcome": r.outcome, "message": r.message,
                "duration_s": r.duration_s, "emulated": r.emulated, "backends": r.backends,
                "metrics": [{"name": m.name, "value": m.value, "unit": m.unit, "direction": m.direction}
                            for m in r.metrics]} for r in store.results(run_id)]
    doc = {"schema": METRICS_SCHEMA,
           "run": {k: run.get(k) for k in ("id", "suite", "status", "started", "finished", "controller")},
           "boards": boards, "results": results}
    if with_regressions:
        doc["regressions"] = [v.as_dict() for v in regress.regressions(store, run_id, **regress_kw) if v.flagged]
    return doc


def write_metrics_json(store, run_id: str, path: str | Path, **kw) -> Path:
    """Write :func:`metrics_json` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(metrics_json(store, run_id, **kw), indent=2, default=str))
    os.replace(tmp, path)
    return path


# -- Prometheus --------------------------------------------------------------------------------
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str, prefix: str = "fleet_") -> str:
    """A valid Prometheus metric name (``[a-zA-Z_:][a-zA-Z0-9_:]*``): other characters become ``_``,
    prefixed with ``prefix``."""
    n = _NAME_BAD.sub("_", prefix + str(name))
    return n if re.match(r"[a-zA-Z_:]", n) else "_" + n


def _label_value(v) -> str:
    # exposition format 0.0.4: label values escape backslash, double quote and line feed
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def prometheus_text(store, run_id: str) -> str:
    """The run in Prometheus text exposition format 0.0.4
    (https://prometheus.io/docs/instrumenting/exposition_formats/): one gauge family per metric
    (``fleet_<name>``, sanitized), labels ``board, suite, run, test, unit, emulated``; plus
    ``fleet_test_outcome`` (1 per test, label ``outcome``) and ``fleet_run_duration_seconds``.
    No timestamps (a Pushgateway refuses them). Families are contiguous, each with HELP and TYPE.
    """
    run = store.run(run_id)
    if run is None:
        raise FleetError(f"no run '{run_id}' in {store.path}", "list runs with `fleet results --json`")
    suite = run["suite"]
    families: dict[str, dict] = {}

    def add(name: str, help_: str, labels: dict, value: float) -> None:
        fam = families.setdefault(name, {"help": help_, "series": {}})
        key = tuple(sorted(labels.items()))
        fam["series"][key] = (labels, value)  # a repeated label set keeps the last value

    for r in store.results(run_id):
        base = {"board": r.board, "suite": suite, "run": run_id, "test": r.test,
                "emulated": "unknown" if r.emulated is None else str(bool(r.emulated)).lower()}
        add("fleet_test_outcome", "1 per test with its outcome (passed|failed|error|skipped)",
            {**base, "outcome": r.outcome}, 1.0)
        add("fleet_test_duration_seconds", "test duration", base, float(r.duration_s or 0.0))
        for m in r.metrics:
            if m.value is None:
                continue
            add(metric_name(m.name), f"{m.name} [{m.unit or '1'}], {m.direction or '?'} is better",
                {**base, "unit": m.unit or ""}, float(m.value))
    if run.get("finished") and run.get("started"):
        add("fleet_run_duration_seconds", "run wall time", {"suite": suite, "run": run_id},
            float(run["finished"] - run["started"]))
    lines = []
    for name in sorted(families):
        fam = families[name]
        lines.append(f"# HELP {name} {_help(fam['help'])}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in fam["series"].values():
            lab = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def _grouping_part(label: str, value: str) -> str:
    if "/" in value or not value:
        enc = base64.urlsafe_b64encode(value.encode()).decode() or "="
        return f"/{label}@base64/{enc}"
    return f"/{label}/{urllib.parse.quote(value, safe='')}"


def push(text: str, url: str, job: str = "fleet", grouping: dict | None = None, timeout: float = 10.0) -> int:
    """PUT ``text`` to a Pushgateway at ``url`` under ``/metrics/job/<job>[/<label>/<value>…]``
    (replacing the group's metrics). Returns the HTTP status.

    Raises:
        FleetError: on a connection error or a non-2xx reply.
    """
    path = "/metrics" + _grouping_part("job", job)
    for k, v in (grouping or {}).items():
        path += _grouping_part(k, str(v))
    req = urllib.request.Request(url.rstrip("/") + path, data=text.encode(), method="PUT",
                                 headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        raise FleetError(f"Pushgateway {url} refused the metrics: HTTP {e.code} {e.read()[:300]!r}",
                         "check the URL and that metric labels do not clash with the grouping key") from e
    except OSError as e:
        raise FleetError(f"cannot reach the Pushgateway at {url}: {e}", "check --push URL and the network") from e


# -- CLI ---------------------------------------------------------------------------------------
def cmd_export(store, run_id: str, args) -> int:
    """`fleet results` with --metrics-json / --prometheus [--push] / --regressions."""
    rc = 0
    if args.metrics_json:
        kw = {"runs": args.baseline_runs, "k": args.k}
        if args.metrics_json == "-":
            print(json.dumps(metrics_json(store, run_id, **kw), indent=2, default=str))
        else:
            print(f"wrote {write_metrics_json(store, run_id, args.metrics_json, **kw)}", file=sys.stderr)
    if args.prometheus:
        text = prometheus_text(store, run_id)
        if args.push:
            status = push(text, args.push, grouping={"suite": (store.run(run_id) or {}).get("suite", "")})
            print(f"pushed {text.count(chr(10))} lines to {args.push} (HTTP {status})", file=sys.stderr)
        else:
            sys.stdout.write(text)
    if args.regressions:
        verdicts = regress.regressions(store, run_id, runs=args.baseline_runs, k=args.k)
        if getattr(args, "json", False):
            print(json.dumps([v.as_dict() for v in verdicts], indent=2))
        else:
            print_regressions(verdicts, run_id)
        if args.fail_on_regression and any(v.status == "regression" for v in verdicts):
            rc = 1
    return rc


def print_regressions(verdicts: list, run_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"run {run_id} · metrics vs the previous runs' median ± k·MAD")
    for c in ("board", "test", "metric", "value", "baseline", "band", "Δ", "n", "status"):
        t.add_column(c, justify="right" if c in ("value", "baseline", "Δ", "n") else "left")
    colors = {"regression": "red", "improvement": "green", "ok": "white", "insufficient": "yellow"}
    for v in verdicts:
        t.add_row(v.board, v.test, v.metric, f"{v.value:.4g} {v.unit}",
                  "–" if v.median is None else f"{v.median:.4g}",
                  "–" if v.low is None else f"{v.low:.4g}…{v.high:.4g}",
                  "–" if v.delta_pct is None else f"{v.delta_pct:+.1f}%", str(v.n),
                  f"[{colors.get(v.status, 'white')}]{v.status}[/]")
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(t)
    flagged = [v for v in verdicts if v.status == "regression"]
    console.print(f"{len(flagged)} regression(s), {sum(v.status == 'improvement' for v in verdicts)} improvement(s)")
