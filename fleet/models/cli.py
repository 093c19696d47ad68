"""``fleet models``: build model artifacts (``fleet models build MODEL [--target cpu]``), list the
model recipes (``fleet models list``), parity and import.

Only argparse is imported at module level; torch and transformers load inside the handler. The
model names come from the recipe registry (fleet.models.recipes), whose modules import nothing
heavy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path


def _model_names(need: str | None = None) -> str:
    """The registry's model names for help texts (``need``: a Recipe attribute that must be set);
    a broken plug-in leaves the help text to ``fleet models list``, which reports it."""
    from fleet.errors import FleetError
    from fleet.models import recipes

    try:
        return ", ".join(r.name for r in recipes.all_recipes() if need is None or getattr(r, need))
    except FleetError:
        return "see fleet models list"


def register(subparsers) -> None:
    """Add ``models`` with its ``build``, ``list``, ``parity`` and ``import`` sub-commands to the
    ``fleet`` parser."""
    from fleet.models.build import targets as build_targets

    p = subparsers.add_parser("models", help="build model artifacts (ONNX; NPU graphs + HEF/RKNN)",
                              description="Build model artifacts and artifacts/manifest.json.")
    sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    b = sub.add_parser("build", help="build one model for one target",
                       description="Build, verify and record the artifacts of MODEL for TARGET. "
                                   "Does nothing if they are already built and unchanged.")
    b.add_argument("model", metavar="MODEL", help=f"one of: {_model_names()} (fleet models list)")
    b.add_argument("--target", default="cpu", metavar="TARGET",
                   help=f"one of: {', '.join(build_targets())} (default: cpu)")
    b.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="artifacts root (default: $FLEET_ARTIFACTS or <project>/artifacts)")
    b.add_argument("--force", action="store_true", help="rebuild even if up to date")
    b.add_argument("--require-compiler", action="store_true",
                   help="NPU targets: fail (exit 3) when the compiler (Hailo DFC, rknn-toolkit2) "
                        "is missing, instead of building graphs + calibration + emulation model "
                        "only")
    b.add_argument("--calib-n", type=int, default=64, metavar="N",
                   help="NPU targets: calibration samples per graph (default: 64)")
    b.add_argument("--json", action="store_true",
                   help="print the entries and measurements as JSON on stdout")
    b.set_defaults(func=cmd_build)
    register_list(sub)
    register_parity(sub)
    register_import(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def register_list(sub) -> None:
    """``fleet models list [--names | --json]`` (the recipe registry, fleet.models.recipes)."""
    q = sub.add_parser("list", help="the models fleet can build (one recipe each, plug-ins included)",
                       description="The model recipes: built-ins (fleet/models/recipes/) and plug-ins of the "
                                   "entry-point group fleet.recipes, with their cpu roles, NPU graphs, "
                                   "calibration data, parity pipeline and what the build verifies.")
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--names", action="store_true", help="one model name per line (for scripts and make)")
    fmt.add_argument("--json", action="store_true", help="print the recipes as JSON")
    q.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    """Handler of ``fleet models list``."""
    from fleet.models import recipes

    rows = [r.describe() for r in recipes.all_recipes()]
    if args.names:
        print("\n".join(r["name"] for r in rows))
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="model recipes (fleet models build MODEL [--target T])")
    for col in ("model", "NPU graphs", "calibration", "parity", "summary"):
        table.add_column(col, no_wrap=col != "summary")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["npu_graphs"]) or "-", ", ".join(r["calibration_data"]) or "-",
                      r["pipeline"] or "-", r["summary"])
    Console(soft_wrap=True).print(table)
    return 0


def register_parity(sub) -> None:
    """``fleet models parity MODEL [--target T] [--json]`` (fleet.models.parity)."""
    q = sub.add_parser("parity", help="fp32 reference vs what a target runs (emulated INT8), on the "
                                      "evaluation set",
                       description="Per-output cosine / max abs error and the task-metric delta (WER, "
                                   "recall@10) of the target's model against the fp32 reference; stored "
                                   "in the manifest entry (fleet.models.parity).")
    q.add_argument("model", metavar="MODEL", help=f"one of: {_model_names('pipeline')}")
    q.add_argument("--target", default="cpu", metavar="TARGET",
                   help="cpu (int8 dynamic), hailo8l, hailo8 or rk3588 (static QDQ INT8 emulation)")
    q.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                   help="artifacts root (default: $FLEET_ARTIFACTS or <project>/artifacts)")
    q.add_argument("--clips", type=int, default=None, metavar="N", help="Whisper: at most N evaluation clips")
    q.add_argument("--collection", default="cranfield", help="MiniLM: collection for recall@10")
    q.add_argument("--no-task-metric", action="store_true",
                   help="MiniLM: skip recall@10 (embeds the collection twice, ~2-3 min)")
    q.add_argument("--no-store", action="store_true", help="do not write the result into the manifest")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=cmd_parity)


def register_import(sub) -> None:
    """``fleet models import FILE --name NAME --target TARGET`` (fleet.models.importer)."""
    from fleet.models.importer import SPEC_HELP
    from fleet.models.importer import targets as import_targets

    q = sub.add_parser("import", help="import a lab's own .onnx / .hef / .rknn as a model fleet deploys",
                       description="Record FILE in the artifacts manifest as model NAME for TARGET, as "
                                   "`fleet models build` records its own (sha256, source, I/O, quantization, "
                                   "imported: true); `fleet deploy` then ships it to the boards that can run it "
                                   "and the model.bench pipeline (suites/model_bench) benchmarks it. FILE is "
                                   "copied, never changed (fleet.models.importer).")
    q.add_argument("file", type=Path, metavar="FILE", help=".onnx (any target), .hef (hailo8l, hailo8, hailo10h) "
                                                          "or .rknn (rk3588)")
    q.add_argument("--name", required=True, help="model name (folder on the boards: models/NAME)")
    q.add_argument("--target", required=True, metavar="TARGET",
                   help=f"one of: {', '.join(import_targets())}; an .onnx for an NPU target is what emulated boards "
                        "of that target run")
    q.add_argument("--reference", type=Path, default=None, metavar="REF.onnx",
                   help="the float ONNX the model was compiled from: model.bench compares the two (parity)")
    q.add_argument("--inputs", default=None, metavar="SPEC",
                   help=f"input tensors when the file's reader is absent (HailoRT, rknnlite), or to fix "
                        f"dynamic axes and set random-input ranges: {SPEC_HELP}")
    q.add_argument("--outputs", default=None, metavar="SPEC", help="output tensors, same format without ranges")
    q.add_argument("--data", type=Path, default=None, metavar="FILE.npz",
                   help="an input set deployed with the model (model.bench input 'deployed'): a .npz with one "
                        "array per input name, [*shape] or [N, *shape]; or a .npy for one input")
    q.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="artifacts root (default: $FLEET_ARTIFACTS or <project>/artifacts)")
    q.add_argument("--force", action="store_true", help="replace an import of NAME/TARGET made from another file")
    q.add_argument("--json", action="store_true", help="print the entries as JSON")
    q.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    """Handler of ``fleet models import``: notes on stderr, the entries on stdout."""
    from rich.console import Console
    from rich.table import Table

    from fleet.models.importer import import_model
    from fleet.paths import artifacts_dir

    out_dir = args.out or artifacts_dir()
    res = import_model(args.file, args.name, args.target, out_dir, reference=args.reference,
                       inputs=args.inputs, outputs=args.outputs, data=args.data, force=args.force)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for n in res["notes"]:
        err.print(f"[yellow]note:[/yellow] {n}")
    table = Table(title=f"{args.name} ({args.target}) → {out_dir}")
    for col in ("role", "format", "file", "MB", "sha256", "inputs", "outputs", "quantization"):
        table.add_column(col, justify="right" if col == "MB" else "left")

    def io(ts):
        return "; ".join(f"{t['name']}:{t['dtype']}{t['shape']}" for t in ts)

    for e in res["entries"]:
        table.add_row(e["role"], e["format"], Path(e["path"]).name, f"{e['bytes'] / 1e6:.1f}", e["sha256"][:12],
                      io(e["inputs"]), io(e["outputs"]), e.get("quantization", ""))
    Console(soft_wrap=True).print(table)
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    """Handler of ``fleet models parity``."""
    from fleet.models.parity import format_table, run_parity

    res = run_parity(args.model, args.target, args.artifacts, clips=args.clips, collection=args.collection,
                     task_metric=not args.no_task_metric, store=not args.no_store)
    print(json.dumps(res, indent=2) if args.json else format_table(res))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Handler of ``fleet models build``: progress on stderr (rich), summary table on stdout."""
    from rich.console import Console
    from rich.table import Table

    from fleet.models.build import Report, build
    from fleet.paths import artifacts_dir

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out_dir = args.out or artifacts_dir()
    err.print(f"[bold]fleet models build[/bold] {args.model} --target {args.target} → {out_dir}")
    report = Report(echo=err.print)
    spinner = err.status("building…") if not args.json and err.is_terminal else None
    with spinner or contextlib.nullcontext():
        entries = build(args.model, args.target, out_dir, force=args.force, report=report,
                        require_compiler=args.require_compiler, calib_n=args.calib_n)
    if args.json:
        print(json.dumps({"entries": entries, "metrics": report.metrics}, indent=2))
        return 0
    table = Table(title=f"{args.model} ({args.target})")
    for col in ("role", "variant", "file", "MB", "sha256", "quantization"):
        table.add_column(col, justify="right" if col == "MB" else "left")
    for e in entries:
        table.add_row(e["role"], e["variant"], Path(e["path"]).name, f"{e['bytes'] / 1e6:.1f}",
                      e["sha256"][:12], e.get("quantization", ""))
    Console().print(table)
    if entries and entries[0].get("compiled") is False:
        err.print(f"[yellow]not compiled:[/yellow] {entries[0].get('compile_reason', '')}")
    return 0
