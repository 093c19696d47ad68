"""Numerical checks a build must pass, and a small greedy Whisper decoder on onnxruntime.

Each check returns the measured number and raises FleetError when it is out of tolerance, so
a build that does not reproduce its reference fails loudly instead of shipping a bad artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fleet.errors import FleetError


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over all elements (shapes must match)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise FleetError(f"shape mismatch {a.shape} vs {b.shape}",
                         "this is a bug in the export wrappers", exit_code=3)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def check_close(what: str, a: np.ndarray, b: np.ndarray, tol: float) -> float:
    """Raise FleetError unless max |a - b| <= tol; return the measured max abs diff."""
    d = max_abs_diff(a, b)
    if not d <= tol:  # also catches NaN
        raise FleetError(f"verification failed: {what}: max abs diff {d:.3g} > tolerance {tol:g}",
                         "do not use these artifacts; check the versions pinned in docs/reference/models.md §1 "
                         "and rerun with --force", exit_code=3)
    return d


def session(path: Path, threads: int = 2):
    """An onnxruntime CPU InferenceSession with ``threads`` intra-op threads.

    Raises:
        FleetError: onnxruntime cannot load the file.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise FleetError(f"onnxruntime cannot load {path}: {e}",
                         "rebuild with --force; see docs/reference/models.md §5/§9", exit_code=3) from e


def greedy_decode(cross_kv, decoder, encoder_out: np.ndarray, gen: dict) -> list[int]:
    """Greedy transcription with the cross_kv and decoder_step ONNX sessions (the board's loop and
    suppression: device_agent.whisper_generation).

    Args:
        cross_kv, decoder: onnxruntime sessions of cross_kv*.onnx and decoder_step*.onnx.
        encoder_out: f32 [1, S, 384].
        gen: generation.json content (prompt, eot, suppress_ids, suppress_ids_begin,
            suppress_from, max_new_tokens).

    Returns:
        the new token ids, without the prompt and without eot.
    """
    from device_agent.whisper_generation import greedy, suppression_masks

    ck, cv = cross_kv.run(["cross_k", "cross_v"], {"encoder_out": encoder_out})
    cache = [np.zeros((4, 1, 0, ck.shape[-1]), np.float32)] * 2  # self K, self V

    def next_logits(generated: list[int]) -> np.ndarray:
        feed = [generated[-1]] if generated else list(gen["prompt"])
        logits, cache[0], cache[1] = decoder.run(
            ["logits", "new_self_k", "new_self_v"],
            {"tokens": np.array([feed], np.int64), "self_k": cache[0], "self_v": cache[1],
             "cross_k": ck, "cross_v": cv})
        return logits[0]

    return greedy(next_logits, gen["eot"], gen["max_new_tokens"], *suppression_masks(gen))


def word_error_rate(ref: str, hyp: str) -> float:
    """Word-level Levenshtein distance / number of reference words (lowercased, split on spaces,
    punctuation stripped). 0.0 for two empty strings."""
    def words(s: str) -> list[str]:
        return "".join(c if c.isalnum() or c.isspace() or c == "'" else " "
                       for c in s.lower()).split()
    r, h = words(ref), words(hyp)
    if not r:
        return 0.0 if not h else 1.0
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / len(r)
