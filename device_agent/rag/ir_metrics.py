"""IR effectiveness measures with trec_eval's definitions (what ir-measures / pytrec_eval compute;
tests/test_rag_metrics.py checks them against ir-measures on real runs).

A ranking is a list of doc ids, best first, without repeats. ``rels`` maps doc id -> graded
relevance (int); a document counts as relevant when its relevance is >= 1 (trec_eval's
``relevance_level`` 1); unjudged documents are non-relevant.

- nDCG@k (Järvelin & Kekäläinen 2002, as trec_eval ``ndcg_cut``): DCG = sum over ranks
  i = 1..k of gain / log2(i + 1) with gain = the relevance value (linear gain, negative values
  count as 0); divided by the DCG of the ideal ranking of all judged documents, cut at k.
- recall@k: relevant documents in the top k / all relevant documents of the query.
- MRR@k (reciprocal rank, ir-measures ``RR@k``): 1 / rank of the first relevant document in the
  top k, 0 when none.

Queries without any relevant document are left out of the means (trec_eval does the same with
queries absent from qrels); ``evaluate`` lists them.
"""

from __future__ import annotations

import math

MEASURES = ("ndcg_at_10", "recall_at_5", "recall_at_10", "mrr_at_10")


def ndcg_at_k(ranking: list[str], rels: dict[str, int], k: int = 10) -> float:
    """nDCG@k in [0, 1]; 0.0 when the query has no relevant document."""
    gains = sorted((max(r, 0) for r in rels.values()), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    if ideal <= 0:
        return 0.0
    dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    return dcg / ideal


def recall_at_k(ranking: list[str], rels: dict[str, int], k: int = 10) -> float:
    """Share of the relevant documents found in the top k, in [0, 1]; 0.0 when none is relevant."""
    relevant = {d for d, r in rels.items() if r >= 1}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: list[str], rels: dict[str, int], k: int = 10) -> float:
    """1 / (1-based rank of the first relevant document within the top k), else 0.0."""
    for i, d in enumerate(ranking[:k]):
        if rels.get(d, 0) >= 1:
            return 1.0 / (i + 1)
    return 0.0


def per_query(ranking: list[str], rels: dict[str, int]) -> dict[str, float]:
    """Every measure of MEASURES for one query."""
    return {"ndcg_at_10": ndcg_at_k(ranking, rels, 10), "recall_at_5": recall_at_k(ranking, rels, 5),
            "recall_at_10": recall_at_k(ranking, rels, 10), "mrr_at_10": mrr_at_k(ranking, rels, 10)}


def evaluate(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict:
    """Mean of every measure over the judged queries of ``run``.

    Args:
        run: query id -> ranking (doc ids, best first).
        qrels: query id -> {doc id: relevance}.

    Returns:
        {"means": {measure: float}, "queries": n evaluated, "per_query": {qid: {measure: float}},
         "unjudged": [query ids of run with no relevant document, skipped]}.
    """
    per, unjudged = {}, []
    for qid, ranking in run.items():
        rels = qrels.get(qid, {})
        if not any(r >= 1 for r in rels.values()):
            unjudged.append(qid)
            continue
        per[qid] = per_query(ranking, rels)
    n = len(per)
    means = {m: (sum(v[m] for v in per.values()) / n if n else 0.0) for m in MEASURES}
    return {"means": means, "queries": n, "per_query": per, "unjudged": unjudged}
