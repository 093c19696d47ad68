"""The two indexes of ``rag.hybrid`` and the on-board embedding cache.

- ``VectorIndex``: exact cosine search (unit vectors, one single-threaded matrix-vector product
  and an argpartition). At these sizes (1-2k documents x 384 dims: ~0.6 M multiply-adds, well under
  a millisecond) an approximate index cannot win, so none is used.
- ``BM25Index``: bm25s (Lù 2024, "BM25S: Orders of magnitude faster lexical search via eager
  sparse scoring"), Lucene's BM25 variant. Tokens: lower-cased ``\\w\\w+`` words without bm25s'
  English stop list, no stemming. k1 = 1.2, b = 0.75 by default: Lucene's BM25Similarity
  defaults (Robertson & Zaragoza 2009 give k1 in [1.2, 2.0], b = 0.75). Measured against
  Anserini's k1 = 0.9, b = 0.4 (hybrid pipeline's BM25 alone, all judged queries): nDCG@10
  Cranfield 0.336 vs 0.316, CISI 0.345 vs 0.321; bm25s' own 1.5/0.75 is within 0.004 of 1.2/0.75.
- ``cached_embeddings``: corpus embeddings stored under ``fleet_root/cache/rag/`` keyed by the
  encoder's and tokenizer's sha256 and the corpus' sha256, so a board embeds a corpus once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

BM25_K1 = 1.2   # Lucene BM25Similarity default
BM25_B = 0.75   # Lucene BM25Similarity default
DOC_FORMAT = "title+text/v1"  # how collection.doc_text builds a document's text (cache key part)


class VectorIndex:
    """Exact cosine search over unit vectors.

    Args:
        ids: doc id per row.
        vectors: f32 [N, D], unit L2 norm per row.
    """

    def __init__(self, ids: list[str], vectors: np.ndarray):
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        self.ids = list(ids)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def search(self, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        """Top ``k`` by cosine (dot product of unit vectors). query f32 [D].
        Returns (doc ids best first, scores f32 [<=k]); ties keep index order."""
        if not self.ids:
            return [], np.zeros(0, np.float32)
        # einsum, not ``@``: right after an onnxruntime run its intra-op threads still spin, and
        # numpy's multithreaded BLAS matvec then took 6-25 ms instead of 0.02 ms (measured on a
        # 2-core machine); einsum's single-threaded loop takes ~0.15 ms for 1460 x 384.
        scores = np.einsum("ij,j->i", self.vectors, query.astype(np.float32))
        return _top(self.ids, scores, k)


def _top(ids: list[str], scores: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    k = min(k, len(ids))
    part = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
    order = part[np.lexsort((part, -scores[part]))]  # score desc, then index asc
    return [ids[i] for i in order], scores[order]


class BM25Index:
    """BM25 over ``texts`` with bm25s (see the module docstring for tokenization and defaults).

    Args:
        ids: doc id per text.
        texts: the documents (non-empty).
        k1, b: BM25 parameters.

    Attributes:
        build_ms: time to tokenize and index (ms).
    """

    def __init__(self, ids: list[str], texts: list[str], k1: float = BM25_K1, b: float = BM25_B):
        import bm25s

        self._bm25s = bm25s
        t = time.perf_counter()
        self.ids = list(ids)
        tokens = bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index(tokens, show_progress=False)
        self.build_ms = (time.perf_counter() - t) * 1e3

    def tokens(self, query: str) -> list[str]:
        """The query's tokens as the index sees them (stop words removed)."""
        return self._bm25s.tokenize(query, stopwords="en", show_progress=False, return_ids=False)[0]

    def search(self, query: str, k: int) -> tuple[list[str], np.ndarray]:
        """Top ``k`` documents with a positive BM25 score. Returns (doc ids, scores f32);
        empty when no query token is in the index."""
        toks = [t for t in self.tokens(query) if t in self.model.vocab_dict]
        if not toks or not self.ids:
            return [], np.zeros(0, np.float32)
        scores = np.asarray(self.model.get_scores(toks), dtype=np.float32)
        ids, s = _top(self.ids, scores, k)
        keep = s > 0
        return [d for d, kp in zip(ids, keep) if kp], s[keep]


def cache_key(encoder_sha: str, tokenizer_sha: str, corpus_sha: str) -> str:
    """32 hex chars identifying (encoder, tokenizer, corpus, DOC_FORMAT)."""
    h = hashlib.sha256("\0".join((encoder_sha, tokenizer_sha, corpus_sha, DOC_FORMAT)).encode())
    return h.hexdigest()[:32]


def cached_embeddings(cache_dir: Path | None, key: str, ids: list[str], build) -> tuple[np.ndarray, dict]:
    """Corpus embeddings from ``cache_dir/<key>.npy`` (+ ``.json``), or ``build()`` and store.

    Args:
        cache_dir: folder (created if missing); None disables the cache.
        key: ``cache_key(...)``.
        ids: the doc ids the rows belong to (checked against the cached list).
        build: callable -> (f32 [N, D], truncated count, info dict).

    Returns:
        (vectors f32 [N, D], info): info has ``cache`` ("hit" | "miss" | "off" | "stale: why"),
        ``embed_ms`` (time spent embedding now, 0 on a hit), ``truncated`` (texts cut at 256
        tokens when the embeddings were made), ``file``.
    """
    if cache_dir is None:
        t = time.perf_counter()
        vecs, truncated = build()
        return vecs, {"cache": "off", "embed_ms": (time.perf_counter() - t) * 1e3, "truncated": truncated}
    npy, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    status = "miss"
    if npy.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            vecs = np.load(npy)
            if info.get("ids") == list(ids) and vecs.shape == (len(ids), info.get("dim")) and vecs.dtype == np.float32:
                return vecs, {"cache": "hit", "embed_ms": 0.0, "truncated": info.get("truncated"),
                              "built_embed_ms": info.get("embed_ms"), "file": str(npy)}
            status = "stale: ids or shape differ"
        except (OSError, ValueError) as e:
            status = f"stale: unreadable ({type(e).__name__})"
    t = time.perf_counter()
    vecs, truncated = build()
    embed_ms = (time.perf_counter() - t) * 1e3
    cache_dir.mkdir(parents=True, exist_ok=True)
    _atomic(npy, lambda f: np.save(f, vecs))
    _atomic(meta, lambda f: f.write(json.dumps({"ids": list(ids), "dim": int(vecs.shape[1]),
                                                "truncated": truncated, "embed_ms": round(embed_ms, 1),
                                                "doc_format": DOC_FORMAT}).encode()))
    return vecs, {"cache": status, "embed_ms": embed_ms, "truncated": truncated, "file": str(npy)}


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
