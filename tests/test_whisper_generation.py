"""One Whisper generation module (device_agent.whisper_generation) behind the four greedy decoders:
the board's I/O-binding loop (asr_whisper), the build's ONNX check (fleet.models.verify), the
fixed-window NPU decoder and its torch reference (fleet.models.npu_graphs).

Each is compared with a copy of the loop it replaced, on fake decoders whose logits depend on the
tokens fed so far (suppressed ids and eot get large logits often, so masks, penalty, boost and
stopping all matter). The real-model checks are the slow tests (test_models_whisper,
test_models_npu, test_agent_pipeline).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from device_agent.whisper_generation import greedy, suppression_masks

VOCAB = 300
GEN = {"vocab_size": VOCAB, "eot": 250, "sot": 251, "prompt": [251, 260], "suppress_ids": [1, 5, 7, 220],
       "suppress_ids_begin": [220, 250], "suppress_from": 251, "max_new_tokens": 12}


def fake_logits(prefix: list[int], seed: int) -> np.ndarray:
    """Deterministic logits f32 [VOCAB] for the token after ``prefix`` (prompt included)."""
    h = int(hashlib.sha256(f"{seed}:{prefix}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(h)
    x = rng.standard_normal(VOCAB).astype(np.float32) * 3
    for t in (5, 220, 255, 290):  # suppressed or special ids, often on top
        if rng.random() < 0.3:
            x[t] = 12.0
    if rng.random() < 0.08:  # eot now and then
        x[250] = 12.0
    x[rng.integers(0, 50)] += 4.0 * (len(prefix) % 3 == 0)  # repeats, for the penalty
    return x


# ---------------------------------------------------------------- the loops that were replaced


def old_board(prompt, seed, vocab, gen, max_new, penalty=1.0, boost=0.0):
    eot = int(gen["eot"])
    suppress_from = int(gen.get("suppress_from", eot + 1))
    suppress = np.unique(np.concatenate([np.asarray(gen["suppress_ids"], dtype=np.int64),
                                         np.arange(suppress_from, vocab)]))
    mask = np.zeros(vocab, dtype=np.float32)
    mask[suppress] = -np.inf
    mask_begin = mask.copy()
    mask_begin[np.asarray(gen["suppress_ids_begin"], dtype=np.int64)] = -np.inf
    out: list[int] = []
    for step in range(max_new):
        logits = fake_logits(list(prompt) + out, seed).copy()
        logits += mask_begin if step == 0 else mask
        if penalty != 1.0 and out:
            seen = np.unique(np.asarray(out, dtype=np.int64))
            v = logits[seen]
            logits[seen] = np.where(v > 0, v / penalty, v * penalty)
        if boost:
            logits[eot] += boost
        tok = int(np.argmax(logits))
        if tok == eot:
            break
        out.append(tok)
    return out


def old_masks(gen):
    mask = np.zeros(gen["vocab_size"], dtype=bool)
    mask[gen["suppress_ids"]] = True
    mask[gen["suppress_from"]:] = True
    begin = mask.copy()
    begin[gen["suppress_ids_begin"]] = True
    return mask, begin


def old_verify(seed, gen):
    mask, begin = old_masks(gen)
    feed, out, seen = list(gen["prompt"]), [], list(gen["prompt"])
    for step in range(gen["max_new_tokens"]):
        logits = fake_logits(seen, seed)[None]
        lg = np.where(begin if step == 0 else mask, -np.inf, logits[0])
        tok = int(np.argmax(lg))
        if tok == gen["eot"]:
            break
        out.append(tok)
        feed = [tok]
        seen = seen + feed
    return out


def old_fixed(seed, gen, seq):
    mask, begin = old_masks(gen)
    window, out = list(gen["prompt"]), []
    while len(window) < seq:
        logits = fake_logits(window, seed)
        tok = int(np.argmax(np.where(begin if not out else mask, -np.inf, logits)))
        if tok == gen["eot"]:
            break
        out.append(tok)
        window.append(tok)
    return out


# ---------------------------------------------------------------- fake sessions


class _Out:
    def __init__(self, name):
        self.name = name


class FakeStep:
    """decoder_step-like session: the cache is the token history itself (as an int array)."""

    def __init__(self, seed):
        self.seed = seed

    def run(self, names, feeds):
        if names == ["cross_k", "cross_v"]:
            return [np.zeros((4, 1, 3, 8), np.float32)] * 2
        hist = [int(t) for t in feeds["self_k"].reshape(-1)] + [int(t) for t in feeds["tokens"][0]]
        cache = np.asarray(hist, np.float32).reshape(1, 1, -1, 1) * np.ones((4, 1, 1, 8), np.float32)
        return [fake_logits(hist, self.seed)[None], cache[:1, :, :, :1], cache[:1, :, :, :1]]


class FakeFixed:
    """decoder_npu-like session: logits [1, seq, VOCAB] split in 3 chunks; position i depends on
    tokens[0..i] only (causal)."""

    def __init__(self, seed, seq):
        self.seed, self.seq = seed, seq

    def get_outputs(self):
        return [_Out(f"logits_{i}") for i in range(3)]

    def run(self, names, feeds):
        toks = [int(t) for t in feeds["tokens"][0]]
        full = np.stack([fake_logits(toks[:i + 1], self.seed) for i in range(self.seq)])[None]
        return np.split(full, [100, 200], axis=-1)


SEEDS = range(40)


def test_masks_match_the_old_ones():
    mask, begin = suppression_masks(GEN)
    old, old_begin = old_masks(GEN)
    assert mask.dtype == np.float32 and mask.shape == (VOCAB,)
    assert np.array_equal(np.isinf(mask), old) and np.array_equal(np.isinf(begin), old_begin)
    assert set(np.unique(mask)) == {0.0, -np.inf} and mask[GEN["eot"]] == 0 and begin[GEN["eot"]] == -np.inf
    # the board's default suppress_from (eot + 1) and an explicit vocabulary width
    m2, _ = suppression_masks({k: v for k, v in GEN.items() if k not in ("suppress_from", "vocab_size")}, 280)
    assert m2.shape == (280,) and np.isinf(m2[251:]).all() and not np.isinf(m2[250])


@pytest.mark.parametrize("penalty, boost", [(1.0, 0.0), (1.5, 0.0), (1.0, 2.5), (1.3, 1.0)])
def test_board_loop_unchanged(penalty, boost):
    mask, begin = suppression_masks(GEN, VOCAB)
    stops = 0
    for seed in SEEDS:
        def nxt(generated, seed=seed):
            return fake_logits(GEN["prompt"] + generated, seed)

        new = greedy(nxt, GEN["eot"], 12, mask, begin, repetition_penalty=penalty, eos_boost=boost)
        assert new == old_board(GEN["prompt"], seed, VOCAB, GEN, 12, penalty, boost), seed
        stops += len(new) < 12
    assert 0 < stops < len(SEEDS)  # some stop at eot, some run to max_new


def test_build_verify_decoder_unchanged():
    from fleet.models.verify import greedy_decode

    for seed in SEEDS:
        fake = FakeStep(seed)
        got = greedy_decode(fake, fake, np.zeros((1, 3, 8), np.float32), GEN)
        assert got == old_verify(seed, GEN), seed


def test_fixed_window_decoder_unchanged():
    from fleet.models.npu_graphs import greedy_decode_fixed

    for seed in SEEDS:
        got = greedy_decode_fixed(FakeFixed(seed, 10), np.zeros((1, 3, 8), np.float32), GEN, seq=10)
        assert got == old_fixed(seed, GEN, 10), seed


def test_torch_reference_decoder_unchanged(monkeypatch):
    torch = pytest.importorskip("torch")
    from fleet.models import npu_graphs, whisper_torch

    class CrossKV:
        def __init__(self, hf):
            pass

        def eval(self):
            return self

        def __call__(self, enc):
            return torch.zeros(4, 1, 3, 8), torch.zeros(4, 1, 3, 8)

    class DecoderStep(CrossKV):
        seed = 0

        def __call__(self, tokens, sk, sv, ck, cv):
            hist = [int(t) for t in sk.reshape(-1)] + [int(t) for t in tokens[0]]
            cache = torch.tensor(hist, dtype=torch.float32).reshape(1, 1, -1, 1)
            return torch.from_numpy(fake_logits(hist, self.seed)[None]), cache, cache

    monkeypatch.setattr(whisper_torch, "CrossKV", CrossKV)
    monkeypatch.setattr(whisper_torch, "DecoderStep", DecoderStep)
    for seed in SEEDS:
        DecoderStep.seed = seed
        got = npu_graphs._greedy_torch_cached(None, np.zeros((1, 3, 8), np.float32), GEN, 12)
        assert got == old_verify(seed, {**GEN, "max_new_tokens": 12}), seed


def test_generation_module_is_numpy_only():
    code = ("import sys, device_agent.whisper_generation\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fleet', 'torch', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
