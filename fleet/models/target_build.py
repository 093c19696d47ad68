"""``fleet models build MODEL --target hailo8l|hailo8|hailo10h|rk3588``: the NPU build of one model
(the build target of an NPU board family, fleet.families).

Writes ``artifacts/<target>/<model>/``:

- ``<role>.onnx``: the fp32 NPU graphs (fleet.models.npu_graphs: static shapes, eager
  attention, opset 17, onnxsim), each verified against the cpu model;
- ``calibration/calib_<role>.npz`` (+ ``.json`` sidecar): the calibration set drawn from the
  suites' data (fleet.models.calibration);
- ``<role>.int8.onnx``: the static QDQ INT8 emulation model (fleet.models.quantize), what an
  emulated board of this target runs in onnxruntime;
- ``<role>.hef`` (hailo8l, hailo8, hailo10h: Hailo DFC) or ``<role>.rknn`` (rk3588: rknn-toolkit2),
  when the family's toolchain (``BoardFamily.toolchain``) is present.

Manifest entries (docs/contracts.md §3), per role: variant ``fp32`` (onnx), ``int8`` (onnx,
QDQ) and, when compiled, ``npu`` (hef | rknn). Every entry has ``toolchain`` {name, version},
``quantization``, ``calibration`` {path, sha256, n} (not on fp32) and ``compiled`` (bool; with
``compile_reason`` when false).

Without the toolchain the build still writes graphs, calibration and emulation model, prints
what to install and where from, and records ``compiled: false``; ``require_compiler=True``
turns that into an error (exit 3) before anything is built. Caching and atomicity are the cpu
build's (the shared fleet.models.skeleton): nothing changes under ``out`` unless every step
passed. What the model's graphs are, how they are verified and where their calibration data
comes from is its recipe's (fleet.models.recipes).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fleet.errors import FleetError
from fleet.models import manifest as mf
from fleet.models import recipes
from fleet.models.skeleton import Report, build_group, cached_group, toolchain_versions



def _toolchain(target: str) -> str | None:
    """The compile adapter of ``target``'s board family (``hailo-dfc``, ``rknn-toolkit2``; fleet.families)."""
    from fleet.families import registry

    fam = registry().find(target)
    return fam.toolchain if fam is not None and fam.build_target == target else None


def _npu_targets() -> tuple[str, ...]:
    from fleet.families import registry

    return registry().npu_targets()

CALIB_DIR = "calibration"
# warn below this simulator-vs-fp32 cosine (MiniLM's own INT8 floor in the cpu build is 0.98)
MIN_SIMULATOR_COSINE = 0.98
NPU_EXPORTER_PACKAGES = ("torch", "onnx", "onnxsim", "onnxruntime", "transformers")


def npu_exporter_info() -> dict:
    """Versions of the NPU-graph toolchain (package metadata) plus opset and exporter kind."""
    from fleet.models.npu_graphs import NPU_OPSET
    from fleet.models.quantize import QDQ_SCHEME

    # a QDQ scheme change rebuilds the static INT8 models
    return toolchain_versions(NPU_EXPORTER_PACKAGES, opset=NPU_OPSET, qdq_scheme=QDQ_SCHEME,
                              exporter="torchscript")


def compiler_state(target: str, rknn_venv: Path | None = None) -> dict:
    """Is the target's compiler usable here?

    Returns:
        {"name": "hailo_dfc" | "rknn-toolkit2", "available": bool, "version": str | None,
        "quantization": the scheme the adapter applies, "reason": why not (with what to install
        and where from), "" when available}.
    """
    if _toolchain(target) == "hailo-dfc":
        from fleet.models.compile import hailo

        ok, info = hailo.available()
        name, quant = "hailo_dfc", hailo.QUANTIZATION
    elif _toolchain(target) == "rknn-toolkit2":
        from fleet.models.compile import rknn

        ok, info = rknn.available(rknn_venv)
        name, quant = "rknn-toolkit2", rknn.quantization_name()
    else:
        raise FleetError(f"no NPU compiler for target {target!r}",
                         f"NPU targets: {', '.join(t for t in _npu_targets() if _toolchain(t))}")
    return {"name": name, "available": ok, "version": info if ok else None,
            "quantization": quant, "reason": "" if ok else info}


def expected_keys(model: str, compiled: bool) -> set[tuple[str, str]]:
    """(role, variant) pairs a target build of ``model`` records (roles: its recipe's NPU graphs)."""
    from fleet.models.npu_graphs import graph_roles

    variants = ("fp32", "int8", "npu") if compiled else ("fp32", "int8")
    return {(r, v) for r in graph_roles(model) for v in variants}


