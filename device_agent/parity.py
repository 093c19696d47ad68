"""The ``parity`` op: the same inputs through the CPU fp32 reference and through the board's NPU
stage (an emulated board: its emulation model), both outputs compared on the board.

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
REFERENCE_ROLE = {"asr.whisper_hybrid": "encoder", "rag.hybrid": "encoder_static", "vc.pitch_shift": "pitch"}


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


def _reference(pipe, role: str, backends: dict):
    """The cpu fp32 ONNX model of ``role`` in the pipeline's model folder, loaded once per pipeline."""
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
    enc = pipe.info.get("encoder") or pipe.info.get("pitch") or {}
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


def _whisper(pipe, config, backends: dict, inputs: list, options: dict) -> dict:
    from .audio import load_audio
    from .mel import log_mel
    from .pipelines.asr_whisper import split_windows

    ref_model, ref_art, ref_sha = _reference(pipe, REFERENCE_ROLE[pipe.name], backends)
    decode = pipe._decode_onnx if pipe.info["decoder"]["backend"] == "onnx" else pipe._decode_ct2
    rows, per_window = [], []
    for inp in inputs:
        if not isinstance(inp, str) or not inp:
            raise BadInput(f"parity input {inp!r} is not an audio path", "pass paths like data/speech/jfk.flac")
        path = config.resolve(inp, "input")
        audio = load_audio(path, max_seconds=options["max_audio_s"])
        ms = {"mel": 0.0, "encoder": 0.0, "cross_kv": 0.0, "decoder": 0.0}
        ref_ids, cand_ids, cmp = [], [], []
        for start, end in split_windows(audio, search_s=options["window_search_s"]):
            mel = log_mel(audio[start:end], pipe.filters)
            ref = ref_model.run({ref_model.inputs[0].name: mel})[ref_model.outputs[0].name]
            ref = np.asarray(ref, np.float32).reshape(1, -1, ref.shape[-1])
            cand = pipe._encode(mel)
            cmp.append(compare(ref, cand))
            ref_ids += decode(ref, options, ms)
            cand_ids += decode(cand, options, ms)
        per_window += cmp
        rows.append({"input": inp, "windows": len(cmp),
                     "cosine": min(c["cosine"] for c in cmp),
                     "max_abs_err": max(c["max_abs_err"] for c in cmp),
                     "text_reference": pipe.tokenizer.decode(ref_ids, skip_special_tokens=True).strip(),
                     "text_candidate": pipe.tokenizer.decode(cand_ids, skip_special_tokens=True).strip()})
    return {"output": "encoder_out", "reference": {"backend": "onnx", "artifact": ref_art.file,
                                                   "precision": "fp32", "sha256": ref_sha},
            "per_input": rows, "summary": summarize(per_window)}


def _rag(pipe, config, backends: dict, inputs: list, options: dict) -> dict:
    from .rag.embedder import Embedder

    ref_model, ref_art, ref_sha = _reference(pipe, REFERENCE_ROLE[pipe.name], backends)
    ref = Embedder(ref_model, pipe.embedder.tok)
    rows = []
    for i, text in enumerate(inputs):
        if not isinstance(text, str) or not text.strip():
            raise BadInput(f"parity input {i} is not a non-empty text", "pass texts (queries or documents)")
        # raw graph outputs (before the pipeline's re-normalisation): what the NPU stage returns
        enc = pipe.embedder.tok.encode(text)
        a = ref._arrays([enc], ref.static_len or len(enc.ids))
        b = pipe.embedder._arrays([enc], pipe.embedder.static_len or len(enc.ids))
        r = ref._run(*a)
        c = pipe.embedder._run(*b)
        rows.append({"input": i, "tokens": len(enc.ids), "truncated": bool(enc.overflowing), **compare(r, c)})
    return {"output": "sentence_embedding",
            "reference": {"backend": "onnx", "artifact": ref_art.file, "precision": "fp32", "sha256": ref_sha},
            "per_input": rows, "summary": summarize(rows)}


