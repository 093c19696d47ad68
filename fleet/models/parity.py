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

What the comparison feeds and which task metric follows is the model's recipe's
(fleet.models.recipes: ``pipeline``, ``parity_options``, ``parity_task``, ``format_task``); this
module lays out the board, runs the agent and stores the result.

Evaluation inputs are the evaluation side of ``fleet.models.calibration``'s split, so no
calibration item is measured. The result is stored in the manifest entry of the candidate model
(``parity``) unless ``store=False``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fleet.errors import FleetError

EVAL_TEXTS = 64   # MiniLM texts for the per-output comparison (half documents, half queries)


def eval_texts(n: int = EVAL_TEXTS) -> list[str]:
    """``n`` evaluation-side texts of cranfield/cisi (fleet.models.calibration.evaluation_texts)."""
    from fleet.models.calibration import evaluation_texts

    return evaluation_texts(n)


def eval_clips(limit: int | None = None) -> list[dict]:
    """Evaluation-side speech clips, at most ``limit`` (fleet.models.calibration.evaluation_clips)."""
    from fleet.models.calibration import evaluation_clips

    return evaluation_clips(limit)


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
    from fleet.models import recipes
    from fleet.models.calibration import SPLIT_MOD, dataset_folder
    from fleet.models.recipes.base import ParityRequest
    from fleet.paths import artifacts_dir

    recipe = recipes.find(model)
    if recipe is None or recipe.pipeline is None:
        have = [r.name for r in recipes.all_recipes() if r.pipeline]
        raise FleetError(f"no parity recipe for model {model!r}", f"use one of {', '.join(have)}", exit_code=2)
    from fleet.families import registry

    board_of = {f.accelerator: f.board_class for f in registry().families.values()}  # target -> board class
    if target not in board_of:
        raise FleetError(f"unknown target {target!r}", f"use one of {', '.join(board_of)}", exit_code=2)
    root_art = Path(artifacts_root or artifacts_dir())
    t0 = time.perf_counter()
    emulated = target != "cpu"
    options = recipe.parity_options(target, {"precision": "int8", "threads": threads})
    with tempfile.TemporaryDirectory(prefix="fleet-parity-") as tmp:
        data = {"speech": dataset_folder("speech"), collection: dataset_folder(collection)}
        board_root = lay_out_board(Path(tmp), root_art, board=board_of[target], accelerator=target,
                                   emulated=emulated, models=(model,), data=data)
        agent = _agent(board_root)
        try:
            r, task = recipe.parity_task(ParityRequest(
                request=lambda op, args: _request(agent, op, args), options=options, target=target,
                clips=clips, texts=texts, collection=collection, task_metric=task_metric))
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
    from fleet.models import recipes

    recipe = recipes.find(res["model"])
    line = recipe.format_task(res["task"]) if recipe is not None and res["task"].get("metric") else None
    if line:
        lines.append(f"  {line}")
    lines.append(f"  {res['seconds']} s" + (", stored in the manifest" if res.get("stored") else ""))
    return "\n".join(lines)


