"""`fleet results [RUN] [--json] [--telemetry] [--csv DIR]`: the store's view of a run, a row per
board; ``--telemetry`` adds, per board and measured test, the measurement verdict (VALID/INVALID
with reasons), latency n beside p50/p90, the p90 early-stopping estimate and p99 (a percentile
from too few samples shows "–" and a note why), temperatures, power, energy per inference,
throttle events and frequency drops; ``--csv DIR`` writes every telemetry trace as CSV."""

from __future__ import annotations

import sys

from fleet.errors import FleetError

# metrics shown as columns when a run has them: (metric name, column title, format)
COLUMNS = [
    ("wer", "WER", "{:.1%}"),
    ("cer", "CER", "{:.1%}"),
    ("latency_n", "n", "{:.0f}"),  # the samples behind the percentiles, always beside them
    ("latency_p50_ms", "p50 ms", "{:.0f}"),
    ("latency_p90_ms", "p90 ms", "{:.0f}"),
    ("latency_p99_ms", "p99 ms", "{:.0f}"),
    ("energy_per_inference_j", "J/inf", "{:.2f}"),
    ("rtf", "RTF", "{:.3f}"),
]


# stages whose backend the table shows: the NPU candidates and the CPU decoder
KEY_STAGES = ("encoder", "decoder", "inference")


def register(sub) -> None:
    p = sub.add_parser("results", help="show a run's results per board (default: the latest run)")
    p.add_argument("run", nargs="?", help="run id (default: latest)")
    p.add_argument("--db", help="results store: a SQLite file or a SQLAlchemy URL such as "
                   "postgresql+psycopg://USER@HOST/DB (default $FLEET_DB, else results/fleet.db)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--telemetry", action="store_true",
                   help="show the measurement verdict, thermals, power and energy per board")
    p.add_argument("--csv", metavar="DIR", help="export the run's telemetry traces as CSV under DIR")
    _export().register_args(p)  # --metrics-json FILE, --prometheus [--push URL], --regressions
    p.set_defaults(func=cmd_results)


def _export():
    from fleet.results import export

    return export


def summarize(store, run_id: str, telemetry: bool = False) -> dict:
    """The run as plain data: run row, and per board its outcome counts, metrics (a parametrised
    test's under ``name[params]``, e.g. ``hybrid_ndcg_at_10[cisi]``), tests and backends;
    with ``telemetry`` each test that has telemetry also carries its aggregate
    ({summary, measurement, headline}; traces stay in the store). ``fingerprint`` per board is the
    stack verdict taken when its session opened (``doctor`` in its info: status, failures,
    ignored); ``run.fingerprint_ignored`` lists boards that ran despite a failing fingerprint.
    ``arch``, ``cpu_emulated`` (e.g. qemu-user; None = native) and ``selection`` ({name: smoke|full,
    items, why}) per board label each of its results (fleet.runner.emulation); ``run.smoke``
    lists the boards that ran the smoke selection."""
    run = store.run(run_id)
    if run is None:
        raise FleetError(f"no run '{run_id}' in {store.path}", "list runs with `fleet results --json` or omit RUN")
    boards = {b["name"]: {**b, "outcomes": {}, "metrics": {}, "backends": {}, "tests": []}
              for b in store.boards(run_id)}
    for r in store.results(run_id):
        b = boards.setdefault(r.board, {"name": r.board, "emulated": r.emulated, "outcomes": {},
                                        "metrics": {}, "backends": {}, "tests": []})
        b["outcomes"][r.outcome] = b["outcomes"].get(r.outcome, 0) + 1
        b["tests"].append({"test": r.test, "nodeid": r.nodeid, "outcome": r.outcome, "message": r.message,
                           "duration_s": r.duration_s,
                           "metrics": [m.__dict__ for m in r.metrics]})
        if telemetry:
            tel = store.telemetry(r.id, traces=False)
            if tel["aggregate"] is not None or tel["traces"]:
                b["tests"][-1]["telemetry"] = {**(tel["aggregate"] or {}), "traces": len(tel["traces"])}
        params = r.test[len(r.test.split("[", 1)[0]):]  # "[cisi]": a parametrised test's metrics stay apart
        for m in r.metrics:
            b["metrics"][m.name + params] = {"value": m.value, "unit": m.unit, "direction": m.direction}
        b["backends"].update(r.backends)
        if r.emulated is not None:
            b["emulated"] = r.emulated
    for b in boards.values():
        info = b.get("info") or {}
        doc = info.get("doctor")
        if doc:
            b["fingerprint"] = doc
        # labels every result of the board carries (fleet.runner.emulation.board_labels)
        b["arch"] = info.get("arch") or (info.get("cpu") or {}).get("machine")
        b["cpu_emulated"] = info.get("cpu_emulated")
        if info.get("selection"):
            b["selection"] = info["selection"]
    run = {**run, "fingerprint_ignored": sorted(b["name"] for b in boards.values()
                                                if (b.get("fingerprint") or {}).get("ignored")),
           "smoke": sorted(b["name"] for b in boards.values() if (b.get("selection") or {}).get("name") == "smoke")}
    return {"run": run, "boards": list(boards.values())}