def _crepe(pipe, config, backends: dict, inputs: list, options: dict) -> dict:
    """CREPE salience parity + pitch difference (cents) per clip, on the loud frames the
    pipeline would infer (same framing, hop, silence gate and decoder as ``vc.pitch_shift``)."""
    from .audio import load_audio
    from .vc import crepe

    ref_model, ref_art, ref_sha = _reference(pipe, REFERENCE_ROLE[pipe.name], backends)

    def ref_infer(frames):
        t = ref_model.inputs[0]
        x = np.ascontiguousarray(frames, np.float32).reshape([d if isinstance(d, int) else -1 for d in t.shape])
        y = ref_model.run({t.name: x})[ref_model.outputs[0].name]
        return np.asarray(y, np.float32).reshape(len(frames), crepe.PITCH_BINS)

    hop = 16000 * options["crepe_hop_ms"] // 1000
    dec = crepe.decode_viterbi if options["decoder"] == "viterbi" else crepe.decode_weighted
    rows, all_cents = [], []
    for inp in inputs:
        if not isinstance(inp, str) or not inp:
            raise BadInput(f"parity input {inp!r} is not an audio path", "pass paths like data/speech/jfk.flac")
        audio = load_audio(config.resolve(inp, "input"), max_seconds=options["max_audio_s"])
        frames, rms_db = crepe.frame_audio(audio, hop)
        loud = rms_db >= options["silence_db"]
        if not loud.any():
            raise BadInput(f"{inp}: every frame is below silence_db={options['silence_db']} dBFS",
                           "pass speech or music, or lower silence_db")
        ref = crepe.run_batched(frames[loud], pipe.batch, ref_infer)
        cand = crepe.run_batched(frames[loud], pipe.batch, pipe._infer)
        f_ref, b_ref = dec(ref, options["fmin"], options["fmax"])
        f_cand, _ = dec(cand, options["fmin"], options["fmax"])
        voiced = crepe.periodicity(ref, b_ref) >= options["voicing_threshold"]
        cents = np.abs(crepe.hz_to_cents(f_cand[voiced]) - crepe.hz_to_cents(f_ref[voiced]))
        all_cents.append(cents)
        rows.append({"input": inp, "frames": int(loud.sum()), "voiced_frames": int(voiced.sum()),
                     "median_abs_cents": round(float(np.median(cents)), 3) if cents.size else None,
                     "mean_abs_cents": round(float(cents.mean()), 3) if cents.size else None,
                     **compare(ref, cand)})
    c = np.concatenate(all_cents) if all_cents else np.zeros(0)
    pitch = {"voiced_frames": int(c.size),
             "median_abs_cents": round(float(np.median(c)), 3) if c.size else None,
             "mean_abs_cents": round(float(c.mean()), 3) if c.size else None,
             "p95_abs_cents": round(float(np.percentile(c, 95)), 3) if c.size else None,
             "over_50_cents": round(float((c > 50).mean()), 5) if c.size else None}
    return {"output": "salience", "stage": "pitch",
            "reference": {"backend": "onnx", "artifact": ref_art.file, "precision": "fp32", "sha256": ref_sha},
            "per_input": rows, "summary": summarize(rows), "pitch": pitch}


HANDLERS = {"asr.whisper_hybrid": _whisper, "rag.hybrid": _rag, "vc.pitch_shift": _crepe}


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
    name = args.get("pipeline")
    if name not in HANDLERS:
        raise BadInput(f"pipeline {name!r} has no parity check", f"use one of {sorted(HANDLERS)}")
    pipe, opts, _ = agent._ensure_loaded({k: v for k, v in args.items() if k != "inputs"}, timings)
    t0 = time.perf_counter()
    c = agent.config
    out = HANDLERS[name](pipe, c, agent.backends, inputs, opts)
    return {"pipeline": name, "stage": "encoder", **out, "candidate": _candidate(pipe, c),
            "board": {"board": c.board, "accelerator": c.accelerator, "emulated": c.emulated},
            "total_ms": round((time.perf_counter() - t0) * 1e3, 2)}
