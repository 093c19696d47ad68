"""Optional cross-encoder reranker stage of ``rag.hybrid``.

Used only when the model folder has a ``reranker`` ONNX artifact (inputs ``input_ids``,
``attention_mask`` and optionally ``token_type_ids``, int64 [B, T]; output logits f32 [B, 1] or
[B]) and a ``reranker_tokenizer`` JSON. No such artifact is built today (no cross-encoder ships
offline), so the pipeline reports the stage as absent; it never substitutes another score.
"""

from __future__ import annotations

import numpy as np

from ..backends.base import LoadedModel

MAX_PAIR_TOKENS = 512  # BERT-style cross-encoders' position limit


class CrossEncoder:
    """Scores (query, document) pairs with a loaded cross-encoder.

    Args:
        model: the loaded reranker.
        tokenizer_path: its tokenizers JSON (pairs encoded as [CLS] q [SEP] d [SEP]).
    """

    def __init__(self, model: LoadedModel, tokenizer_path):
        from tokenizers import Tokenizer

        self.model = model
        self.tok = Tokenizer.from_file(str(tokenizer_path))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=MAX_PAIR_TOKENS)
        self.names = [t.name for t in model.inputs]

    def scores(self, query: str, docs: list[str]) -> np.ndarray:
        """Relevance logits f32 [len(docs)], higher = more relevant (one batch, padded)."""
        if not docs:
            return np.zeros(0, np.float32)
        encs = self.tok.encode_batch([(query, d) for d in docs])
        T = max(len(e.ids) for e in encs)
        feed = {n: np.zeros((len(encs), T), np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}
        for i, e in enumerate(encs):
            n = len(e.ids)
            feed["input_ids"][i, :n], feed["attention_mask"][i, :n] = e.ids, e.attention_mask
            feed["token_type_ids"][i, :n] = e.type_ids
        out = self.model.run({n: feed[n] for n in self.names})
        logits = np.asarray(out[self.model.outputs[0].name], dtype=np.float32)
        return logits.reshape(len(docs), -1)[:, -1]
