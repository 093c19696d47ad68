"""Emulated NPU numerics: fp32 vs the static QDQ INT8 emulation model, per model and target.

    .venv/bin/python benchmarks/emulation_fidelity.py [--targets hailo8l,rk3588]
        [--models whisper-tiny.en,minilm-l6-v2] [--reps 5] [--no-recall] [--scheme-sweep]
        [--json OUT] [--markdown OUT]

For each model's NPU stage (Whisper encoder, MiniLM static [1,256] encoder) and each target:

- latency ratio on this machine: the fp32 graph and the emulated INT8 graph run on the same
  inputs in one process, interleaved input by input (load from other processes hits both alike),
  onnxruntime CPU, same thread count; ratio = INT8 median / fp32 median (ms per call);
- (crepe-tiny: the pitch stage of vc.pitch_shift; the CREPE build has no per-target model yet, so
  both targets run the cpu build's static QDQ INT8 model; batches of 64 loud frames are timed)
- task-metric delta (``fleet.models.parity``, evaluation side of the calibration split): WER over
  the 11 evaluation clips for Whisper (same decoder, fp32 vs emulated encoder), recall@10 on
  Cranfield (vector-only and hybrid, all 225 queries, corpus embedded by each encoder) for MiniLM,
  plus output cosine (mean/min) and max abs error.

The emulation model is the target build's (``fleet models build MODEL --target T``: role
``encoder_npu`` variant ``int8``). When a target was not built, the same recipe is applied here to
the cpu fp32 graph (tests/emulation_artifacts.py: calibration set + quantize_static_qdq; Whisper
wrapped to the NHWC [1,1,1000,80] input), and the table says so. hailo8l and rk3588 use one
scheme (INT8 weights per channel, 8-bit activations per tensor, fleet.models.quantize), so their
models are identical when built from the same graph and calibration set; the table gives both.

``--scheme-sweep`` also quantizes each graph per-tensor and compares it with per-channel (cosine
for MiniLM, WER + cosine for Whisper): the measurement behind fleet.models.quantize's choice.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

MODELS = ("whisper-tiny.en", "minilm-l6-v2")
TARGETS = ("hailo8l", "rk3588")


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def target_artifacts(root: Path, model: str, target: str) -> tuple[Path | None, Path | None]:
    """(fp32 NPU graph, QDQ emulation model) of the target build in ``root``, or Nones."""
    doc = json.loads((root / "manifest.json").read_text())
    fp32 = q = None
    for e in doc["artifacts"]:
        if (e["model"], e["target"], e["role"], e["format"]) == (model, target, "encoder_npu", "onnx"):
            if e["variant"] == "fp32":
                fp32 = root / e["path"]
            elif e["variant"] == "int8" and str(e.get("quantization", "")).startswith("int8-static-qdq"):
                q = root / e["path"]
    return fp32, q


def sessions(fp32: Path, int8: Path, threads: int):
    import onnxruntime as ort

    def sess(p):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])

    return sess(fp32), sess(int8)


def stage_inputs(model: str, n: int) -> list[list[np.ndarray]]:
    """n evaluation inputs of the stage, per-sample arrays in graph-input order (channels-first
    mel [1,80,1000] for Whisper; input_ids, attention_mask [1,256] for MiniLM)."""
    from fleet.models.calibration import speech_items
    from fleet.models.mel import load_audio, log_mel
    from fleet.models.parity import eval_texts

    if model == "crepe-tiny":  # batches of 64 loud 1024-sample frames (vc.pitch_shift's framing)
        from device_agent.vc import crepe

        batches = []
        for c in speech_items(split="evaluation")[:n]:
            frames, rms_db = crepe.frame_audio(load_audio(c["path"]), 160)
            f = frames[rms_db >= crepe.DEFAULT_SILENCE_DB][:64]
            if len(f) == 64:
                batches.append([np.ascontiguousarray(f, np.float32)])
        return batches
    if model == "whisper-tiny.en":
        filters = np.load(REPO / "artifacts" / "cpu" / model / "mel_filters.npy")
        clips = speech_items(split="evaluation")[:n]
        return [[log_mel(load_audio(c["path"]), filters)[None]] for c in clips]
    from device_agent.rag.embedder import load_tokenizer

    tok = load_tokenizer(REPO / "artifacts" / "cpu" / model / "tokenizer.json")
    out = []
    for t in eval_texts(n):
        e = tok.encode(t)
        ids = np.zeros((1, 256), np.int64)
        mask = np.zeros_like(ids)
        ids[0, :len(e.ids)] = e.ids
        mask[0, :len(e.ids)] = e.attention_mask
        out.append([ids, mask])
    return out


def _feed(sess, arrays):
    from device_agent.pipelines.asr_whisper import mel_layout

    ins = sess.get_inputs()
    if len(ins) == 1 and arrays[0].ndim == 3:  # mel: the graph's own layout (NHWC for encoder_npu)
        return {ins[0].name: mel_layout(arrays[0], ins[0].shape)}
    return {i.name: a for i, a in zip(ins, arrays)}


def latency(fp32: Path, int8: Path, inputs, reps: int, threads: int) -> dict:
    """Interleaved timing of both graphs on the same inputs: medians (ms) and the ratio."""
    s32, s8 = sessions(fp32, int8, threads)
    for s in (s32, s8):  # warm-up
        s.run(None, _feed(s, inputs[0]))
    t32, t8 = [], []
    for r in range(reps):
        for i, x in enumerate(inputs):
            order = (s32, s8) if (r + i) % 2 == 0 else (s8, s32)
            for s in order:
                f = _feed(s, x)
                t = time.perf_counter()
                s.run(None, f)
                (t32 if s is s32 else t8).append((time.perf_counter() - t) * 1e3)
    m32, m8 = float(np.median(t32)), float(np.median(t8))
    return {"fp32_ms": round(m32, 2), "int8_ms": round(m8, 2), "ratio": round(m8 / m32, 3), "n": len(t32)}


def scheme_sweep(model: str, tmp: Path, out: list) -> None:
    """per-channel vs per-tensor static QDQ on the cpu fp32 graph (MiniLM cosine; Whisper WER)."""
    from emulation_artifacts import emulation_root

    from fleet.models.parity import run_parity

    for per_channel in (True, False):
        root = emulation_root(tmp / f"sweep-{model}-{per_channel}", "hailo8l", (model,), calib_n=64,
                              per_channel=per_channel)
        res = run_parity(model, "hailo8l", root, task_metric=False, store=False)
        row = {"model": model, "per_channel": per_channel, **next(iter(res["outputs"].values()))}
        if res["task"].get("metric") == "wer":
            row.update({k: res["task"][k] for k in ("wer_reference", "wer_candidate", "wer_delta",
                                                      "transcripts_changed")})
        out.append(row)
        print(json.dumps(row), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--artifacts", type=Path, default=REPO / "artifacts")
    ap.add_argument("--reps", type=int, default=3, help="timing passes over the inputs")
    ap.add_argument("--inputs", type=int, default=11, help="inputs timed per model (clips / texts)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-recall", action="store_true", help="MiniLM: skip recall@10 (2 corpus embeddings)")
    ap.add_argument("--scheme-sweep", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()

    from emulation_artifacts import emulation_root

    from fleet.models.parity import run_parity

    tmp = Path(tempfile.mkdtemp(prefix="emu-fidelity-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    rows, done = [], {}
    for model in args.models.split(","):
        inputs = stage_inputs(model, args.inputs)
        for target in args.targets.split(","):
            fp32, q = target_artifacts(args.artifacts, model, target)
            root, source = args.artifacts, f"fleet models build {model} --target {target}"
            if model == "crepe-tiny":  # no per-target CREPE build: the cpu build's static QDQ model
                fp32 = REPO / "artifacts" / "cpu" / model / "crepe_tiny.onnx"
                q = REPO / "artifacts" / "cpu" / model / "crepe_tiny.int8.onnx"
                source = "fleet models build crepe-tiny (cpu build's static QDQ INT8; no per-target build)"
            elif q is None:
                root = emulation_root(tmp / f"{model}-{target}", target, (model,), calib_n=64)
                fp32, q = None, root / target / model / "encoder_npu.int8.onnx"
                source = "cpu fp32 graph quantized here (no target build in --artifacts)"
            if fp32 is None or not fp32.is_file():
                fp32 = REPO / "artifacts" / "cpu" / model / ("encoder.onnx" if model.startswith("whisper")
                                                             else "encoder_static.onnx")
            sha = _sha(q)
            lat = latency(fp32, q, inputs, args.reps, args.threads)
            if sha in done:  # the same QDQ bytes: same numerics, measured once
                res = done[sha]
                same = f"same model as {res['target']}"
            else:
                res = run_parity(model, target, root, task_metric=not args.no_recall,
                             store=root == args.artifacts and model != "crepe-tiny")
                done[sha] = res
                same = ""
            out = next(iter(res["outputs"].values()))
            row = {"model": model, "target": target, "source": source, "emulation_sha256": sha[:12],
                   "note": same, "fp32_graph": fp32.name, "int8_graph": q.name, **lat,
                   "cosine_mean": out["cosine_mean"], "cosine_min": out["cosine_min"],
                   "max_abs_err": out["max_abs_err"], "task": res["task"],
                   "quantization": res["candidate"].get("quantization")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    sweep = []
    if args.scheme_sweep:
        for model in args.models.split(","):
            scheme_sweep(model, tmp, sweep)
    md = to_markdown(rows, sweep)
    print(md)
    # ratios are measured in one process, interleaved, but load still flatters one side: judge
    # them on a quiet machine (the load average says whether this one was)
    load = os.getloadavg()
    print(f"\n{os.cpu_count()} CPUs, threads={args.threads}; load average at the end "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
    meta = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "threads": args.threads, "reps": args.reps, "load_average": list(load),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "sweep": sweep}, indent=2))
    if args.markdown:
        args.markdown.write_text(md)
    return 0


def _task(t: dict) -> str:
    if t.get("metric") == "wer":
        return (f"WER {t['wer_reference']:.2%} → {t['wer_candidate']:.2%} ({t['wer_delta']:+.2%}, "
                f"{t['clips']} clips, {t['transcripts_changed']} changed)")
    if t.get("metric") == "pitch_cents":
        return (f"pitch ΔF0 (abs) median {t['median_abs_cents']:.2f} / p95 {t['p95_abs_cents']:.1f} cents, "
                f"{t['over_50_cents']:.1%} > 50 cents ({t['voiced_frames']} voiced frames)")
    if t.get("metric"):
        return (f"recall@10 vector {t['vector_recall_at_10_reference']:.4f} → {t['vector_recall_at_10_candidate']:.4f} "
                f"({t['vector_recall_at_10_delta']:+.4f}), hybrid {t['hybrid_recall_at_10_reference']:.4f} → "
                f"{t['hybrid_recall_at_10_candidate']:.4f} ({t['hybrid_recall_at_10_delta']:+.4f})")
    return "–"


def to_markdown(rows: list[dict], sweep: list[dict]) -> str:
    lines = ["| model (NPU stage) | target | fp32 ms | INT8 ms | ratio | cosine mean / min | max abs err | task metric (fp32 → emulated) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['model']} {r['int8_graph']} | {r['target']}{note} | {r['fp32_ms']:.1f} | {r['int8_ms']:.1f} | "
                     f"{r['ratio']:.2f} | {r['cosine_mean']:.4f} / {r['cosine_min']:.4f} | {r['max_abs_err']:.3g} | "
                     f"{_task(r['task'])} |")
    if sweep:
        lines += ["", "| model | weights | cosine mean / min | max abs err | WER fp32 → INT8 |", "|---|---|---|---|---|"]
        for s in sweep:
            wer = (f"{s['wer_reference']:.2%} → {s['wer_candidate']:.2%} ({s['transcripts_changed']} changed)"
                   if "wer_reference" in s else "–")
            lines.append(f"| {s['model']} | {'per channel' if s['per_channel'] else 'per tensor'} | "
                         f"{s['cosine_mean']:.4f} / {s['cosine_min']:.4f} | {s['max_abs_err']:.3g} | {wer} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
