"""A target speaker profile (mean log-F0 and mean log spectral envelope) and how a source is
moved toward it.

From a reference clip of the target voice: the mean of ln F0 over its voiced frames and the mean
log power envelope (WORLD CheapTrick) over the same frames. A source is then converted with
  - an F0 ratio ``exp(mean_lnF0_target - mean_lnF0_source)`` (expressed as semitones), the
    classic mean log-F0 transform (e.g. Toda et al. 2007 use mean/variance in log-F0);
  - a formant (frequency-warp) factor alpha chosen on a grid to bring the source's mean log
    envelope closest (L2, 0-5 kHz, level removed) to the target's: a one-parameter vocal-tract
    length normalisation (Eide & Gish, ICASSP 1996).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import warp_envelope

#: search grid for alpha: +-30 % covers adult male <-> female/child vocal-tract length ratios
#: (about 1.15-1.25, Fant 1966) with margin.
ALPHA_GRID = np.round(np.arange(0.70, 1.3001, 0.01), 2)
MATCH_HZ = 5000.0  # envelope band compared (formants F1-F4 of adult speech lie below 5 kHz)


@dataclass(frozen=True)
class Profile:
    """A voice: ``mean_log_f0`` (ln Hz over voiced frames), ``mean_log_sp`` f64 [K] (mean ln power
    envelope over voiced frames), ``voiced_frames`` used, ``source`` (what it was computed from)."""

    mean_log_f0: float
    mean_log_sp: np.ndarray
    voiced_frames: int
    source: str = ""

    @property
    def mean_f0_hz(self) -> float:
        return float(np.exp(self.mean_log_f0))

    def to_dict(self) -> dict:
        return {"mean_f0_hz": round(self.mean_f0_hz, 2), "voiced_frames": self.voiced_frames,
                "bins": len(self.mean_log_sp), "source": self.source}


def make_profile(f0: np.ndarray, sp: np.ndarray, source: str = "") -> Profile | None:
    """The profile of one analysed clip (f0 Hz [T], 0 = unvoiced; sp [T, K]); None when no frame
    is voiced."""
    f0 = np.asarray(f0, dtype=np.float64)
    n = min(len(f0), len(sp))
    v = f0[:n] > 0
    if not v.any():
        return None
    lsp = np.log(np.maximum(np.asarray(sp[:n][v], dtype=np.float64), 1e-300))
    return Profile(float(np.mean(np.log(f0[:n][v]))), lsp.mean(axis=0), int(v.sum()), source)


def semitones_toward(source: Profile, target: Profile) -> float:
    """F0 shift (semitones) that moves the source's mean log-F0 onto the target's."""
    return float(12.0 * (target.mean_log_f0 - source.mean_log_f0) / np.log(2.0))


def alpha_toward(source: Profile, target: Profile, fs: int, grid: np.ndarray = ALPHA_GRID) -> float:
    """The warp factor on ``grid`` whose warped source mean envelope is closest to the target's.

    Both log envelopes are compared over 0..MATCH_HZ after removing their mean level, so loudness
    differences do not pick the factor.
    """
    K = len(source.mean_log_sp)
    top = max(2, round(MATCH_HZ / (fs / 2.0) * (K - 1)))
    tgt = target.mean_log_sp[:top] - target.mean_log_sp[:top].mean()
    src_sp = np.exp(source.mean_log_sp)[None, :]
    best, best_d = 1.0, np.inf
    for a in grid:
        w = np.log(warp_envelope(src_sp, float(a))[0, :top])
        d = float(np.sum((w - w.mean() - tgt) ** 2))
        if d < best_d:
            best, best_d = float(a), d
    return best