def up_to_date(model: str, target: str, out: Path, source: dict, exporter: dict,
               compiler: dict) -> list[dict] | None:
    """The group's entries if the build can be skipped, else None.

    Skippable when every expected (role, variant) is listed, each file and each calibration
    set has its recorded sha256, source and exporter are today's, and the compile state matches
    today's toolchain (compiled with the same version and quantization scheme, or not compiled
    and still unavailable).
    """
    compiled = compiler["available"]

    def same_compile(e: dict) -> bool:
        if bool(e.get("compiled")) != compiled:
            return False
        return not (e["variant"] == "npu" and (e.get("toolchain", {}).get("version") != compiler["version"]
                                               or e.get("quantization") != compiler["quantization"]))

    return cached_group(model, target, out, expected_keys(model, compiled), source, exporter,
                        accept=same_compile)


def _compile(target: str, graph, work: Path, arrays: dict, rknn_venv: Path | None):
    """Run the target's compile adapter on one graph; returns a CompileResult."""
    src = work / graph.file
    if _toolchain(target) == "hailo-dfc":
        from fleet.models.compile import hailo

        from fleet.families import by_accelerator

        return hailo.compile_hef(src, graph.inputs, graph.outputs, arrays, by_accelerator(target).arch,
                                 work / f"{graph.role}.hef")
    from fleet.models.compile import rknn

    return rknn.compile_rknn(src, graph.inputs, arrays, work / f"{graph.role}.rknn",
                             target_platform=target, venv=rknn_venv, simulate=True)


def simulator_agreement(graph: Path, outputs: list, sim: list, arrays: dict) -> list[dict]:
    """Compare the toolkit simulator's outputs with onnxruntime fp32 on calibration sample 0.

    Returns:
        per output: {"output", "cosine", "max_abs_diff"} (float64 over the flattened tensor).
    """
    from fleet.models.verify import session

    feeds = {k: v[0] for k, v in arrays.items()}
    ref = session(graph).run([o["name"] for o in outputs], feeds)
    rows = []
    for spec, a, b in zip(outputs, sim, ref):
        a = np.asarray(a, np.float64).ravel()
        b = np.asarray(b, np.float64).ravel()
        if a.size != b.size:
            rows.append({"output": spec["name"], "error": f"size {a.size} != {b.size}"})
            continue
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
        rows.append({"output": spec["name"], "cosine": round(cos, 6),
                     "max_abs_diff": float(np.abs(a - b).max())})
    return rows


def build_target(model: str, target: str, out: Path, force: bool = False, report=None,
                 require_compiler: bool = False, calib_n: int = 64,
                 rknn_venv: Path | None = None) -> list[dict]:
    """Build (or find up to date) the NPU artifacts of ``model`` for ``target`` under ``out``.

    Args:
        model: a model with NPU graphs (``whisper-tiny.en``, ``minilm-l6-v2``, ``crepe-tiny``).
        target: ``hailo8l``, ``hailo8`` or ``rk3588``.
        out: artifacts root (files in ``out/<target>/<model>/``, entries in manifest.json).
        force: rebuild even if up to date.
        report: fleet.models.skeleton.Report (progress and metrics), or None.
        require_compiler: a missing toolchain is an error (exit 3) instead of a build without
            the compiled binary.
        calib_n: calibration samples per graph.
        rknn_venv: the rknn-toolkit2 venv (default fleet.toolchain.rknn.default_venv()).

    Returns:
        the manifest entries of (model, target). ``report.metrics`` gets ``cached``,
        ``compiled``, ``compile_reason`` and the graphs' verification numbers.

    Raises:
        FleetError: no NPU graphs for the model (exit 2); toolchain missing with
            require_compiler (exit 3); a failed export, verification, quantization or compile
            (exit 3). Nothing under ``out`` changes then.
    """
    from fleet.models import npu_graphs

    report = report or Report()
    t0 = time.perf_counter()
    recipe = recipes.get(model)
    npu_graphs.graph_roles(model)  # no NPU graphs -> FleetError before any work
    out = Path(out).resolve()
    compiler = compiler_state(target, rknn_venv)
    m = report.metrics
    m["compiled"] = compiler["available"]
    m["compile_reason"] = compiler["reason"]
    if not compiler["available"]:
        if require_compiler:
            raise FleetError(f"cannot compile {model} for {target}: {compiler['reason']}",
                             "install it, or drop --require-compiler to build the NPU graphs, "
                             "calibration set and emulation model only", exit_code=3)
        report.info(f"[yellow]![/yellow] {target} compiler missing: {compiler['reason']}. "
                    f"Building the NPU graphs, calibration set and emulation model only "
                    f"(manifest: compiled false).")
    source, exporter = recipe.source_info(), npu_exporter_info()

    def make(work: Path, rel: str) -> list[dict]:
        entries = []
        # looked up on the module at call time (tests replace npu_graphs.build_graphs)
        for g in npu_graphs.build_graphs(model, work, report):
            entries += _build_role(model, target, g, work, rel, compiler, calib_n, rknn_venv,
                                   report)
        for e in entries:
            e.update(source=source, exporter=exporter)
        return entries

    entries = build_group(model, target, out, report, force=force,
                          cached=lambda: up_to_date(model, target, out, source, exporter, compiler),
                          make=make, same="source, exporter and toolchain", t0=t0)
    if m["cached"]:
        return entries
    if not compiler["available"]:
        report.info(f"[yellow]![/yellow] not compiled for {target}: {compiler['reason']}")
    return entries


