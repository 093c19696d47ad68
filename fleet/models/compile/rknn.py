"""rknn-toolkit2 adapter: fp32 ONNX + calibration set -> ``.rknn`` (rk3588), via the toolchain venv.

rknn-toolkit2 pins numpy<=1.26.4, onnx<=1.18.0 and torch<=2.4.0, so it cannot share the
project's venv: ``fleet toolchain install rknn`` creates its own (fleet.toolchain.rknn) and this
adapter runs ``rknn_worker.py`` with that venv's Python as a subprocess, passing a JSON request
and reading a JSON result (the worker's docstring has the call sequence).

Calibration: rknn-toolkit2's ``build(dataset=…)`` takes a text file with one line per sample,
the .npy files of a multi-input sample separated by spaces (API reference 2.3.2, build()). Each
sample is written as one .npy per input with the graph's own batch-1 shape and layout: for 4-D
inputs rknn-toolkit2 2.5.0 wants the ONNX (NCHW) layout in .npy files and refuses NHWC ("The
input('….npy') shape (1, 1000, 80, 1) is wrong, expect 'nchw' like (1, 1, 1000, 80)!", measured
here), unlike run-time ``inference()``, whose default for 4-D is NHWC (docs/reference/device_apis.md §5.6). Scheme: ``w8a8`` (the only
dtype listed for RK3588), ``normal`` algorithm, per-channel weights (``quantized_method``
``channel``, the toolkit's default), ``build(auto_hybrid=True)`` (see AUTO_HYBRID).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from fleet.errors import FleetError
from fleet.models.compile import CompileResult

WORKER = Path(__file__).with_name("rknn_worker.py")


def target_platforms() -> tuple[str, ...]:
    """rknn-toolkit2 ``target_platform`` names of the board families built with it (fleet.families)."""
    from fleet.families import registry

    return tuple(f.arch for f in registry().with_toolchain("rknn-toolkit2"))


def __getattr__(name: str):
    if name == "TARGET_PLATFORMS":  # older callers: read from the board families when asked
        return target_platforms()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

QUANTIZED_DTYPE = "w8a8"
QUANTIZED_ALGORITHM = "normal"
QUANTIZED_METHOD = "channel"
# build(auto_hybrid=True): the toolkit moves layers whose quantized output drifts (low cosine) to
# fp16. Measured here on MiniLM encoder_npu (rk3588, simulator vs onnxruntime fp32, one
# calibration sample): plain w8a8 cosine 0.136, auto_hybrid 0.9996, same build time (~60 s).
AUTO_HYBRID = True
TIMEOUT_S = 3600.0  # a whisper decoder build takes minutes on 2 cores; a hang must still end


def quantization_name(dtype: str = QUANTIZED_DTYPE, algorithm: str = QUANTIZED_ALGORITHM,
                      method: str = QUANTIZED_METHOD, auto_hybrid: bool = AUTO_HYBRID) -> str:
    """The manifest ``quantization`` value, e.g. ``rknn-w8a8-normal-channel-auto-hybrid``."""
    return f"rknn-{dtype}-{algorithm}-{method}" + ("-auto-hybrid" if auto_hybrid else "")


def available(venv: Path | None = None) -> tuple[bool, str]:
    """(True, toolkit version) if the toolchain venv imports ``rknn.api``, else (False, why +
    the install command)."""
    from fleet.toolchain import rknn as tc

    st = tc.status(venv)
    if st.installed:
        return True, st.version or "unknown"
    return False, f"rknn-toolkit2 is not installed ({st.reason}); run {tc.INSTALL_HINT}"


def write_dataset(arrays: dict[str, np.ndarray], inputs: list[dict], folder: Path) -> Path:
    """Write one .npy per (sample, input) and the toolkit's dataset list file.

    Args:
        arrays: input name -> [N, *input_shape].
        inputs: graph inputs (manifest dicts, batch 1), in ONNX order.
        folder: an empty folder.

    Returns:
        the list file (one line per sample, .npy paths space-separated in input order).

    Raises:
        FleetError: an input lacks its array or the shapes disagree.
    """
    n = None
    for spec in inputs:
        a = arrays.get(spec["name"])
        if a is None or list(a.shape[1:]) != list(spec["shape"]):
            got = None if a is None else list(a.shape)
            raise FleetError(f"calibration array for input {spec['name']!r}: shape {got}, "
                             f"expected [N, {', '.join(map(str, spec['shape']))}]",
                             "rebuild the calibration set", exit_code=3)
        n = a.shape[0] if n is None else min(n, a.shape[0])
    lines = []
    for k in range(n or 0):
        paths = []
        for j, spec in enumerate(inputs):
            a = arrays[spec["name"]][k]  # the graph's layout, also for 4-D (module docstring)
            p = folder / f"s{k:04d}_in{j}.npy"
            np.save(p, np.ascontiguousarray(a))
            paths.append(str(p))
        lines.append(" ".join(paths))
    listing = folder / "dataset.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def compile_rknn(graph: Path, inputs: list[dict], arrays: dict[str, np.ndarray],
                 out_path: Path, target_platform: str = "rk3588", venv: Path | None = None,
                 simulate: bool = False, timeout: float = TIMEOUT_S) -> CompileResult:
    """Quantize and compile ``graph`` to an .rknn with rknn-toolkit2 in its venv.

    Args:
        graph: fp32 ONNX, static shapes, opset <= 19 (fleet.models.npu_graphs writes 17).
        inputs: its inputs (manifest dicts): names and ``input_size_list`` for load_onnx.
        arrays: calibration arrays, input name -> [N, *input_shape].
        out_path: the .rknn to write (temp file + rename: a failure leaves nothing).
        target_platform: ``rk3588``.
        venv: the toolchain venv (default fleet.toolchain.rknn.default_venv()).
        simulate: also run the toolkit's simulator (``init_runtime()`` with no target) on the
            first calibration sample and return its outputs in ``metrics["simulator_outputs"]``
            (list of ndarrays).
        timeout: seconds before the worker is killed.

    Returns:
        CompileResult(path, "rknn", {"name": "rknn-toolkit2", "version"}, quantization,
        metrics: seconds per toolkit call, wall seconds, samples).

    Raises:
        FleetError: unknown platform (exit 2); toolchain missing (exit 3, naming the install
            command); a toolkit call failed or timed out (exit 3, naming the call and the tail
            of its log).
    """
    from fleet.toolchain import rknn as tc

    if target_platform not in target_platforms():
        raise FleetError(f"unknown RKNN target_platform {target_platform!r}",
                         f"use one of {', '.join(target_platforms())}")
    py = tc.venv_python(venv)
    if not py.exists():
        raise FleetError(f"cannot compile {Path(graph).name} for {target_platform}: no "
                         f"rknn-toolkit2 venv at {py.parent.parent}", f"run {tc.INSTALL_HINT}",
                         exit_code=3)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="rknn-") as tmp:
        tmp = Path(tmp)
        (tmp / "dataset").mkdir()
        listing = write_dataset(arrays, inputs, tmp / "dataset")
        n = len(listing.read_text().splitlines())
        sim_in = sim_out = None
        if simulate:
            sim_in, sim_out = tmp / "sim_in.npz", tmp / "sim_out.npz"
            np.savez(sim_in, **{i["name"]: np.ascontiguousarray(arrays[i["name"]][0])
                                for i in inputs})
        fd, part = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_path.parent)
        os.close(fd)
        req = {"onnx": str(Path(graph).resolve()), "out": part,
               "inputs": [i["name"] for i in inputs],
               "input_size_list": [list(i["shape"]) for i in inputs],
               "dataset": str(listing), "target_platform": target_platform,
               "quantized_dtype": QUANTIZED_DTYPE, "quantized_algorithm": QUANTIZED_ALGORITHM,
               "quantized_method": QUANTIZED_METHOD, "auto_hybrid": AUTO_HYBRID,
               "verbose": False,
               "simulate_inputs": str(sim_in) if sim_in else None,
               "simulate_out": str(sim_out) if sim_out else None}
        (tmp / "req.json").write_text(json.dumps(req))
        # run a copy: next to the original, "rknn.py" (this module) would shadow the toolkit's
        # "rknn" package on the worker's sys.path[0]
        worker = tmp / WORKER.name
        shutil.copyfile(WORKER, worker)
        t0 = time.perf_counter()
        try:
            p = subprocess.run([str(py), str(worker), str(tmp / "req.json"),
                                str(tmp / "res.json")], capture_output=True, text=True,
                               timeout=timeout, cwd=tmp, check=False)
        except subprocess.TimeoutExpired:
            Path(part).unlink(missing_ok=True)
            raise FleetError(f"rknn-toolkit2 did not finish {Path(graph).name} within "
                             f"{timeout:.0f} s", "rerun with a longer timeout, or check the "
                             "toolkit with: fleet toolchain status", exit_code=3) from None
        wall = time.perf_counter() - t0
        try:
            res = json.loads((tmp / "res.json").read_text())
        except (OSError, ValueError):
            res = {"ok": False, "stage": "start", "message": "the worker wrote no result"}
        if not res.get("ok") or p.returncode != 0:
            Path(part).unlink(missing_ok=True)
            log = "\n".join((p.stderr + p.stdout).strip().splitlines()[-12:])
            raise FleetError(f"rknn-toolkit2 {res.get('version') or ''} failed at "
                             f"{res.get('stage')} for {Path(graph).name} ({target_platform}): "
                             f"{res.get('message', '').strip()}\n{log}",
                             "check the graph against RKNN's operator support "
                             "(rknn-toolkit2 doc/RKNN_Compiler_Support_Operator_List) and "
                             "fleet toolchain status", exit_code=3)
        metrics = {"seconds": res.get("seconds", {}), "wall_s": round(wall, 1),
                   "samples": n, "target_platform": target_platform}
        if sim_out is not None:
            with np.load(sim_out) as z:
                metrics["simulator_outputs"] = [z[k] for k in sorted(z.files,
                                                                      key=lambda s: int(s[4:]))]
        os.replace(part, out_path)
    return CompileResult(path=out_path, format="rknn",
                         toolchain={"name": "rknn-toolkit2", "version": res.get("version")},
                         quantization=quantization_name(), metrics=metrics)
