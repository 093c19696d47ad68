"""Pitch metrics computed on the board (numpy only), frame-paired F0 tracks in Hz (0 = unvoiced).

Definitions follow mir_eval.melody (Salamon et al., "Melody extraction from polyphonic music
signals", IEEE SPM 2014; mir_eval ``raw_pitch_accuracy``, ``voicing_measures``):
  - raw pitch accuracy (RPA): over frames the reference calls voiced, the share where the
    estimate's pitch is within 50 cents. The estimate's pitch counts whether or not it called the
    frame voiced (mir_eval keeps pitch for unvoiced frames as negative Hz; CREPE always has one);
  - voicing decision error: share of all frames where the two voicing decisions differ;
  - F0 RMSE in cents over frames both call voiced.
"""

from __future__ import annotations

import numpy as np

RPA_TOLERANCE_CENTS = 50.0  # mir_eval.melody default cent_tolerance


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    return np.asarray(a[:n], dtype=np.float64), np.asarray(b[:n], dtype=np.float64)


def cents_between(a_hz: np.ndarray, b_hz: np.ndarray) -> np.ndarray:
    """``1200 * log2(a / b)`` per frame (both must be > 0 where used)."""
    return 1200.0 * np.log2(np.asarray(a_hz, np.float64) / np.asarray(b_hz, np.float64))


def raw_pitch_accuracy(ref_hz: np.ndarray, est_pitch_hz: np.ndarray,
                       tolerance_cents: float = RPA_TOLERANCE_CENTS) -> float | None:
    """RPA (ratio): over ref-voiced frames, |cents(est / ref)| <= tolerance. None when the
    reference has no voiced frame."""
    ref, est = _pair(ref_hz, est_pitch_hz)
    m = (ref > 0) & (est > 0)
    n_ref = int((ref > 0).sum())
    if n_ref == 0:
        return None
    ok = np.abs(cents_between(est[m], ref[m])) <= tolerance_cents
    return float(ok.sum() / n_ref)


def voicing_error(ref_hz: np.ndarray, est_hz: np.ndarray) -> float | None:
    """Share (ratio) of frames whose voicing decisions differ; None for zero frames."""
    ref, est = _pair(ref_hz, est_hz)
    if len(ref) == 0:
        return None
    return float(np.mean((ref > 0) != (est > 0)))


def f0_rmse_cents(requested_hz: np.ndarray, achieved_hz: np.ndarray) -> tuple[float | None, int]:
    """(RMSE in cents over frames voiced in both, that frame count); (None, 0) if none."""
    req, ach = _pair(requested_hz, achieved_hz)
    m = (req > 0) & (ach > 0)
    n = int(m.sum())
    if n == 0:
        return None, 0
    d = cents_between(ach[m], req[m])
    return float(np.sqrt(np.mean(d * d))), n


def median_abs_cents(requested_hz: np.ndarray, achieved_hz: np.ndarray) -> float | None:
    """Median |cents| over frames voiced in both (robust to the re-analysis' octave errors)."""
    req, ach = _pair(requested_hz, achieved_hz)
    m = (req > 0) & (ach > 0)
    if not m.any():
        return None
    return float(np.median(np.abs(cents_between(ach[m], req[m]))))


def gross_error_ratio(requested_hz: np.ndarray, achieved_hz: np.ndarray, cents: float = 600.0) -> float | None:
    """Share of both-voiced frames off by more than ``cents`` (octave/half-octave errors of the
    re-analysis inflate an RMSE; this says how much of it they are)."""
    req, ach = _pair(requested_hz, achieved_hz)
    m = (req > 0) & (ach > 0)
    if not m.any():
        return None
    return float(np.mean(np.abs(cents_between(ach[m], req[m])) > cents))
