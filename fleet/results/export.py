"""Outputs derived from the results store (never computed separately): a metrics JSON per run,
Prometheus text exposition, a push to a Pushgateway, and the regressions view of ``fleet results``.

``fleet results [RUN] --metrics-json FILE | --prometheus [--push URL] | --regressions``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
from pathlib import Path

from fleet import jsonout
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
         "results": [{board, test, nodeid, outcome, message, duration_s, emulated, backends,
                      metrics: [{name, value, unit, direction}]}],
         "regressions": [Verdict as dict, only the flagged ones]}

    ``started``/``finished`` are seconds since the epoch here; the file and stdout get them as
    ISO 8601 UTC (fleet.jsonout), as every ``--json`` does. ``test`` is the result's key (name with parameters, ``test_retrieval_quality[cisi]``), ``nodeid``
    the pytest node id ("" for rows stored before it was kept). Units are the store's (``ms``,
    ``ratio``, ``J``, ``W``, ``°C``, ``count``…); ``direction`` says which way is better.
    Raises FleetError for an unknown run.
    """
    run = store.run(run_id)
    if run is None:
        raise FleetError(f"no run '{run_id}' in {store.path}", "list runs with `fleet results --json`")
    boards = []
    for b in store.boards(run_id):
        info = b.get("info") or {}
        boards.append({"name": b["name"], "board": b.get("board"), "accelerator": b.get("accelerator"),
                       "emulated": b.get("emulated"), "fingerprint": info.get("doctor")})
    results = [{"board": r.board, "test": r.test, "nodeid": r.nodeid, "outcome": r.outcome, "message": r.message,
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
    tmp.write_text(jsonout.dumps(metrics_json(store, run_id, **kw)))
    os.replace(tmp, path)
    return path


# -- Prometheus --------------------------------------------------------------------------------
# Exposition and push through prometheus_client (CollectorRegistry, generate_latest,
# push_to_gateway): https://prometheus.github.io/client_python/
#
# Names follow https://prometheus.io/docs/practices/naming/: one family per quantity, in base units
# (seconds, joules, watts, celsius; ratios and counts unitless), prefixed ``fleet_``. Every result
# series has the labels suite, board, accelerator and test (the test's key with its parameters,
# e.g. test_retrieval_quality[cisi]); all of them are bounded by the suite and the inventory. The
# run id changes every run, so it is only on the info metric fleet_run_info (one series per
# push group), never on the result series. Units are in the family name, not in a label, so one
# family never mixes units (and sum/avg over its labels stays meaningful, per the naming page);
# for the same reason the store's metric name is the family name rather than a "metric" label.

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")

#: store unit -> (Prometheus base unit suffix, factor to it, name suffixes that already say the
#: store unit and are replaced). "" = unitless (ratios, counts, booleans).
BASE_UNITS = {
    "ms": ("seconds", 1e-3, ("_ms", "_milliseconds")),
    "s": ("seconds", 1.0, ("_s", "_seconds", "_sec")),
    "us": ("seconds", 1e-6, ("_us", "_microseconds")),
    "J": ("joules", 1.0, ("_j", "_joules")),
    "mJ": ("joules", 1e-3, ("_mj", "_millijoules")),
    "W": ("watts", 1.0, ("_w", "_watts")),
    "mW": ("watts", 1e-3, ("_mw", "_milliwatts")),
    "°C": ("celsius", 1.0, ("_c", "_celsius")),
    "ratio": ("", 1.0, ("_ratio",)),
    "count": ("", 1.0, ()),
    "bool": ("", 1.0, ()),
    "": ("", 1.0, ()),
}

#: the labels of every result series, in this order
RESULT_LABELS = ("suite", "board", "accelerator", "test")


def metric_name(name: str, prefix: str = "fleet_") -> str:
    """A valid Prometheus metric name (``[a-zA-Z_:][a-zA-Z0-9_:]*``): other characters become ``_``,
    prefixed with ``prefix``."""
    n = _NAME_BAD.sub("_", prefix + str(name))
    return n if re.match(r"[a-zA-Z_:]", n) else "_" + n


def base_unit(name: str, unit: str, value: float) -> tuple[str, float]:
    """(family name, value) of a stored metric in Prometheus base units: ``latency_p50_ms`` 812.0
    ``ms`` -> (``fleet_latency_p50_seconds``, 0.812); ``energy_per_inference_j`` ``J`` ->
    ``fleet_energy_per_inference_joules``; ``wer`` ``ratio`` -> ``fleet_wer``. A unit not in
    :data:`BASE_UNITS` (``cents``, ``dB``) is kept as the name's suffix, value unchanged."""
    stem = _NAME_BAD.sub("_", str(name))
    if unit in BASE_UNITS:
        suffix, factor, said = BASE_UNITS[unit]
        for s in said:
            if stem.lower().endswith(s) and len(stem) > len(s):
                stem = stem[:-len(s)]
                break
    else:
        suffix, factor = _NAME_BAD.sub("_", unit).strip("_").lower(), 1.0
        if suffix and stem.lower().endswith("_" + suffix):
            stem = stem[:-len(suffix) - 1]
    return metric_name(stem + (f"_{suffix}" if suffix else "")), float(value) * factor


class RunCollector:
    """A prometheus_client collector of one stored run (read when collected).

    Families: ``fleet_run_info`` (suite, run_id, status, controller), ``fleet_board_info`` (suite,
    board, board_class, accelerator, emulated), ``fleet_run_start_time_seconds`` and
    ``fleet_run_duration_seconds`` (suite), and per result (labels :data:`RESULT_LABELS`):
    ``fleet_test_outcome`` (1, with label ``outcome``), ``fleet_test_duration_seconds`` (setup +
    call + teardown) and one gauge per stored metric in base units (:func:`base_unit`).
    No timestamps (a Pushgateway refuses them).
    """

    def __init__(self, store, run_id: str):
        self.store = store
        self.run_id = run_id

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        run = self.store.run(self.run_id)
        if run is None:
            raise FleetError(f"no run '{self.run_id}' in {self.store.path}", "list runs with `fleet results --json`")
        suite = run["suite"]
        boards = {b["name"]: b for b in self.store.boards(self.run_id)}
        yield InfoMetricFamily("fleet_run", "the run these metrics come from (its id lives here only)",
                               value={"suite": suite, "run_id": self.run_id, "status": str(run.get("status") or ""),
                                      "controller": str(run.get("controller") or "")})
        info = InfoMetricFamily("fleet_board", "boards of the run",
                                labels=("suite", "board", "board_class", "accelerator", "emulated"))
        for name, b in sorted(boards.items()):
            info.add_metric([suite, name, str(b.get("board") or ""), str(b.get("accelerator") or ""),
                             str(bool(b.get("emulated"))).lower()], {})
        yield info
        if run.get("started"):
            yield self._one("fleet_run_start_time_seconds", "when the run started (Unix time)", suite, run["started"])
        if run.get("finished") and run.get("started"):
            yield self._one("fleet_run_duration_seconds", "run wall time", suite, run["finished"] - run["started"])
        outcome = GaugeMetricFamily("fleet_test_outcome", "1 per test with its outcome "
                                    "(passed|failed|error|skipped|not-run)", labels=(*RESULT_LABELS, "outcome"))
        duration = GaugeMetricFamily("fleet_test_duration_seconds", "test duration: setup + call + teardown",
                                     labels=RESULT_LABELS)
        families: dict[str, GaugeMetricFamily] = {}
        seen: set = set()  # (family, labels): a repeated series keeps its first value
        for r in self.store.results(self.run_id):
            labels = [suite, r.board, str((boards.get(r.board) or {}).get("accelerator") or "unknown"), r.test]
            if ("outcome", *labels) not in seen:
                seen.add(("outcome", *labels))
                outcome.add_metric([*labels, r.outcome], 1.0)
                duration.add_metric(labels, float(r.duration_s or 0.0))
            for m in r.metrics:
                if m.value is None:
                    continue
                name, value = base_unit(m.name, m.unit or "", m.value)
                if name in ("fleet_test_outcome", "fleet_test_duration_seconds") or (name, *labels) in seen:
                    continue
                seen.add((name, *labels))
                if name not in families:
                    families[name] = GaugeMetricFamily(
                        name, f"{m.name} [{m.unit or '1'}] in base units, {m.direction or '?'} is better",
                        labels=RESULT_LABELS)
                families[name].add_metric(labels, value)
        yield outcome
        yield duration
        for name in sorted(families):
            yield families[name]

    @staticmethod
    def _one(name: str, help_: str, suite: str, value: float):
        from prometheus_client.core import GaugeMetricFamily

        fam = GaugeMetricFamily(name, help_, labels=("suite",))
        fam.add_metric([suite], float(value))
        return fam


def registry(store, run_id: str):
    """A ``prometheus_client.CollectorRegistry`` holding the run (:class:`RunCollector`).

    Raises:
        FleetError: unknown run.
    """
    from prometheus_client import CollectorRegistry

    if store.run(run_id) is None:
        raise FleetError(f"no run '{run_id}' in {store.path}", "list runs with `fleet results --json`")
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RunCollector(store, run_id))
    return reg


def prometheus_text(store, run_id: str) -> str:
    """The run in Prometheus text exposition format 0.0.4
    (https://prometheus.io/docs/instrumenting/exposition_formats/), by
    ``prometheus_client.generate_latest`` over :func:`registry`. Raises FleetError for an unknown run."""
    from prometheus_client import generate_latest

    return generate_latest(registry(store, run_id)).decode("utf-8")


def push(store, run_id: str, url: str, job: str = "fleet", grouping: dict | None = None,
         timeout: float = 10.0) -> int:
    """PUT the run to a Pushgateway at ``url`` under ``/metrics/job/<job>[/<label>/<value>…]``
    (``prometheus_client.push_to_gateway``: replaces the group's metrics; values with ``/`` are
    base64-encoded). Returns the number of samples pushed.

    Raises:
        FleetError: unknown run, a connection error or a non-2xx reply.
    """
    from prometheus_client import push_to_gateway

    reg = registry(store, run_id)
    samples = sum(len(f.samples) for f in reg.collect())
    try:
        push_to_gateway(url, job=job, registry=reg, grouping_key=grouping or {}, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise FleetError(f"Pushgateway {url} refused the metrics: HTTP {e.code} {e.read()[:300]!r}",
                         "check the URL and that metric labels do not clash with the grouping key") from None
    except (OSError, ValueError) as e:
        raise FleetError(f"cannot push to the Pushgateway at {url}: {e}", "check --push URL and the network") from None
    return samples


# -- CLI ---------------------------------------------------------------------------------------
def cmd_export(store, run_id: str, args) -> int:
    """`fleet results` with --metrics-json / --prometheus [--push] / --regressions."""
    rc = 0
    if args.metrics_json:
        kw = {"runs": args.baseline_runs, "k": args.k}
        if args.metrics_json == "-":
            print(jsonout.dumps(metrics_json(store, run_id, **kw)))
        else:
            print(f"wrote {write_metrics_json(store, run_id, args.metrics_json, **kw)}", file=sys.stderr)
    if args.prometheus:
        if args.push:
            n = push(store, run_id, args.push, grouping={"suite": (store.run(run_id) or {}).get("suite", "")})
            print(f"pushed {n} samples to {args.push}", file=sys.stderr)
        else:
            sys.stdout.write(prometheus_text(store, run_id))
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
