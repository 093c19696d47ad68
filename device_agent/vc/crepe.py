"""CREPE pitch estimation around a static-batch network: framing, batching, decoding, voicing.

The network itself (``crepe_tiny.onnx``, or its HEF/RKNN form on an NPU) maps frames
f32 [N, 1024] (16 kHz, each frame mean-removed and scaled to unit standard deviation) to
per-bin salience f32 [N, 360] (sigmoid outputs). Everything around it is numpy, written after
torchcrepe 0.0.24 (``core.preprocess``, ``decode``, ``convert``, ``core.periodicity``) and the
CREPE paper (Kim et al., "CREPE: A Convolutional Representation for Pitch Estimation", ICASSP
2018), so the board needs neither torch nor librosa.

Constants (torchcrepe ``core.py`` / ``convert.py``, from the CREPE paper):
  - 360 bins, 20 cents apart, bin 0 at 1997.3794084376191 cents (relative to 10 Hz), i.e.
    32.70 Hz (C1) .. 1975.5 Hz;
  - a 1024-sample window at 16 kHz (64 ms); frames centred on ``i * hop`` (the audio is
    zero-padded by 512 samples on each side, torchcrepe ``pad=True``).
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000          # CREPE's input rate (Hz)
WINDOW = 1024                # samples per frame (64 ms at 16 kHz)
PITCH_BINS = 360
CENTS_PER_BIN = 20.0
CENTS_OFFSET = 1997.3794084376191   # cents of bin 0 relative to 10 Hz (torchcrepe convert.py)
#: periodicity threshold for the voicing decision: torchcrepe README's example
#: ``torchcrepe.threshold.At(.21)``.
DEFAULT_VOICING_THRESHOLD = 0.21
#: frames whose RMS is below this level (dBFS) are silence: not sent to the network, unvoiced.
#: -60 dB follows torchcrepe README's ``threshold.Silence(-60.)``.
DEFAULT_SILENCE_DB = -60.0
#: Viterbi transition: probability falls linearly to 0 at 12 bins (240 cents) per 10 ms frame
#: (torchcrepe decode.viterbi: ``max(12 - |i - j|, 0)``, rows normalised).
VITERBI_REACH = 12

_BIN_CENTS = CENTS_OFFSET + CENTS_PER_BIN * np.arange(PITCH_BINS)


def cents_to_hz(cents: np.ndarray) -> np.ndarray:
    """Cents relative to 10 Hz -> Hz (``10 * 2 ** (cents / 1200)``, torchcrepe convert.py)."""
    return 10.0 * np.power(2.0, np.asarray(cents, dtype=np.float64) / 1200.0)


def hz_to_cents(hz: np.ndarray) -> np.ndarray:
    """Hz (> 0) -> cents relative to 10 Hz."""
    return 1200.0 * np.log2(np.asarray(hz, dtype=np.float64) / 10.0)


def frame_audio(audio: np.ndarray, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut 16 kHz audio into CREPE frames, normalised as the network expects.

    Args:
        audio: f32/f64 [n_samples] at 16 kHz.
        hop: hop in samples (160 = 10 ms).

    Returns:
        (frames f32 [T, 1024] mean-removed and divided by max(std, 1e-10) as torchcrepe does,
        rms_db f64 [T]: each raw frame's RMS in dBFS, -inf for digital silence), with
        ``T = 1 + n_samples // hop``; frame ``i`` is centred on sample ``i * hop``.
    """
    x = np.asarray(audio, dtype=np.float32)
    n = 1 + len(x) // hop
    padded = np.pad(x, (WINDOW // 2, WINDOW // 2))
    need = (n - 1) * hop + WINDOW
    if len(padded) < need:
        padded = np.pad(padded, (0, need - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)[::hop][:n].astype(np.float32)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    with np.errstate(divide="ignore"):
        rms_db = 20.0 * np.log10(rms)
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames /= np.maximum(frames.std(axis=1, keepdims=True), 1e-10)
    return frames, rms_db


def run_batched(frames: np.ndarray, batch: int, infer) -> np.ndarray:
    """Run a static-batch network over any number of frames.

    Args:
        frames: f32 [T, 1024].
        batch: the network's fixed batch N; the last batch is zero-padded and its padding
            rows are dropped.
        infer: callable f32 [N, 1024] -> f32 [N, 360].

    Returns:
        salience f32 [T, 360].
    """
    out = np.zeros((len(frames), PITCH_BINS), dtype=np.float32)
    for s in range(0, len(frames), batch):
        chunk = frames[s:s + batch]
        k = len(chunk)
        if k < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - k, WINDOW), np.float32)])
        out[s:s + k] = np.asarray(infer(np.ascontiguousarray(chunk)), dtype=np.float32)[:k]
    return out


def _band(salience: np.ndarray, fmin: float, fmax: float) -> np.ndarray:
    """Salience with bins outside [fmin, fmax] set to -inf (torchcrepe postprocess)."""
    s = np.array(salience, dtype=np.float64)
    lo = int(np.floor((hz_to_cents(fmin) - CENTS_OFFSET) / CENTS_PER_BIN))
    hi = int(np.ceil((hz_to_cents(fmax) - CENTS_OFFSET) / CENTS_PER_BIN))
    s[:, :max(lo, 0)] = -np.inf
    s[:, max(hi, 0):] = -np.inf
    return s


