"""``model.bench``: any model on the board's backend — latency, throughput and parity.

The generic benchmark of issue 15 §2 for a model a lab imported (``fleet models import``: role
``model``, optional role ``reference``) or one fleet built (options ``role``/``variant``). What
``hailortcli benchmark`` and RKNN's perf tools report, measured the way fleet's suites measure.

Backend (option ``backend``, ``auto`` by default):

- ``hailo``: the .hef through HailoRT's async API, one shared ``VDevice`` + ``create_infer_model``
  + ``configure`` + bindings + ``run`` (``device_agent.backends.hailo``; HailoRT Python API,
  https://hailo.ai/developer-zone/documentation/hailort-v4-23-0/, the Async Inference tutorial).
- ``rknn``: the .rknn through ``RKNNLite`` ``load_rknn`` + ``init_runtime(core_mask=...)`` +
  ``inference`` (``device_agent.backends.rknn``, option ``core_mask``;
  https://github.com/airockchip/rknn-toolkit2/tree/master/rknn-toolkit-lite2).
- ``onnx``: onnxruntime on the CPU.
- ``auto``: a real NPU board runs its .hef/.rknn when deployed (and fails with the fix when the
  runtime does not import); an emulated NPU board runs, on onnxruntime and labelled ``emulation``,
  the ONNX imported for its target, else the fp32 reference standing in for the HEF/RKNN, else the
  cpu ONNX; a CPU board runs the cpu ONNX.

Inputs (the request's ``input``): ``random`` — seeded random data in each input's dtype and range
(the manifest's ``range`` from ``--inputs``, else float [-1, 1], uint8 [0, 255], int8 [-128, 127],
other integers [0, 99], bool {0, 1}; a dynamic axis is 1), ``samples`` sets drawn from
``numpy.random.default_rng(seed + i)`` — ``deployed``, the input set imported with the model
(``fleet models import --data FILE.npz``, role ``inputs``, sha256-verified) — or a ``.npz`` (one array per input name, shaped as the
input or [N, *shape] for N samples) or ``.npy`` (single-input models) under fleet_root.

Tasks (option ``task``):

- ``infer``: one inference on sample ``sample`` (mod the number of samples) → ``total_ms`` (the
  backend's run, ms) and output summaries; the controller drives these under the LoadGen
  SingleStream protocol (``fleet/measure/protocol.py``, suites/model_bench).
- ``throughput``: back-to-back inferences (``mode=stream``: one in flight, cycling over the
  samples; ``mode=async`` on hailo: HailoRT's ``run_async`` with as many in flight as its queue
  takes, as ``hailortcli benchmark`` measures) for ``iterations`` or ``duration_s`` → ``inferences``, ``seconds``, ``throughput_ips``
  (inferences/s) and per-inference ms; the agent's telemetry divides energy by ``inferences``.
- ``parity``: every sample through the model and the reference ONNX (fp32, onnxruntime) →
  per-output cosine similarity and max abs error, and a summary shaped like the agent's ``parity``
  op (``fleet/runner/parity_check.py`` checks it against suite.yml ``parity.bounds``). Outputs pair
  by name, else by position; reference inputs by name, else by position (cast to its dtype).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import families
from .. import manifest as mf
from ..backends import NPU_FORMAT, npu_backend
from ..backends.base import Backend, LoadedModel
from ..backends.rknn import CORE_MASKS
from ..protocol import BadInput, ModelError
from .base import Option, Pipeline

RANDOM = "random"
DEPLOYED = "deployed"  # the input set imported with the model (fleet models import --data)
DEFAULT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "bool": (0, 1)}
MAX_SAMPLES = 1024


def default_range(dtype: str) -> tuple[float, float]:
    """The range random inputs of ``dtype`` are drawn from when the manifest gives none."""
    if dtype in DEFAULT_RANGES:
        return DEFAULT_RANGES[dtype]
    if dtype.startswith("float"):
        return (-1.0, 1.0)
    return (0, 99)


def random_inputs(specs: list[dict], seed: int, samples: int) -> list[dict[str, np.ndarray]]:
    """``samples`` input sets, set i from ``default_rng(seed + i)``: each input in its dtype, shape
    (dynamic axes = 1) and range (inclusive for integers).

    Raises:
        BadInput: an input without name or with an unknown dtype.
    """
    out = []
    for i in range(samples):
        rng = np.random.default_rng(seed + i)
        feed = {}
        for t in specs:
            name, dtype = t.get("name"), str(t.get("dtype", "float32"))
            try:
                dt = np.dtype(dtype)
            except TypeError:
                raise BadInput(f"input {name!r} has unknown dtype {dtype!r}", "fix the manifest's inputs "
                               "(fleet models import --inputs NAME:DTYPE[...])") from None
            shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in t.get("shape", []))
            lo, hi = t.get("range") or default_range(dtype)
            if dt.kind == "f":
                x = rng.uniform(lo, hi, size=shape).astype(dt)
            elif dt.kind == "b":
                x = rng.integers(0, 2, size=shape).astype(bool)
            else:
                x = rng.integers(int(lo), int(hi) + 1, size=shape, dtype=np.int64).astype(dt)
            feed[name] = x
        out.append(feed)
    return out


def file_inputs(path: Path, specs: list[dict]) -> list[dict[str, np.ndarray]]:
    """Input sets from a .npz (arrays by input name, [*shape] or [N, *shape]) or a .npy (one input).

    Raises:
        BadInput: missing/unreadable file, other suffix, missing input names, mismatching shapes.
    """
    names = [t["name"] for t in specs]
    if not path.is_file():
        raise BadInput(f"input set {path} not found", f"put a .npz/.npy under fleet_root, or pass input '{RANDOM}'")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        elif path.suffix == ".npy":
            if len(names) != 1:
                raise BadInput(f"{path} is one array but the model has inputs {names}",
                               "pass a .npz with one array per input name")
            arrays = {names[0]: np.load(path, allow_pickle=False)}
        else:
            raise BadInput(f"{path}: an input set must be .npz or .npy", f"convert it, or pass input '{RANDOM}'")
    except BadInput:
        raise
    except Exception as e:
        raise BadInput(f"cannot read input set {path}: {type(e).__name__}: {e}", "write it with numpy.savez") from None
    missing = [n for n in names if n not in arrays]
    if missing:
        raise BadInput(f"{path} lacks input(s) {missing} (has {sorted(arrays)})",
                       f"save one array per input name: {names}")
    n = None
    for t in specs:
        a, shape = arrays[t["name"]], [d for d in t.get("shape", [])]
        if a.ndim == len(shape) + 1:
            k = a.shape[0]
        elif a.ndim == len(shape):
            arrays[t["name"]], k = a[None], 1
        else:
            raise BadInput(f"{path}: {t['name']} has shape {list(a.shape)}, the model's input is {shape}",
                           "save [*shape] or [N, *shape]")
        if n is not None and k != n:
            raise BadInput(f"{path}: inputs have different sample counts ({n} and {k})", "save N samples of each")
        n = k
    return [{t["name"]: np.ascontiguousarray(arrays[t["name"]][i]).astype(str(t.get("dtype", "float32")), copy=False)
             for t in specs} for i in range(n or 0)]


def _cos_err(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.size != y.size:
        raise ModelError(f"outputs differ in size ({x.size} vs {y.size})",
                         "pass a --reference with the model's outputs (fleet models import --reference)")
    den = np.linalg.norm(x) * np.linalg.norm(y)
    cos = float(x @ y / den) if den > 0 else (1.0 if np.array_equal(x, y) else 0.0)
    return cos, float(np.max(np.abs(x - y))) if x.size else 0.0


class ModelBench(Pipeline):
    """Latency, throughput and parity of one model (see the module docstring)."""

    name = "model.bench"
    default_model = ""  # no default: pass model_dir models/<name>
    OPTIONS = (
        Option("backend", str, "auto", "auto (the NPU's .hef/.rknn on a real board; on an emulated board the "
               "ONNX imported for its target, else the reference, else the cpu ONNX), onnx, hailo or rknn",
               choices=("auto", "onnx", "hailo", "rknn"), load=True),
        Option("role", str, "model", "manifest role of the model (imports: model; a built model: e.g. "
               "encoder_static)", load=True),
        Option("variant", str, "", "manifest variant to load (empty = any; e.g. int8)", load=True),
        Option("core_mask", str, "0_1_2", "rknn: NPU cores (RKNNLite.NPU_CORE_*): auto, 0, 1, 2, 0_1, 0_1_2, all",
               choices=tuple(CORE_MASKS), load=True),
        Option("threads", int, 0, "onnxruntime intra-op threads (0 = one per physical core)", load=True),
        Option("task", str, "infer", "infer (one inference), throughput (back-to-back) or parity (vs the reference)",
               choices=("infer", "throughput", "parity")),
        Option("inputs", str, RANDOM, "the input set, sent as the request's input: random (seeded, each input's "
               "dtype and range), deployed (the set imported with the model: fleet models import --data) or a "
               ".npz/.npy path under fleet_root"),
        Option("seed", int, 0, "random inputs: sample i is drawn from numpy default_rng(seed + i)"),
        Option("samples", int, 8, f"random inputs: how many input sets (1..{MAX_SAMPLES})"),
        Option("sample", int, 0, "task=infer: which input set (mod the number of sets)"),
        Option("iterations", int, 0, "task=throughput: inferences to run (0 = for duration_s)"),
        Option("duration_s", float, 5.0, "task=throughput: how long to run when iterations is 0 (s)"),
        Option("mode", str, "stream", "task=throughput: stream (one request in flight, every backend) or async "
               "(hailo: as many in flight as HailoRT's async queue takes, as hailortcli benchmark runs)",
               choices=("stream", "async")),
    )

    def __init__(self, config):
        super().__init__(config)
        self.model: LoadedModel | None = None
        self.reference: LoadedModel | None = None
        self._backends: dict[str, Backend] = {}
        self._arts: list[mf.Artifact] = []
        self._model_art: mf.Artifact | None = None
        self._ref_art: mf.Artifact | None = None
        self._data_art: mf.Artifact | None = None
        self._inputs: dict[tuple, list] = {}
        self._threads = 0

    # -- load --------------------------------------------------------------------------------
    def _pick(self, arts: list[mf.Artifact], options: dict) -> tuple[str, mf.Artifact, str, str | None]:
        """(backend, artifact, reason, emulation label) by the module docstring's rule."""
        cfg, want, role, variant = self.config, options["backend"], options["role"], options["variant"]
        acc = cfg.accelerator

        def fits(a: mf.Artifact, fmt: str, target: str | None = None) -> bool:
            return (a.get("role") == role and a.get("format") == fmt and (not variant or a.get("variant") == variant)
                    and (target is None or a.get("target") == target))

        def npu_art(backend: str) -> mf.Artifact | None:
            mine = [a for a in arts if fits(a, NPU_FORMAT[backend])]
            same = [a for a in mine if a.get("target") == acc]
            compat = [a for a in mine if (a.get("target"), acc) in families.registry().compatible()]
            return (same or compat or mine or [None])[0]

        def onnx_art() -> tuple[mf.Artifact | None, str, str | None]:
            target_onnx = next((a for a in arts if fits(a, "onnx", acc)), None)
            if target_onnx is not None and acc != "cpu":
                return target_onnx, f"the ONNX imported for {acc}", f"onnxruntime: {target_onnx.file} for {acc}"
            cpu = next((a for a in arts if fits(a, "onnx", "cpu")), None)
            if cpu is None:
                cpu = next((a for a in arts if fits(a, "onnx")), None)
            if cpu is not None:
                return cpu, "the cpu ONNX", (f"cpu ONNX {cpu.file} stands in for the {acc} NPU"
                                             if cfg.emulated and cfg.npu else None)
            ref = next((a for a in arts if a.get("role") == "reference" and a.get("format") == "onnx"), None)
            if ref is not None:
                return ref, "the fp32 reference (no ONNX of the model is deployed)", (
                    f"fp32 reference {ref.file} stands in for the {acc} NPU" if cfg.npu else None)
            return None, "", None

        if want in NPU_FORMAT:
            a = npu_art(want)
            if a is None:
                raise ModelError(f"backend={want} but no .{NPU_FORMAT[want]} with role {role!r} is deployed",
                                 f"import one (fleet models import FILE.{NPU_FORMAT[want]} --name NAME --target "
                                 f"{acc}) and fleet deploy, or use backend=auto")
            return want, a, f"backend={want} requested", None
        npu = npu_backend(acc)
        if want == "auto" and npu and not cfg.emulated:
            a = npu_art(npu)
            if a is not None:
                ok, why = self._backends[npu].available()
                if not ok:
                    raise ModelError(f"the board's {npu} backend is not available: {why}",
                                     "install the NPU runtime, or pass backend=onnx")
                return npu, a, f"{acc} NPU with {a.file}", None
        a, what, emu = onnx_art()
        if a is None:
            have = sorted(f"{x.get('role')}/{x.get('format')}/{x.get('target')}" for x in arts)
            raise ModelError(f"no artifact with role {role!r} this board can run (have: {have or 'none'})",
                             "import the model for this board (an .onnx for target cpu runs anywhere) and fleet deploy, "
                             "or pick another role/variant")
        if want == "onnx":
            reason = f"backend=onnx requested: {what}"
        elif cfg.emulated and npu:
            reason = f"emulated {acc} board: {what} on onnxruntime"
        elif npu:
            reason = f"no .{NPU_FORMAT[npu]} deployed for the {acc} NPU: {what}"
        else:
            reason = f"board has no NPU: {what}"
        return "onnx", a, reason, emu if (cfg.emulated and cfg.npu) else None

    def _backend_for(self, name: str, options: dict) -> Backend:
        b = self._backends[name]
        if name == "rknn" and getattr(b, "core_mask", options["core_mask"]) != options["core_mask"]:
            b = type(b)(core_mask=options["core_mask"], data_format=b.data_format, device_tree=b.device_tree)
        return b

    def _open(self, backend: str, art: mf.Artifact, options: dict) -> LoadedModel:
        if backend == "onnx":
            return self._backends["onnx"].load(art.path, intra_op_threads=options["threads"])
        return self._backend_for(backend, options).load(art.path, inputs=art.get("inputs"), outputs=art.get("outputs"))

    def load(self, model_dir: Path, backends: dict[str, Backend], options: dict) -> dict:
        self.unload()
        if model_dir.name == "models" or not model_dir.name:
            raise BadInput("model.bench needs model_dir models/<name>",
                           'pass "model_dir": "models/<name>" (the name given to fleet models import)')
        self._backends, self._threads = backends, options["threads"]
        arts = mf.read_manifest(model_dir)
        backend, art, reason, emu = self._pick(arts, options)
        sha = mf.verify(art)
        self.model = self._open(backend, art, options)
        self._arts, self._model_art = arts, art
        ref = [a for a in arts if a.get("role") == "reference" and a.get("format") == "onnx"]
        self._ref_art = next((a for a in ref if a.get("target") == art.get("target")), ref[0] if ref else None)
        data = [a for a in arts if a.get("role") == "inputs" and a.get("format") in ("npz", "npy")]
        self._data_art = next((a for a in data if a.get("target") == art.get("target")), data[0] if data else None)
        specs = art.get("inputs") or [t.to_dict() for t in self.model.inputs]
        self.info = {
            "pipeline": self.name, "model_dir": str(model_dir), "model": model_dir.name,
            "stage": {"backend": backend, "artifact": art.file, "reason": reason, "emulation": emu,
                      "emulated": bool(self.config.emulated and self.config.npu and backend == "onnx"),
                      "format": art.get("format"), "target": art.get("target"),
                      "quantization": art.get("quantization"), "imported": bool(art.get("imported")),
                      "sha256": sha},
            "inputs": specs, "outputs": [t.to_dict() for t in self.model.outputs],
            "reference": {"artifact": self._ref_art.file, "present": True} if self._ref_art else
                         {"present": False, "reason": f"no reference ONNX in {model_dir} (fleet models import "
                                                      "--reference REF.onnx)"},
            "models": {art.file: sha},
        }
        return self.info

    # -- run ---------------------------------------------------------------------------------
    def _input_sets(self, input_path: Path, options: dict) -> list[dict[str, np.ndarray]]:
        specs = self.info["inputs"]
        if input_path.name == DEPLOYED and not input_path.exists():
            if self._data_art is None:
                raise BadInput(f"input '{DEPLOYED}' but {self.info['model']} was imported without an input set",
                               f"import it with --data FILE.npz (then fleet deploy), or pass input '{RANDOM}'")
            input_path = self._data_art.path  # sha256-verified when (re)read below
        rnd = input_path.name == RANDOM and not input_path.exists()
        n = options["samples"]
        if rnd and not 1 <= n <= MAX_SAMPLES:
            raise BadInput(f"samples={n} is out of range", f"use 1..{MAX_SAMPLES}")
        key = (RANDOM, options["seed"], n) if rnd else (str(input_path), input_path.stat().st_mtime_ns
                                                        if input_path.exists() else 0)
        if key not in self._inputs:
            if self._data_art is not None and input_path == self._data_art.path:
                mf.verify(self._data_art)
            sets = random_inputs(specs, options["seed"], n) if rnd else file_inputs(input_path, specs)
            if not sets:
                raise BadInput(f"{input_path} holds no samples", "save at least one")
            self._inputs = {key: sets}
        return self._inputs[key]

    def _infer(self, feed: dict) -> tuple[dict, float]:
        t0 = time.perf_counter()
        out = self.model.run(feed)
        return out, (time.perf_counter() - t0) * 1e3

    def _base(self) -> dict:
        st = self.info["stage"]
        return {"pipeline": self.name, "model": self.info["model"], "backend": st["backend"],
                "emulated": st["emulated"], "emulation": st["emulation"], "models": dict(self.info["models"])}

    def run(self, input_path: Path, options: dict) -> dict:
        if self.model is None:
            raise ModelError("model.bench is not loaded", "send load first")
        sets = self._input_sets(input_path, options)
        task = options["task"]
        if task == "infer":
            i = options["sample"] % len(sets)
            out, ms = self._infer(sets[i])
            return {**self._base(), "task": task, "sample": i, "samples": len(sets), "total_ms": round(ms, 4),
                    "stages": {"inference": {**self.info["stage"], "ms": round(ms, 4)}},
                    "outputs": {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype),
                                    "mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in out.items()}}
        if task == "throughput":
            return self._throughput(sets, options)
        return self._parity(sets)

    def _throughput(self, sets: list, options: dict) -> dict:
        iters, dur = options["iterations"], options["duration_s"]
        if iters < 0 or (iters == 0 and not dur > 0):
            raise BadInput(f"task=throughput needs iterations > 0 or duration_s > 0 (got {iters}, {dur})",
                           "set iterations: 1000 or duration_s: 10")
        if options["mode"] == "async":
            if not hasattr(self.model, "run_stream"):
                raise BadInput(f"mode=async needs a backend with asynchronous inference (hailo); this board runs "
                               f"{self.info['stage']['backend']}", "use mode=stream")
            r = self.model.run_stream(sets, count=iters or None, duration_s=dur)
            el = r["seconds"]
            return {**self._base(), "task": "throughput", "mode": f"async, up to {r['queue_size']} in flight",
                    "inferences": r["inferences"], "seconds": round(el, 4),
                    "throughput_ips": round(r["inferences"] / el, 3) if el > 0 else None,
                    "total_ms": round(el * 1e3, 3), "per_inference_ms": {"mean": round(el * 1e3 / max(r["inferences"], 1), 4)},
                    "stages": {"inference": {**self.info["stage"], "ms": None}}}
        ms, k = [], 0
        t0 = time.perf_counter()
        while True:
            _, m = self._infer(sets[k % len(sets)])
            ms.append(m)
            k += 1
            el = time.perf_counter() - t0
            if (iters and k >= iters) or (not iters and el >= dur):
                break
        a = np.asarray(ms)
        return {**self._base(), "task": "throughput", "mode": "stream, one request in flight",
                "inferences": k, "seconds": round(el, 4), "throughput_ips": round(k / el, 3) if el > 0 else None,
                "total_ms": round(el * 1e3, 3), "per_inference_ms": {"mean": round(float(a.mean()), 4),
                                                                     "p50": round(float(np.median(a)), 4),
                                                                     "min": round(float(a.min()), 4),
                                                                     "max": round(float(a.max()), 4)},
                "stages": {"inference": {**self.info["stage"], "ms": round(float(a.mean()), 4)}}}

    def _parity(self, sets: list) -> dict:
        if self._ref_art is None:
            raise ModelError(self.info["reference"]["reason"], "import the model with --reference REF.onnx "
                             "(the float ONNX it was compiled from), then fleet deploy")
        if self.reference is None:
            mf.verify(self._ref_art)
            self.reference = self._backends["onnx"].load(self._ref_art.path, intra_op_threads=self._threads)
        ref_in = self.reference.inputs
        names = [t["name"] for t in self.info["inputs"]]
        by_name = {t.name for t in ref_in} == set(names)
        outs_m = [t.name for t in self.model.outputs]
        outs_r = [t.name for t in self.reference.outputs]
        out_by_name = set(outs_m) == set(outs_r)
        if not out_by_name and len(outs_m) != len(outs_r):
            raise ModelError(f"the model has outputs {outs_m}, the reference {outs_r}",
                             "pass a --reference with the same outputs")
        pairs = [(n, n) for n in outs_m] if out_by_name else list(zip(outs_m, outs_r))
        per_out = {m: {"cosine": [], "max_abs_err": []} for m, _ in pairs}
        per_input, t0 = [], time.perf_counter()
        for i, feed in enumerate(sets):
            got, _ = self._infer(feed)
            rfeed = {}
            for j, t in enumerate(ref_in):
                x = feed[t.name] if by_name else feed[names[j]]
                shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in t.shape)
                try:
                    rfeed[t.name] = np.asarray(x).astype(t.dtype).reshape(shape)
                except (TypeError, ValueError) as e:
                    raise ModelError(f"input {t.name} of the reference cannot take the model's input "
                                     f"({list(np.shape(x))}): {e}", "pass a --reference with the model's inputs") from None
            want = self.reference.run(rfeed)
            row = {"sample": i}
            for m, r in pairs:
                c, e = _cos_err(got[m], want[r])
                per_out[m]["cosine"].append(c)
                per_out[m]["max_abs_err"].append(e)
                row[m] = {"cosine": round(c, 6), "max_abs_err": e}
            per_input.append(row)
        outputs = {m: {"cosine_min": float(min(v["cosine"])), "cosine_mean": float(np.mean(v["cosine"])),
                       "max_abs_err": float(max(v["max_abs_err"]))} for m, v in per_out.items()}
        allc = [c for v in per_out.values() for c in v["cosine"]]
        st = self.info["stage"]
        same = self._ref_art.file == st["artifact"]
        return {**self._base(), "task": "parity", "total_ms": round((time.perf_counter() - t0) * 1e3, 3),
                "reference": {"backend": "onnx", "artifact": self._ref_art.file, "precision": "fp32"},
                "candidate": {"backend": st["backend"], "artifact": st["artifact"], "emulation": st["emulation"]},
                "matched_by": {"inputs": "name" if by_name else "position", "outputs": "name" if out_by_name else "position"},
                "per_output": outputs, "per_input": per_input,
                "summary": {"n": len(sets), "cosine_mean": float(np.mean(allc)), "cosine_min": float(min(allc)),
                            "max_abs_err": max(o["max_abs_err"] for o in outputs.values())},
                **({"note": "the reference itself stands in for the model: parity is 1 by construction"} if same else {})}

    def unload(self) -> None:
        for m in (self.model, self.reference):
            if m is not None:
                m.close()
        self.model = self.reference = None
        self._inputs = {}
