"""device_agent.rag.ir_metrics and fusion: hand-checked cases, and the metrics cross-checked
against ir-measures (pytrec_eval underneath) on real BM25 runs over Cranfield and CISI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from device_agent.rag import fusion, ir_metrics
from device_agent.rag.collection import load_collection
from device_agent.rag.index import BM25Index
from fleet.datasets.local import require

REPO = Path(__file__).resolve().parents[1]
CRANFIELD, CISI = require("cranfield"), require("cisi")  # in the data root ($FLEET_DATA)


def test_ndcg_hand_computed():
    rels = {"a": 3, "b": 1, "c": 2}
    # ranking: b, x, a -> DCG = 1/log2(2) + 0 + 3/log2(4); ideal: 3, 2, 1
    dcg = 1 / math.log2(2) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ir_metrics.ndcg_at_k(["b", "x", "a"], rels, 10) == pytest.approx(dcg / idcg)
    assert ir_metrics.ndcg_at_k(["a", "c", "b"], rels, 10) == pytest.approx(1.0)
    assert ir_metrics.ndcg_at_k(["x"], {}, 10) == 0.0
    # cut at k: relevant documents below rank k count nothing; the ideal is cut at k too
    assert ir_metrics.ndcg_at_k(["x", "a"], rels, 1) == 0.0


def test_recall_and_mrr_hand_computed():
    rels = {"a": 1, "b": 2, "c": 0}  # c judged non-relevant
    assert ir_metrics.recall_at_k(["c", "a", "x"], rels, 5) == pytest.approx(0.5)
    assert ir_metrics.recall_at_k(["c", "a", "b"], rels, 2) == pytest.approx(0.5)
    assert ir_metrics.mrr_at_k(["c", "x", "b"], rels, 10) == pytest.approx(1 / 3)
    assert ir_metrics.mrr_at_k(["c", "x", "b"], rels, 2) == 0.0


def test_evaluate_skips_and_lists_unjudged_queries():
    ev = ir_metrics.evaluate({"1": ["a"], "2": ["a"]}, {"1": {"a": 1}, "2": {"b": 0}})
    assert ev["queries"] == 1 and ev["unjudged"] == ["2"]
    assert ev["means"]["mrr_at_10"] == 1.0


def test_rrf_matches_formula():
    fused = dict(fusion.rrf([["a", "b", "c"], ["c", "a"]], k=60, top=10))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert [d for d, _ in fusion.rrf([["a", "b", "c"], ["c", "a"]])] == ["a", "c", "b"]
    with pytest.raises(ValueError):
        fusion.rrf([["a"]], k=0)


def test_weighted_fusion_minmax():
    import numpy as np

    out = dict(fusion.weighted([(["a", "b"], np.array([0.9, 0.5])), (["b", "c"], np.array([10.0, 2.0]))],
                               [0.5, 0.5]))
    assert out == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})
    assert fusion.minmax(np.array([2.0, 2.0])).tolist() == [1.0, 1.0]


def _bm25_run(col, depth=100):
    keep = [i for i, t in enumerate(col.doc_texts) if t]
    idx = BM25Index([col.doc_ids[i] for i in keep], [col.doc_texts[i] for i in keep])
    return {q: idx.search(t, depth) for q, t in col.judged_queries()}


@pytest.mark.parametrize("name", ["cranfield", "cisi"])
def test_metrics_match_ir_measures_on_real_runs(name):
    """Our nDCG@10, R@5, R@10, RR@10 equal ir-measures' (pytrec_eval) on a real BM25 run."""
    ir_measures = pytest.importorskip("ir_measures")
    col = load_collection(require(name))
    raw = _bm25_run(col)
    ours = ir_metrics.evaluate({q: ids for q, (ids, _) in raw.items()}, col.qrels)
    # strictly decreasing scores by rank, so trec_eval's tie-breaking cannot reorder the run
    run = {q: {d: float(len(ids) - r) for r, d in enumerate(ids)} for q, (ids, _) in raw.items() if ids}
    qrels = {q: rels for q, rels in col.qrels.items() if q in ours["per_query"]}
    M = ir_measures
    measures = {"ndcg_at_10": M.nDCG @ 10, "recall_at_5": M.R @ 5, "recall_at_10": M.R @ 10,
                "mrr_at_10": M.RR @ 10}
    ref = M.calc_aggregate(list(measures.values()), qrels, run)
    # queries that retrieved nothing are absent from the run: ir-measures leaves them out, we
    # score them 0; compare over the same set
    n_all = ours["queries"]
    for key, meas in measures.items():
        n_run = sum(1 for q in ours["per_query"] if q in run)
        ours_run = sum(v[key] for q, v in ours["per_query"].items() if q in run) / n_run
        assert ours_run == pytest.approx(ref[meas], abs=1e-9), (name, key)
    assert n_all == {"cranfield": 225, "cisi": 76}[name]
    # sanity against the READMEs' throwaway BM25 (recall@10 about 0.38 / 0.08)
    assert 0.25 < ours["means"]["recall_at_10"] < 0.5 if name == "cranfield" else 0.04 < ours["means"]["recall_at_10"] < 0.2


def test_board_side_imports_and_bm25_without_scipy():
    """Boards have no scipy/torch: rag.hybrid's modules import without them, and bm25s gives the
    same rankings without scipy as with it (the controller has scipy)."""
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "sys.modules['scipy'] = None; sys.modules['scipy.sparse'] = None\n"
        "import device_agent.pipelines.rag_hybrid\n"
        "from device_agent.rag.collection import load_collection\n"
        "from device_agent.rag.index import BM25Index\n"
        f"c = load_collection({str(CRANFIELD)!r})\n"
        "keep = [i for i, t in enumerate(c.doc_texts) if t]\n"
        "ix = BM25Index([c.doc_ids[i] for i in keep], [c.doc_texts[i] for i in keep])\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}"
        " & {'torch', 'transformers', 'sentence_transformers', 'scipy', 'sklearn', 'fleet'})\n"
        "print(json.dumps({'bad': bad, 'top': {q: ix.search(t, 10)[0] for q, t in c.queries[:30]}}))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["bad"] == []
    col = load_collection(CRANFIELD)
    keep = [i for i, t in enumerate(col.doc_texts) if t]
    ix = BM25Index([col.doc_ids[i] for i in keep], [col.doc_texts[i] for i in keep])
    assert out["top"] == {q: ix.search(t, 10)[0] for q, t in col.queries[:30]}


def test_stage_percentiles_follow_loadgen():
    """Stage times: sorted[floor(n * p)], none from fewer samples than the percentile needs, n shown."""
    from device_agent.pipelines.rag_hybrid import _pct

    ten = [float(v) for v in range(10, 0, -1)]  # 10 samples: p50 = sorted[5] = 6, no p90 (needs 11)
    r = _pct(ten)
    assert (r["n"], r["p50_ms"], r["p90_ms"], r["mean_ms"]) == (10, 6.0, None, 5.5)
    assert "p90" in r["unreported"]["p90_ms"] and "11" in r["unreported"]["p90_ms"]
    r = _pct([float(v) for v in range(1, 12)])  # 11 samples: p90 = sorted[9] = 10, never the max
    assert (r["p50_ms"], r["p90_ms"]) == (6.0, 10.0) and "unreported" not in r
    assert _pct([1.0, 2.0])["p50_ms"] is None and _pct([]) == {"n": 0, "p50_ms": None, "p90_ms": None, "mean_ms": None}