def _build_role(model: str, target: str, g, work: Path, rel: str, compiler: dict, calib_n: int,
                rknn_venv: Path | None, report) -> list[dict]:
    """Calibrate, quantize (emulation model) and maybe compile one graph; its entries."""
    import onnxruntime as ort

    from fleet.models.calibration import build_calibration_set, load_calibration
    from fleet.models.onnx_export import graph_io
    from fleet.models.quantize import quantize_static_qdq

    m = report.metrics
    with report.step(f"calibration set for {g.role} ({calib_n} samples wanted)") as s:
        calib = build_calibration_set(model, work / g.file, work / CALIB_DIR, n=calib_n)
        s["detail"] = f"{calib.n} samples, sha256 {calib.sha256[:12]}"
    cal_field = {"path": f"{rel}/{Path(calib.path).relative_to(work)}", "sha256": calib.sha256,
                 "n": calib.n}
    qdq_file = f"{g.role}.int8.onnx"
    with report.step(f"static INT8 QDQ emulation model {qdq_file}") as s:
        q = quantize_static_qdq(work / g.file, calib, work / qdq_file)
        if graph_io(work / qdq_file) != (g.inputs, g.outputs):
            raise FleetError(f"{qdq_file}: graph I/O changed in quantization",
                             "this is a bug in fleet/models/quantize.py", exit_code=3)
        s["detail"] = f"{q['quantization']}, {(work / qdq_file).stat().st_size / 1e6:.1f} MB"
    compiled = compiler["available"]
    reason = {} if compiled else {"compile_reason": compiler["reason"]}

    def entry(variant: str, fname: str, fmt: str, quant: str, toolchain: dict, **extra) -> dict:
        f = work / fname
        return {"model": model, "role": g.role, "variant": variant, "target": target,
                "format": fmt, "path": f"{rel}/{fname}", "sha256": mf.sha256_file(f),
                "bytes": f.stat().st_size, "inputs": g.inputs, "outputs": g.outputs,
                "quantization": quant, "toolchain": toolchain, "compiled": compiled,
                **reason, **extra}

    verification = {k: v for k, v in m.items() if k.startswith(g.role)
                    and isinstance(v, (int, float, str))}
    out = [entry("fp32", g.file, "onnx", "none",
                 {"name": "onnxruntime", "version": ort.__version__},
                 verification=verification),
           entry("int8", qdq_file, "onnx", q["quantization"], q["toolchain"],
                 calibration=cal_field,
                 **({"quantization_detail": q["quantization_detail"]}
                    if "quantization_detail" in q else {}))]
    if compiled:
        with report.step(f"compile {g.role} with {compiler['name']} {compiler['version']} "
                         f"for {target}") as s:
            arrays = load_calibration(calib)
            r = _compile(target, g, work, arrays, rknn_venv)
            s["detail"] = f"{r.path.name}, {r.path.stat().st_size / 1e6:.1f} MB"
        if "simulator_outputs" in r.metrics:
            # the toolkit's own simulator of the quantized model vs fp32: recorded, and a
            # warning when it is poor (the board would compute the same numbers)
            rows = simulator_agreement(work / g.file, g.outputs, r.metrics["simulator_outputs"],
                                       arrays)
            r.metrics["simulator_vs_fp32"] = rows
            m[f"{g.role}_simulator_vs_fp32"] = rows
            worst = min((x.get("cosine", -1.0) for x in rows), default=-1.0)
            if worst < MIN_SIMULATOR_COSINE:
                report.info(f"[yellow]![/yellow] {g.role}: {compiler['name']} simulator vs fp32 "
                            f"cosine {worst:.4f} < {MIN_SIMULATOR_COSINE} on a calibration "
                            f"sample: the quantized {r.format} model is inaccurate")
        out.append(entry("npu", r.path.name, r.format, r.quantization, r.toolchain,
                         calibration=cal_field,
                         compile_metrics={k: v for k, v in r.metrics.items()
                                          if k != "simulator_outputs"}))
    return out