def board_outcome(b: dict) -> str:
    o = b["outcomes"]
    if not o:
        return "not-run"
    for k in ("error", "failed"):
        if o.get(k):
            return k
    if o.get("passed"):
        return "passed"
    return "not-run" if o.get("not-run") else next(iter(o))


def open_read_only(db: str | None):
    """The results store at ``db`` ($FLEET_DB, results/fleet.db) opened read-only: commands that
    only read never create a store (or its folder) where none was.

    Raises:
        FleetError: no store there (exit 2), or as :class:`fleet.results.store.Store`.
    """
    from fleet.results.store import db_location, open_store

    try:
        return open_store(db, read_only=True)
    except FileNotFoundError:
        raise FleetError(f"no results store at {db_location(db)}",
                         "give the store `fleet test` wrote with --db (or $FLEET_DB), or run `fleet test SUITE_DIR` first") from None


def cmd_results(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from fleet import jsonout

    if getattr(args, "push", None) and not getattr(args, "prometheus", False):
        raise FleetError(f"--push {args.push} needs --prometheus (it pushes the Prometheus text of the run)",
                         f"add --prometheus: fleet results --prometheus --push {args.push}")
    store = open_read_only(args.db)
    run_id = args.run or store.latest_run()
    if not run_id:
        raise FleetError(f"the results store {store.path} has no runs yet", "run `fleet test SUITE_DIR` first")
    if _export().wants_export(args):
        return _export().cmd_export(store, run_id, args)
    data = summarize(store, run_id, telemetry=args.telemetry)
    written = []
    if args.csv:
        from fleet.measure.report import export_csv

        written = export_csv(store, run_id, args.csv)
    if args.json:
        if args.csv:
            data["csv"] = [str(p) for p in written]
        print(jsonout.dumps(data))
        return 0
    run = data["run"]
    label = " · FINGERPRINT IGNORED" if run.get("fingerprint_ignored") else ""
    if run.get("smoke"):
        label += " · SMOKE SELECTION"
    t = Table(title=f"run {run_id} · {run['suite']} · {run['status']}{label}")
    t.add_column("board")
    t.add_column("outcome")
    t.add_column("passed")
    shown = [c for c in COLUMNS if any(c[0] in b["metrics"] for b in data["boards"])]
    for _, title, _ in shown:
        t.add_column(title, justify="right")
    t.add_column("backend")
    t.add_column("emulated")
    colors = {"passed": "green", "failed": "red", "error": "magenta", "not-run": "yellow"}
    for b in data["boards"]:
        oc = board_outcome(b)
        counts = f"{b['outcomes'].get('passed', 0)}/{sum(b['outcomes'].values())}"
        cells = [fmt.format(b["metrics"][name]["value"]) if name in b["metrics"] else "–" for name, _, fmt in shown]
        # the stages whose backend matters (the NPU candidates and the CPU decoder)
        backend = " ".join(f"{s[:3]}:{be}" for s, be in b["backends"].items() if s in KEY_STAGES) or "–"
        emu = "yes" if b.get("emulated") else "no"
        if b.get("cpu_emulated"):
            emu += f" · {b.get('arch') or '?'} CPU {b['cpu_emulated']}"
        if (b.get("selection") or {}).get("name") == "smoke":
            emu += " · smoke"
        t.add_row(b["name"], f"[{colors.get(oc, 'white')}]{oc}[/]", counts, *cells, backend, emu)
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(t)
    for b in data["boards"]:
        sel = b.get("selection") or {}
        if b.get("cpu_emulated") or sel.get("name") == "smoke":
            what = (f"{b.get('arch') or '?'}, CPU emulated by {b['cpu_emulated']}: latency INVALID, never judged"
                    if b.get("cpu_emulated") else f"{b.get('arch') or '?'}")
            if sel.get("name") == "smoke":
                what += f"; smoke selection ({sel.get('why')}): {', '.join(sel.get('items') or []) or 'the suite options'}"
            console.print(f"[bold]{b['name']}[/] {what}")
        fp = b.get("fingerprint") or {}
        if fp.get("ignored"):
            console.print(f"[bold]{b['name']}[/] [yellow]ran with a failing stack fingerprint "
                          f"(--ignore-fingerprint)[/]: {fp.get('reason', '')[:400]}")
        for tr in b["tests"]:
            if tr["outcome"] in ("failed", "error", "not-run"):
                console.print(f"[bold]{b['name']}[/] {tr['test']}: {tr['outcome']}: {tr['message'][:300]}")
    if args.telemetry:
        _print_telemetry(console, data)
    if args.csv:
        console.print(f"wrote {len(written)} CSV file(s) under {args.csv}")
    return 0


def _fmt(v, spec: str) -> str:
    return "–" if v is None or v == "" else spec.format(v)


def _print_telemetry(console, data: dict) -> None:
    """The measurement table: one row per board and test with telemetry."""
    from rich.table import Table

    from fleet.measure.report import headline

    t = Table(title="measurements (telemetry sampled during every request; emu = emulated model)")
    for col, just in (("board", "left"), ("test", "left"), ("verdict", "left"), ("n", "right"),
                      ("p50 ms", "right"), ("p90 ms", "right"), ("p90 ES ms", "right"), ("p99 ms", "right"),
                      ("min–max ms", "right"),
                      ("°C max/mean", "right"), ("power W", "right"), ("J/inf", "right"),
                      ("throttle", "right"), ("f-drops", "right")):
        t.add_column(col, justify=just)
    notes = []
    for b in data["boards"]:
        for tr in b["tests"]:
            tel = tr.get("telemetry")
            if not tel:
                continue
            meas = tel.get("measurement") or {}
            lat = meas.get("latency") or {}
            h = tel.get("headline") or headline(tel.get("summary"))
            verdict = meas.get("verdict", "–")
            color = {"VALID": "green", "INVALID": "red"}.get(verdict, "white")
            temp = "–"
            if "temp_max_c" in h:
                temp = f"{h['temp_max_c']:.1f}/{h['temp_mean_c']:.1f}" + (" emu" if h.get("temp_emulated") else "")
            power = "–"
            if "power_mean_w" in h:
                power = f"{h['power_mean_w']:.2f}" + (" emu" if h.get("power_emulated") else "")
            t.add_row(b["name"], tr["test"], f"[{color}]{verdict}[/]", _fmt(lat.get("n"), "{}"),
                      _fmt(lat.get("p50_ms"), "{:.0f}"), _fmt(lat.get("p90_ms"), "{:.0f}"),
                      _fmt(lat.get("p90_early_stopping_ms"), "{:.0f}"), _fmt(lat.get("p99_ms"), "{:.0f}"),
                      f"{lat['min_ms']:.0f}–{lat['max_ms']:.0f}" if "min_ms" in lat else "–",
                      temp, power, _fmt(h.get("energy_per_inference_j"), "{:.2f}"),
                      str(h.get("throttle_events", 0)) if h.get("throttle_checked") else "unchecked",
                      str(h.get("freq_drops", 0)))
            for r in meas.get("reasons", []):
                notes.append(f"[bold]{b['name']}[/] {tr['test']}: [red]INVALID[/]: {r}")
            if h.get("power_channel"):
                notes.append(f"{b['name']} {tr['test']}: power = {h['power_channel']}"
                             + (f" ({h['power_note']})" if h.get("power_note") else ""))
            for n in meas.get("notes", []):
                notes.append(f"{b['name']} {tr['test']}: note: {n}")
            for key, why in (lat.get("unreported") or {}).items():  # null percentiles (fleet.measure)
                notes.append(f"{b['name']} {tr['test']}: {key.removesuffix('_ms')} not reported: {why}")
    if not t.rows:
        console.print("no telemetry recorded in this run")
        return
    console.print(t)
    for n in notes:
        console.print(n)
