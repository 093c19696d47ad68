"""MiniLM sentence embeddings on a backend (artifacts: docs/contracts.md §3, minilm-l6-v2).

The encoder graph takes ``input_ids`` and ``attention_mask`` (int64) and returns
``sentence_embedding`` f32 [B, 384], already mean-pooled over the attention mask and
L2-normalised (the pooling is fused into the graph, so it is timed inside ``inference``).
Here: tokenization with the fast ``tokenizers`` library (truncation at 256 tokens, as
sentence-transformers' max_seq_length for all-MiniLM-L6-v2), padding to the fixed length for a
static [1, 256] encoder, and an L2 re-normalisation in numpy (``normalize``) that makes a
reduced-precision NPU output (FP16/INT8) unit length again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..backends.base import LoadedModel
from ..protocol import ModelError

MAX_TOKENS = 256   # sentence_bert_config.json max_seq_length of all-MiniLM-L6-v2
OUTPUT = "sentence_embedding"


def load_tokenizer(path: Path, max_tokens: int = MAX_TOKENS):
    """A ``tokenizers.Tokenizer`` truncating at ``max_tokens`` with padding off.

    Raises:
        ModelError: not a tokenizers JSON.
    """
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a plain Exception
        raise ModelError(f"{path} is not a tokenizers JSON: {e}", "rebuild: fleet models build minilm-l6-v2") from None
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    return tok


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of f32 [N, D] scaled to unit L2 norm (rows of norm 0 stay 0)."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


class Embedder:
    """Texts -> unit vectors f32 [N, 384] with one loaded encoder.

    Args:
        model: the loaded encoder (inputs input_ids, attention_mask; output sentence_embedding).
        tokenizer: from ``load_tokenizer``.
        batch: texts per call for a dynamic [B, T] encoder (corpus only; queries go one by one).

    Attributes:
        static_len: the fixed sequence length of a static encoder (256), or None if dynamic.
    """

    def __init__(self, model: LoadedModel, tokenizer, batch: int = 16):
        self.model = model
        self.tok = tokenizer
        self.batch = max(1, int(batch))
        names = {t.name: t for t in model.inputs}
        if set(names) != {"input_ids", "attention_mask"}:
            raise ModelError(f"{model.path.name}: inputs {sorted(names)}, expected input_ids and attention_mask",
                             "rebuild: fleet models build minilm-l6-v2")
        shape = names["input_ids"].shape
        self.static_len = shape[1] if len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0 else None
        self.out_name = OUTPUT if any(t.name == OUTPUT for t in model.outputs) else model.outputs[0].name

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = self.model.run({"input_ids": ids, "attention_mask": mask})
        return np.asarray(out[self.out_name], dtype=np.float32).reshape(ids.shape[0], -1)

    def _arrays(self, encs, length: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.zeros((len(encs), length), np.int64)
        mask = np.zeros((len(encs), length), np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = e.attention_mask
        return ids, mask

    def embed_query(self, text: str) -> tuple[np.ndarray, dict, bool]:
        """One text -> (unit vector f32 [384], {stage: ms} for tokenize/inference/normalize,
        truncated: the text had more than 256 tokens and was cut)."""
        t0 = time.perf_counter()
        enc = self.tok.encode(text)
        ids, mask = self._arrays([enc], self.static_len or len(enc.ids))
        t1 = time.perf_counter()
        vec = self._run(ids, mask)
        t2 = time.perf_counter()
        vec = l2_normalize(vec)[0]
        t3 = time.perf_counter()
        ms = {"tokenize": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "normalize": (t3 - t2) * 1e3}
        return vec, ms, bool(enc.overflowing)

    def embed_many(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Many texts -> (unit vectors f32 [N, 384] in input order, indices of truncated texts).

        A static encoder runs one text per call, padded to its length; a dynamic one runs
        batches of texts of similar length (sorted by token count) padded to the batch's longest.
        """
        encs = self.tok.encode_batch(list(texts))
        truncated = [i for i, e in enumerate(encs) if e.overflowing]
        out = np.zeros((len(texts), 0), np.float32)
        if self.static_len:
            vecs = [self._run(*self._arrays([e], self.static_len)) for e in encs]
            out = np.concatenate(vecs) if vecs else out
        else:
            order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
            parts = {}
            for s in range(0, len(order), self.batch):
                idx = order[s:s + self.batch]
                chunk = [encs[i] for i in idx]
                vecs = self._run(*self._arrays(chunk, max(len(e.ids) for e in chunk)))
                parts.update(zip(idx, vecs))
            out = np.stack([parts[i] for i in range(len(encs))]) if encs else out
        return l2_normalize(out), truncated
