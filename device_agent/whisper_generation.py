"""Whisper greedy generation: the suppression masks and the greedy loop, one implementation for the
board (device_agent.pipelines.asr_whisper) and the controller's build verification
(fleet.models.verify, fleet.models.npu_graphs), whatever runs the decoder (onnxruntime with I/O
binding, a fixed-window NPU graph, torch).

Rules (generation.json, written by the build from the model's generation_config.json; OpenAI
whisper ``decoding.py`` SuppressTokens / SuppressBlank, docs/reference/models.md §6):

- every step masks ``suppress_ids`` and every id from ``suppress_from`` (default eot + 1: sot,
  language/task tokens, no_timestamps, timestamps) to the end of the vocabulary; eot itself stays
  allowed;
- the first step also masks ``suppress_ids_begin`` (blank " " and eot: no empty transcript);
- optional ``repetition_penalty`` (the CTRL paper's rule, Keskar et al. 2019: a positive logit of an
  already generated id is divided by the penalty, a negative one multiplied) and ``eos_boost``
  (added to eot's logit), both after the masks;
- the next token is the argmax; generation stops at eot (not returned) or after ``max_new`` tokens.

numpy only (the board never imports fleet, torch or onnxruntime here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

WHISPER_VOCAB = 51864  # Whisper English vocabulary (tiny.en)


def suppression_masks(gen: dict, vocab: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Additive masks over the vocabulary: 0 where a token may follow, -inf where it is suppressed.

    Args:
        gen: generation.json content: ``eot``, ``suppress_ids``, ``suppress_ids_begin``, optional
            ``suppress_from`` (default eot + 1) and ``vocab_size``.
        vocab: vocabulary size (the decoder's logits width); default ``gen["vocab_size"]``, else
            51864.

    Returns:
        (mask, mask_begin), f32 [vocab] each: every step's mask, and the first step's (also
        ``suppress_ids_begin``).
    """
    vocab = int(vocab or gen.get("vocab_size") or WHISPER_VOCAB)
    suppress_from = int(gen.get("suppress_from", int(gen["eot"]) + 1))
    suppress = np.unique(np.concatenate([np.asarray(gen["suppress_ids"], dtype=np.int64),
                                         np.arange(suppress_from, vocab)]))
    mask = np.zeros(vocab, dtype=np.float32)
    mask[suppress] = -np.inf
    mask_begin = mask.copy()
    mask_begin[np.asarray(gen["suppress_ids_begin"], dtype=np.int64)] = -np.inf
    return mask, mask_begin


def greedy(next_logits: Callable[[list[int]], np.ndarray], eot: int, max_new: int, mask: np.ndarray,
           mask_begin: np.ndarray, repetition_penalty: float = 1.0, eos_boost: float = 0.0) -> list[int]:
    """Greedy decoding with Whisper's suppression (module docstring).

    Args:
        next_logits: ``next_logits(generated)`` -> the logits row (f32 [vocab]) of the token after
            the prompt + ``generated`` (the ids chosen so far, prompt excluded). It is called once
            per step with the list grown by one id each time, so a KV-cached decoder feeds the
            prompt on the first call and ``generated[-1]`` afterwards.
        eot: end-of-text id (stops, not returned).
        max_new: at most this many new ids.
        mask, mask_begin: ``suppression_masks`` (f32 [vocab], 0 or -inf).
        repetition_penalty: 1.0 = off.
        eos_boost: added to eot's logit every step (0 = off).

    Returns:
        the generated ids, without the prompt and without eot.
    """
    out: list[int] = []
    for step in range(max_new):
        logits = np.array(next_logits(out), dtype=np.float32).reshape(-1)  # a copy we own
        logits += mask_begin if step == 0 else mask
        if repetition_penalty != 1.0 and out:
            seen = np.unique(np.asarray(out, dtype=np.int64))
            v = logits[seen]
            logits[seen] = np.where(v > 0, v / repetition_penalty, v * repetition_penalty)
        if eos_boost:
            logits[eot] += eos_boost
        tok = int(np.argmax(logits))
        if tok == eot:
            break
        out.append(tok)
    return out
