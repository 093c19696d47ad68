"""Retrieval pieces of the ``rag.hybrid`` pipeline, small and board-side (numpy, tokenizers,
onnxruntime, bm25s; never torch):

- ``collection``: read and check an IR test collection (corpus.jsonl, queries.jsonl, qrels.tsv);
- ``embedder``: MiniLM sentence embeddings on a backend (static [1,256] or dynamic [B,T]);
- ``index``: exact cosine search, BM25 (bm25s) and the on-board embedding cache;
- ``fusion``: reciprocal rank fusion and weighted score fusion;
- ``ir_metrics``: nDCG@k, recall@k, MRR@k (trec_eval definitions).
"""
