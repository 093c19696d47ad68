"""The ``parity`` op: the same inputs through the CPU fp32 reference and through the board's NPU
stage (an emulated board: its emulation model), both outputs compared on the board.

The stage work is each pipeline's own ``parity`` method (``Pipeline.parity``; its ``NPU_STAGE``
and ``PARITY_REFERENCE_ROLE`` name the stage and its fp32 reference); this module holds what
they share (the reference model, the comparison, the summary) and the op itself.

Request args::

    {"pipeline": "asr.whisper_hybrid" | "rag.hybrid", "model_dir": "models/<model>" (optional),
     "options": {...load options, as for run}, "inputs": [...]}

``inputs``: audio paths (relative to fleet_root) for ``asr.whisper_hybrid`` and
``vc.pitch_shift``; texts for ``rag.hybrid`` (at most ``MAX_INPUTS``).

The NPU stage is what the pipeline loaded for these options (``encoder`` of either pipeline:
hailo/rknn on a real board, the static QDQ INT8 ONNX model or the cpu int8 fallback on an
emulated one; CREPE's ``pitch`` model); the reference is the cpu fp32 ONNX graph of the same
stage (``encoder`` fp32 for Whisper, ``encoder_static`` fp32 for MiniLM: the fixed-shape graph
the NPU build compiles, ``pitch`` fp32 for CREPE).

Result::

    {"pipeline", "stage": "encoder", "output": "encoder_out" | "sentence_embedding",
     "reference": {"backend": "onnx", "artifact", "precision": "fp32"},
     "candidate": {"backend", "artifact", "emulated", "emulation", "quantization"},
     "per_input": [{"input", "cosine", "max_abs_err", ...}],
     "summary": {"cosine_mean", "cosine_min", "max_abs_err", "n"}}

Whisper also decodes every clip twice with the board's CPU decoder (same decoder, greedy), once
from each encoder output: ``per_input[i].text_reference`` / ``text_candidate``; the controller
turns them into WER against the reference transcripts. CREPE adds ``pitch``: the absolute
difference (cents) between the F0 decoded from either salience, over the frames the fp32 model
calls voiced (median, mean, p95, share over 50 cents). Cosine is over the flattened output of one
window or text (float64); max_abs_err is max |candidate - reference| over it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import manifest as mf
from .protocol import BadInput, ModelError

MAX_INPUTS = 256


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened, in float64 (1.0 when both are all zero)."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(x), np.linalg.norm(y)
    if na == 0 and nb == 0:
        return 1.0
    return float(x @ y / max(na * nb, 1e-300))


def compare(ref: np.ndarray, cand: np.ndarray) -> dict:
    """{cosine, max_abs_err} of a candidate output against the reference (same shape).

    Raises:
        ModelError: the shapes differ.
    """
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.size != cand.size:
        raise ModelError(f"parity: reference output {ref.shape} and NPU-stage output {cand.shape} differ",
                         "deploy matching artifacts (fleet models build; fleet deploy)")
    cand = cand.reshape(ref.shape)
    return {"cosine": round(cosine(ref, cand), 6),
            "max_abs_err": round(float(np.max(np.abs(ref.astype(np.float64) - cand))), 6)}


def summarize(rows: list[dict]) -> dict:
    """{n, cosine_mean, cosine_min, max_abs_err} over per-item comparisons."""
    if not rows:
        return {"n": 0, "cosine_mean": None, "cosine_min": None, "max_abs_err": None}
    c = np.array([r["cosine"] for r in rows])
    return {"n": len(rows), "cosine_mean": round(float(c.mean()), 6), "cosine_min": round(float(c.min()), 6),
            "max_abs_err": round(float(max(r["max_abs_err"] for r in rows)), 6)}


def reference_model(pipe, role: str, backends: dict):
    """The cpu fp32 ONNX model of ``role`` in the pipeline's model folder, loaded once per pipeline:
    (LoadedModel, manifest Artifact, sha256). Raises ModelError when it is not deployed."""
    cached = getattr(pipe, "_parity_reference", None)
    if cached is not None:
        return cached
    model_dir = Path(pipe.info["model_dir"])
    arts = mf.read_manifest(model_dir)
    art = mf.find(arts, role=role, format="onnx", variant="fp32", target="cpu") or \
        mf.find(arts, role=role, format="onnx", variant="fp32")
    if art is None:
        raise ModelError(f"{model_dir}: no cpu fp32 ONNX {role} to compare against",
                         "deploy the cpu artifacts (fleet deploy): every board gets them")
    sha = mf.verify(art)
    model = backends["onnx"].load(art.path)
    pipe._parity_reference = (model, art, sha)
    return pipe._parity_reference


def _candidate(pipe, config) -> dict:
    """The NPU stage the pipeline loaded: backend, artifact, emulation label, quantization."""
    enc = pipe.info.get(pipe.NPU_STAGE) or {}
    quant = enc.get("quantization")
    if quant is None:  # pipelines that do not report it: read the manifest entry
        a = next((a for a in mf.read_manifest(Path(pipe.info["model_dir"])) if a.file == enc.get("artifact")), None)
        quant = a.get("quantization") if a is not None else None
    emu = enc.get("emulation")
    if emu is None and enc.get("emulated"):
        emu = (f"onnxruntime static QDQ INT8 (cpu build, {quant})" if str(quant or "").startswith("int8-static-qdq")
               else f"onnxruntime {quant or 'fp32'} (cpu build)")
    return {"backend": enc.get("backend"), "artifact": enc.get("artifact"), "emulated": enc.get("emulated"),
            "emulation": emu, "quantization": quant}


def run_parity(agent, args: dict, timings: dict) -> dict:
    """Handle ``parity`` (module docstring).

    Raises:
        BadInput: no/too many/bad inputs, or a pipeline without a parity check.
        ModelError: the reference model is not deployed or fails (and everything ``load`` raises).
    """
    inputs = args.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadInput("parity needs args.inputs, a non-empty list",
                       'pass e.g. "inputs": ["data/speech/jfk.flac"] (audio) or ["a query text"] (rag)')
    if len(inputs) > MAX_INPUTS:
        raise BadInput(f"parity got {len(inputs)} inputs, at most {MAX_INPUTS}", "split them over several requests")
    from .pipelines import PIPELINES

    name = args.get("pipeline")
    have = sorted(n for n, cls in PIPELINES.items() if cls.has_parity())
    if name not in have:
        raise BadInput(f"pipeline {name!r} has no parity check", f"use one of {have}")
    pipe, opts, _ = agent._ensure_loaded({k: v for k, v in args.items() if k != "inputs"}, timings)
    t0 = time.perf_counter()
    c = agent.config
    out = pipe.parity(c, agent.backends, inputs, opts)
    return {"pipeline": name, "stage": pipe.NPU_STAGE, **out, "candidate": _candidate(pipe, c),
            "board": {"board": c.board, "accelerator": c.accelerator, "emulated": c.emulated},
            "total_ms": round((time.perf_counter() - t0) * 1e3, 2)}
