"""``fleet models parity MODEL [--target T]``: the fp32 reference against what the target runs.

On the controller there is no NPU, so the target runs as an emulated board does: a board of the
target's class is laid out locally (``fleet.deploy.local.lay_out_board``: the same artifact
selection a deploy makes, symlinked) and the device agent runs in-process. The agent's
``parity`` op (``device_agent.parity``) feeds the same evaluation inputs to the cpu fp32 ONNX
stage and to the board's NPU stage (for an NPU target: the static QDQ INT8 emulation model of
``fleet models build MODEL --target T``; for ``cpu``: the cpu int8 dynamic model) and returns
per-output cosine (mean/min) and max abs error. Task metric deltas (candidate minus reference):

- whisper-tiny.en: WER over the evaluation clips, every clip transcribed twice by the same
  decoder (onnx, fp32 cpu), once from each encoder;
- crepe-tiny: pitch error in cents, |F0 from the candidate's salience - F0 from the fp32
  salience| over the frames the fp32 model calls voiced (median, mean, p95), on the evaluation
  clips (vc.pitch_shift's framing and decoder). The pipeline runs the cpu build's static QDQ INT8
  model on emulated boards (no per-target CREPE build yet), and the result says so;
- minilm-l6-v2: recall@10 (vector-only and hybrid) on a collection (default Cranfield, every
  judged query), the corpus embedded by each encoder (``rag.hybrid`` task=evaluate, static
  [1,256] encoder, no cache).

Evaluation inputs are the evaluation side of ``fleet.models.calibration``'s split, so no
calibration item is measured. The result is stored in the manifest entry of the candidate model
(``parity``) unless ``store=False``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fleet.errors import FleetError

PIPELINE_OF = {"whisper-tiny.en": "asr.whisper_hybrid", "minilm-l6-v2": "rag.hybrid", "crepe-tiny": "vc.pitch_shift"}
EVAL_TEXTS = 64   # MiniLM texts for the per-output comparison (half documents, half queries)
RECALL_K = 10


def eval_texts(n: int = EVAL_TEXTS) -> list[str]:
    """``n`` evaluation-side texts of cranfield/cisi: half documents, half queries, spread by hash."""
    import hashlib

    from fleet.models.calibration import rag_texts

    rows = rag_texts(split="evaluation")
    order = sorted(rows, key=lambda r: hashlib.sha256(r["key"].encode()).hexdigest())
    docs = [r["text"] for r in order if ":doc:" in r["key"]][: n - n // 2]
    queries = [r["text"] for r in order if ":query:" in r["key"]][: n // 2]
    return docs + queries


def eval_clips(limit: int | None = None) -> list[dict]:
    """Evaluation-side speech clips (manifest rows), in manifest order, at most ``limit``."""
    from fleet.models.calibration import speech_items

    clips = speech_items(split="evaluation")
    return clips[:limit] if limit else clips


def _agent(root: Path):
    from device_agent.agent import Agent
    from device_agent.config import load_config

    return Agent(load_config(root), sensors=[])


def _request(agent, op: str, args: dict) -> dict:
    from device_agent.protocol import Request

    rep = agent.handle(Request(1, op, args))
    if not rep.ok:
        e = rep.error or {}
        raise FleetError(f"agent {op} failed: {e.get('type')}: {e.get('message')}", e.get("fix") or "see the message",
                         exit_code=3)
    return rep.result


def whisper_task(agent, clips: list[dict], options: dict) -> tuple[dict, dict]:
    """(parity op result, {wer_reference, wer_candidate, wer_delta, cer_*, clips})."""
    from fleet.metrics.asr import wer_cer

    r = _request(agent, "parity", {"pipeline": PIPELINE_OF["whisper-tiny.en"], "options": options,
                                   "inputs": [f"data/speech/{c['audio']}" for c in clips]})
    refs = [c["text"] for c in clips]
    w_ref, c_ref = wer_cer(refs, [p["text_reference"] for p in r["per_input"]])
    w_cand, c_cand = wer_cer(refs, [p["text_candidate"] for p in r["per_input"]])
    changed = sum(p["text_reference"] != p["text_candidate"] for p in r["per_input"])
    return r, {"metric": "wer", "clips": len(clips), "wer_reference": round(w_ref, 5),
               "wer_candidate": round(w_cand, 5), "wer_delta": round(w_cand - w_ref, 5),
               "cer_reference": round(c_ref, 5), "cer_candidate": round(c_cand, 5),
               "cer_delta": round(c_cand - c_ref, 5), "transcripts_changed": changed}


def crepe_task(agent, clips: list[dict], options: dict) -> tuple[dict, dict]:
    """(parity op result, {pitch error in cents of the candidate's F0 against the fp32 F0})."""
    r = _request(agent, "parity", {"pipeline": PIPELINE_OF["crepe-tiny"], "options": options,
                                   "inputs": [f"data/speech/{c['audio']}" for c in clips]})
    return r, {"metric": "pitch_cents", "clips": len(clips), **r["pitch"]}


def minilm_task(agent, options: dict, collection: str = "cranfield", texts: int = EVAL_TEXTS,
                task_metric: bool = True) -> tuple[dict, dict]:
    """(parity op result, {recall@10 vector/hybrid reference, candidate, delta}) on ``collection``."""
    pipe = PIPELINE_OF["minilm-l6-v2"]
    r = _request(agent, "parity", {"pipeline": pipe, "options": options, "inputs": eval_texts(texts)})
    if not task_metric:
        return r, {}
    out = {"metric": f"recall_at_{RECALL_K}", "collection": collection}
    for side, opts in (("reference", {**options, "precision": "fp32", "encoder": "static"}),
                       ("candidate", options)):
        ev = _request(agent, "run", {"pipeline": pipe, "input": f"data/{collection}", "telemetry": False,
                                     "options": {**opts, "cache": False, "per_query": False}})
        for mode in ("vector", "hybrid"):
            out[f"{mode}_recall_at_10_{side}"] = ev["metrics"][mode]["recall_at_10"]
            out[f"{mode}_ndcg_at_10_{side}"] = ev["metrics"][mode]["ndcg_at_10"]
        out[f"encoder_{side}"] = ev["encoder"]["artifact"]
        out["queries"] = ev["queries"]["evaluated"]
    for mode in ("vector", "hybrid"):
        out[f"{mode}_recall_at_10_delta"] = round(out[f"{mode}_recall_at_10_candidate"]
                                                  - out[f"{mode}_recall_at_10_reference"], 5)
    return r, out


def _candidate_entry(entries: list[dict], model: str, target: str, artifact: str) -> dict | None:
    """The manifest entry of the candidate file the board ran (by target and file name)."""
    for e in entries:
        if e.get("model") == model and e.get("target") == target and Path(e["path"]).name == Path(artifact).name:
            return e
    return None


def store_parity(artifacts_root: Path, model: str, target: str, artifact: str, parity: dict) -> bool:
    """Write ``parity`` into the candidate's manifest entry. Returns False if no entry matched."""
    from fleet.models import manifest as mf

    entries = mf.read_manifest(artifacts_root)
    e = _candidate_entry(entries, model, target, artifact)
    if e is None:
        return False
    e["parity"] = parity
    mf.write_manifest(artifacts_root, entries)
    return True


def run_parity(model: str, target: str = "cpu", artifacts_root: Path | None = None, *,
               clips: int | None = None, texts: int = EVAL_TEXTS, collection: str = "cranfield",
               task_metric: bool = True, store: bool = True, threads: int = 0) -> dict:
    """Compare the fp32 reference with what ``target`` runs, on the evaluation set.

    Args:
        model: ``whisper-tiny.en``, ``minilm-l6-v2`` or ``crepe-tiny``.
        target: ``cpu`` (int8 dynamic vs fp32), ``hailo8l``, ``hailo8`` or ``rk3588`` (the
            target build's static QDQ INT8 emulation vs fp32).
        artifacts_root: artifacts with manifest.json (default ``fleet.paths.artifacts_dir()``).
        clips: Whisper: at most this many evaluation clips (default all, 11).
        texts: MiniLM: texts for the per-output comparison.
        collection: MiniLM: the collection for recall@10.
        task_metric: MiniLM: also embed the collection twice for recall@10 (about 2 x 1 min).
        store: write the result into the candidate's manifest entry.
        threads: onnxruntime intra-op threads (0 = default).

    Returns:
        {"model", "target", "emulation", "reference", "candidate", "outputs": {name: {cosine_mean,
        cosine_min, max_abs_err, n}}, "task": {...deltas}, "split", "seconds", "stored"}.

    Raises:
        FleetError: unknown model/target, artifacts missing, no emulation model built for an NPU
            target (says which build to run), or the agent failed.
    """
    from fleet.deploy.local import lay_out_board
    from fleet.models.calibration import SPLIT_MOD, dataset_folder
    from fleet.paths import artifacts_dir

    if model not in PIPELINE_OF:
        raise FleetError(f"no parity recipe for model {model!r}", f"use one of {', '.join(PIPELINE_OF)}", exit_code=2)
    from fleet.families import registry

    board_of = {f.accelerator: f.board_class for f in registry().families.values()}  # target -> board class
    if target not in board_of:
        raise FleetError(f"unknown target {target!r}", f"use one of {', '.join(board_of)}", exit_code=2)
    root_art = Path(artifacts_root or artifacts_dir())
    t0 = time.perf_counter()
    emulated = target != "cpu"
    options = {"precision": "int8", "threads": threads}
    if model == "minilm-l6-v2":
        options["encoder"] = "static" if target == "cpu" else "auto"
    with tempfile.TemporaryDirectory(prefix="fleet-parity-") as tmp:
        data = {"speech": dataset_folder("speech"), collection: dataset_folder(collection)}
        board_root = lay_out_board(Path(tmp), root_art, board=board_of[target], accelerator=target,
                                   emulated=emulated, models=(model,), data=data)
        agent = _agent(board_root)
        try:
            if model == "whisper-tiny.en":
                r, task = whisper_task(agent, eval_clips(clips), options)
            elif model == "crepe-tiny":
                r, task = crepe_task(agent, eval_clips(clips), options)
            else:
                r, task = minilm_task(agent, options, collection, texts, task_metric)
        finally:
            agent.close()
    cand = r["candidate"]
    if emulated and not str(cand.get("quantization") or "").startswith("int8-static-qdq"):
        raise FleetError(f"no static QDQ INT8 emulation model of {model} for {target} in {root_art} "
                         f"(the board fell back to: {cand.get('emulation')})",
                         f"build it: fleet models build {model} --target {target}", exit_code=3)
    result = {"model": model, "target": target, "stage": r["stage"],
              "emulation": cand.get("emulation") or (f"cpu {cand.get('quantization')}" if target == "cpu" else None),
              "reference": r["reference"], "candidate": cand,
              "outputs": {r["output"]: r["summary"]}, "task": task,
              "split": f"evaluation side of fleet.models.calibration (sha256 key mod {SPLIT_MOD} != 0)",
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "seconds": round(time.perf_counter() - t0, 1)}
    result["stored"] = bool(store and store_parity(root_art, model, target, cand["artifact"],
                                                   {k: result[k] for k in ("emulation", "outputs", "task",
                                                                           "split", "measured_at")}))
    return result


def format_table(res: dict) -> str:
    """A short plain-text summary of ``run_parity``'s result."""
    lines = [f"{res['model']} --target {res['target']}: {res['emulation']}",
             f"  reference {res['reference']['artifact']} (fp32)  vs  candidate {res['candidate']['artifact']}"]
    for name, s in res["outputs"].items():
        lines.append(f"  {name}: cosine mean {s['cosine_mean']:.5f} min {s['cosine_min']:.5f}, "
                     f"max abs err {s['max_abs_err']:.4g} (n={s['n']})")
    t = res["task"]
    if t.get("metric") == "wer":
        lines.append(f"  WER {t['wer_reference']:.2%} -> {t['wer_candidate']:.2%} (delta {t['wer_delta']:+.2%}, "
                     f"{t['clips']} clips, {t['transcripts_changed']} transcripts changed)")
    elif t.get("metric") == "pitch_cents":
        lines.append(f"  pitch |F0 difference| median {t['median_abs_cents']} cents, mean {t['mean_abs_cents']}, "
                     f"p95 {t['p95_abs_cents']}, {t['over_50_cents']:.1%} over 50 cents "
                     f"({t['voiced_frames']} voiced frames, {t['clips']} clips)")
    elif t.get("metric"):
        lines.append(f"  recall@10 vector {t['vector_recall_at_10_reference']:.4f} -> "
                     f"{t['vector_recall_at_10_candidate']:.4f} (delta {t['vector_recall_at_10_delta']:+.4f}), "
                     f"hybrid {t['hybrid_recall_at_10_reference']:.4f} -> {t['hybrid_recall_at_10_candidate']:.4f} "
                     f"(delta {t['hybrid_recall_at_10_delta']:+.4f}) on {t['collection']} ({t['queries']} queries)")
    lines.append(f"  {res['seconds']} s" + (", stored in the manifest" if res.get("stored") else ""))
    return "\n".join(lines)


