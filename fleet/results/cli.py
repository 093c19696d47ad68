"""`fleet results [RUN] [--json]`: the store's view of a run, a row per board."""

from __future__ import annotations

import json
import sys

from fleet.errors import FleetError

# metrics shown as columns when a run has them: (metric name, column title, format)
COLUMNS = [
    ("wer", "WER", "{:.1%}"),
    ("cer", "CER", "{:.1%}"),
    ("latency_p50_ms", "p50 ms", "{:.0f}"),
    ("latency_p90_ms", "p90 ms", "{:.0f}"),
    ("rtf", "RTF", "{:.3f}"),
]


def register(sub) -> None:
    p = sub.add_parser("results", help="show a run's results per board (default: the latest run)")
    p.add_argument("run", nargs="?", help="run id (default: latest)")
    p.add_argument("--db", help="results store (default results/fleet.db or $FLEET_DB)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_results)


def summarize(store, run_id: str) -> dict:
    """The run as plain data: run row, and per board its outcome counts, metrics and backends."""
    run = store.run(run_id)
    if run is None:
        raise FleetError(f"no run '{run_id}' in {store.path}", "list runs with `fleet results --json` or omit RUN")
    boards = {b["name"]: {**b, "outcomes": {}, "metrics": {}, "backends": {}, "tests": []}
              for b in store.boards(run_id)}
    for r in store.results(run_id):
        b = boards.setdefault(r.board, {"name": r.board, "emulated": r.emulated, "outcomes": {},
                                        "metrics": {}, "backends": {}, "tests": []})
        b["outcomes"][r.outcome] = b["outcomes"].get(r.outcome, 0) + 1
        b["tests"].append({"test": r.test, "outcome": r.outcome, "message": r.message,
                           "duration_s": r.duration_s,
                           "metrics": [m.__dict__ for m in r.metrics]})
        for m in r.metrics:
            b["metrics"][m.name] = {"value": m.value, "unit": m.unit, "direction": m.direction}
        b["backends"].update(r.backends)
        if r.emulated is not None:
            b["emulated"] = r.emulated
    return {"run": run, "boards": list(boards.values())}


def board_outcome(b: dict) -> str:
    o = b["outcomes"]
    if not o:
        return "not-run"
    for k in ("error", "failed"):
        if o.get(k):
            return k
    return "passed" if o.get("passed") else next(iter(o))


def cmd_results(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from fleet.results.store import open_store

    store = open_store(args.db)
    run_id = args.run or store.latest_run()
    if not run_id:
        raise FleetError(f"the results store {store.path} has no runs yet", "run `fleet test SUITE_DIR` first")
    data = summarize(store, run_id)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    run = data["run"]
    t = Table(title=f"run {run_id} · {run['suite']} · {run['status']}")
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
        backend = " ".join(f"{s[:3]}:{be}" for s, be in b["backends"].items() if s != "mel") or "–"
        t.add_row(b["name"], f"[{colors.get(oc, 'white')}]{oc}[/]", counts, *cells, backend,
                  "yes" if b.get("emulated") else "no")
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(t)
    for b in data["boards"]:
        for tr in b["tests"]:
            if tr["outcome"] in ("failed", "error"):
                console.print(f"[bold]{b['name']}[/] {tr['test']}: {tr['outcome']}: {tr['message'][:300]}")
    return 0
