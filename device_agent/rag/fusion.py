"""Fusing a vector ranking and a BM25 ranking into one.

- Reciprocal rank fusion (Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms
  Condorcet and individual Rank Learning Methods", SIGIR 2009): score(d) = sum over rankings of
  w / (k + rank(d)), rank 1-based, k = 60 (the paper's constant).
- Weighted score fusion (a convex combination, as analysed by Bruch, Gai & Ingber, "An Analysis
  of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023): each retriever's candidate scores are
  min-max normalised to [0, 1] over its own candidate list, a document missing from a list gets
  0 there, and score(d) = alpha * vector(d) + (1 - alpha) * bm25(d).

Ties are broken by the order of first appearance (vector list first), so results are
deterministic.
"""

from __future__ import annotations

import numpy as np

RRF_K = 60  # Cormack et al. 2009


def rrf(rankings: list[list[str]], k: int = RRF_K, weights: list[float] | None = None,
        top: int = 10) -> list[tuple[str, float]]:
    """Reciprocal rank fusion.

    Args:
        rankings: doc-id lists, best first (e.g. [vector, bm25]).
        k: the RRF constant (> 0); 60 per Cormack et al. 2009.
        weights: one per ranking (default all 1.0).
        top: how many fused results to return.

    Returns:
        [(doc id, fused score)], best first, at most ``top``.

    Raises:
        ValueError: k <= 0 or weights of the wrong length.
    """
    if k <= 0:
        raise ValueError(f"RRF k must be > 0, got {k}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[str, float] = {}
    for w, ranking in zip(weights, rankings):
        for r, d in enumerate(ranking, 1):
            scores[d] = scores.get(d, 0.0) + w / (k + r)
    order = {d: i for i, d in enumerate(scores)}
    return sorted(scores.items(), key=lambda x: (-x[1], order[x[0]]))[:top]


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scores scaled to [0, 1] (all ones when they are all equal). f64 [n]."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    return np.ones_like(s) if hi - lo <= 0 else (s - lo) / (hi - lo)


def weighted(ranked: list[tuple[list[str], np.ndarray]], weights: list[float],
             top: int = 10) -> list[tuple[str, float]]:
    """Weighted (convex) score fusion of min-max normalised candidate scores.

    Args:
        ranked: per retriever (doc ids best first, their raw scores f32/f64 [n]).
        weights: one per retriever, e.g. [alpha, 1 - alpha].
        top: how many fused results to return.

    Returns:
        [(doc id, fused score in [0, sum(weights)])], best first, at most ``top``.
    """
    if len(weights) != len(ranked):
        raise ValueError(f"{len(weights)} weights for {len(ranked)} retrievers")
    scores: dict[str, float] = {}
    for w, (ids, raw) in zip(weights, ranked):
        for d, s in zip(ids, minmax(raw)):
            scores[d] = scores.get(d, 0.0) + w * float(s)
    order = {d: i for i, d in enumerate(scores)}
    return sorted(scores.items(), key=lambda x: (-x[1], order[x[0]]))[:top]