def decode_weighted(salience: np.ndarray, fmin: float = 50.0, fmax: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """CREPE's local weighted average: the salience-weighted mean of the cents of the 9 bins
    around the argmax (CREPE ``to_local_average_cents``; torchcrepe ``weighted_argmax``
    without its dithering).

    Args:
        salience: f32 [T, 360] network output.
        fmin, fmax: allowed range (Hz).

    Returns:
        (f0 Hz f64 [T], argmax bin int64 [T]).
    """
    s = _band(salience, fmin, fmax)
    bins = np.argmax(s, axis=1)
    idx = bins[:, None] + np.arange(-4, 5)[None, :]
    valid = (idx >= 0) & (idx < PITCH_BINS)
    idx_c = np.clip(idx, 0, PITCH_BINS - 1)
    w = np.take_along_axis(s, idx_c, axis=1)
    w = np.where(valid & np.isfinite(w), w, 0.0)
    w = np.maximum(w, 0.0)
    total = w.sum(axis=1)
    cents = np.where(total > 0, (w * _BIN_CENTS[idx_c]).sum(axis=1) / np.where(total > 0, total, 1.0),
                     _BIN_CENTS[bins])
    return cents_to_hz(cents), bins.astype(np.int64)


def decode_viterbi(salience: np.ndarray, fmin: float = 50.0, fmax: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """Viterbi decoding over the 360 bins (torchcrepe ``decode.viterbi``: observations are the
    per-frame softmax of the salience, transitions ``max(12 - |i - j|, 0)`` normalised per
    row); the path's bins are converted to Hz at bin centres.

    Args:
        salience: f32 [T, 360] network output.
        fmin, fmax: allowed range (Hz).

    Returns:
        (f0 Hz f64 [T], path bin int64 [T]).
    """
    s = _band(salience, fmin, fmax)
    T = len(s)
    if T == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    finite = np.isfinite(s)
    m = np.where(finite, s, -np.inf).max(axis=1, keepdims=True)
    e = np.where(finite, np.exp(s - m), 0.0)
    probs = e / e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        logp = np.log(probs)
    r = VITERBI_REACH
    offs = np.arange(-(r - 1), r)                      # -11..11: the non-zero band
    trans = np.maximum(r - np.abs(offs), 0).astype(np.float64)
    # rows are normalised over the bins that exist (edges have fewer neighbours)
    row_sum = np.array([trans[(i + offs >= 0) & (i + offs < PITCH_BINS)].sum() for i in range(PITCH_BINS)])
    log_trans = np.log(trans)                           # [23]
    back = np.zeros((T, PITCH_BINS), dtype=np.int16)
    score = logp[0] + np.log(1.0 / PITCH_BINS)
    for t in range(1, T):
        # prev state j = i + off reaches state i with weight trans[off] / row_sum[j]
        padded = np.concatenate([np.full(r - 1, -np.inf), score - np.log(row_sum), np.full(r - 1, -np.inf)])
        win = np.lib.stride_tricks.sliding_window_view(padded, 2 * r - 1)   # [360, 23]: j = i-11..i+11
        cand = win + log_trans[None, :]
        k = np.argmax(cand, axis=1)
        back[t] = k - (r - 1)
        score = cand[np.arange(PITCH_BINS), k] + logp[t]
    path = np.zeros(T, dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for t in range(T - 1, 0, -1):
        path[t - 1] = path[t] + back[t, path[t]]
    return cents_to_hz(_BIN_CENTS[path]), path


def periodicity(salience: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """The salience at the decoded bin of each frame (torchcrepe ``core.periodicity``), f64 [T]."""
    s = np.asarray(salience, dtype=np.float64)
    return s[np.arange(len(s)), np.asarray(bins, dtype=np.int64)]


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Running median over ``width`` frames (odd; edges use the shorter window available), as
    torchcrepe ``filter.median``. f64 [T]."""
    x = np.asarray(x, dtype=np.float64)
    if width <= 1 or len(x) == 0:
        return x.copy()
    h = width // 2
    padded = np.pad(x, h, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)


def smooth_f0(f0: np.ndarray, voiced: np.ndarray, width: int) -> np.ndarray:
    """Median of ln F0 over ``width`` frames, within each voiced run only (so unvoiced frames never
    pull a voiced one): removes single-frame octave slips of the per-frame decoder. f64 [T]."""
    f0 = np.asarray(f0, dtype=np.float64).copy()
    v = np.asarray(voiced, dtype=bool)
    if width <= 1 or not v.any():
        return f0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], v.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        f0[a:b] = np.exp(median_filter(np.log(f0[a:b]), min(width, (b - a) | 1)))
    return f0


def voicing(period: np.ndarray, rms_db: np.ndarray, threshold: float = DEFAULT_VOICING_THRESHOLD,
            silence_db: float = DEFAULT_SILENCE_DB) -> np.ndarray:
    """Voiced frames: periodicity >= ``threshold`` and frame RMS >= ``silence_db``. bool [T]."""
    return (np.asarray(period) >= threshold) & (np.asarray(rms_db) >= silence_db)
