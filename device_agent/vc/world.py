"""WORLD analysis, conversion and synthesis (pyworld) on the CPU.

WORLD (Morise et al., "WORLD: a vocoder-based high-quality speech synthesis system for real-time
applications", IEICE Trans. Inf. & Syst. E99-D(7), 2016) splits speech into F0, a smooth spectral
envelope (CheapTrick) and band aperiodicity (D4C), and resynthesises from them. pyworld is
imported lazily so the agent still starts (and reports why) where it is missing.

Conversion here:
  - F0: every voiced frame multiplied by ``2 ** (semitones / 12)``;
  - envelope: warped along frequency by a factor ``alpha`` (``sp'(f) = sp(f / alpha)``: alpha > 1
    moves formants up), linear interpolation between FFT bins, the top bin held past Nyquist;
  - aperiodicity: unchanged.
"""

from __future__ import annotations

import numpy as np

from ..protocol import ModelError

#: WORLD frame period (ms); 10 ms = CREPE's hop at 16 kHz, so both share one time axis.
FRAME_PERIOD_MS = 10.0
#: mel-cepstrum order and all-pass constant for MCD at 16 kHz (SPTK's recommended alpha for
#: 16 kHz is 0.42; order 24 is the usual choice in voice-conversion papers, e.g. Kubichek 1993 /
#: Toda et al. 2007 report MCD over c1..c24).
MCEP_ORDER = 24
MCEP_ALPHA = 0.42


def import_pyworld():
    """The pyworld module, or ModelError saying how to install it.

    Raises:
        ModelError: pyworld is not importable in the agent's Python.
    """
    try:
        import pyworld
    except ImportError as e:
        raise ModelError(f"pyworld (the WORLD vocoder) is not installed in the agent's Python ({e})",
                         "redeploy the agent (fleet deploy): its wheelhouse carries pyworld-prebuilt "
                         "(module pyworld) for manylinux_2_28 x86_64/aarch64, cp311") from None
    return pyworld


def analyse(x: np.ndarray, f0: np.ndarray, fs: int, frame_period_ms: float = FRAME_PERIOD_MS) -> tuple[np.ndarray, np.ndarray]:
    """CheapTrick spectral envelope and D4C aperiodicity for a given F0 track.

    Args:
        x: f64 [n_samples] audio.
        f0: f64 [T] Hz, 0 for unvoiced, one value per ``frame_period_ms`` starting at t = 0.
        fs: sample rate (Hz).

    Returns:
        (sp f64 [T, fft_size/2 + 1] power envelope, ap f64 [T, fft_size/2 + 1] in [0, 1]);
        fft_size is CheapTrick's default for ``fs`` (1024 at 16 kHz -> 513 bins).
    """
    pw = import_pyworld()
    x = np.ascontiguousarray(x, dtype=np.float64)
    f0 = np.ascontiguousarray(f0, dtype=np.float64)
    t = np.arange(len(f0), dtype=np.float64) * frame_period_ms / 1000.0
    sp = pw.cheaptrick(x, f0, t, fs)
    ap = pw.d4c(x, f0, t, fs)
    return sp, ap


def synthesize(f0: np.ndarray, sp: np.ndarray, ap: np.ndarray, fs: int,
               frame_period_ms: float = FRAME_PERIOD_MS) -> np.ndarray:
    """WORLD synthesis. Returns f64 [n_samples] (about ``len(f0) * frame_period_ms`` ms)."""
    pw = import_pyworld()
    return pw.synthesize(np.ascontiguousarray(f0, np.float64), np.ascontiguousarray(sp, np.float64),
                         np.ascontiguousarray(ap, np.float64), fs, frame_period_ms)


def reference_f0(x: np.ndarray, fs: int, method: str = "harvest",
                 frame_period_ms: float = FRAME_PERIOD_MS) -> np.ndarray:
    """F0 from WORLD's own estimators (the reference CREPE and the conversion are checked against).

    Args:
        method: ``harvest`` (Morise, Interspeech 2017: robust, ~0.2x real time here) or ``dio``
            (+ StoneMask refinement: ~30x faster, more voicing errors).

    Returns:
        f0 f64 [T] Hz, 0 = unvoiced, at t = i * frame_period_ms.
    """
    pw = import_pyworld()
    x = np.ascontiguousarray(x, dtype=np.float64)
    if method == "harvest":
        f0, _ = pw.harvest(x, fs, frame_period=frame_period_ms)
        return f0
    f0, t = pw.dio(x, fs, frame_period=frame_period_ms)
    return pw.stonemask(x, f0, t, fs)


def shift_f0(f0: np.ndarray, semitones: float) -> np.ndarray:
    """Voiced frames times ``2 ** (semitones / 12)``; unvoiced (0) frames stay 0."""
    f0 = np.asarray(f0, dtype=np.float64)
    return np.where(f0 > 0, f0 * 2.0 ** (semitones / 12.0), 0.0)


def warp_envelope(sp: np.ndarray, alpha: float) -> np.ndarray:
    """Frequency-warp a spectral envelope: ``out[:, k] = sp[:, k / alpha]`` (linear interpolation
    between bins; bins above ``(K - 1) * alpha`` hold the top bin). alpha 1.0 returns a copy.

    Args:
        sp: f64 [T, K] power envelope.
        alpha: warp factor > 0 (> 1 raises formants).
    """
    sp = np.asarray(sp, dtype=np.float64)
    if alpha == 1.0:
        return sp.copy()
    K = sp.shape[1]
    src = np.clip(np.arange(K) / alpha, 0, K - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, K - 1)
    w = src - lo
    # interpolate log power: linear in log keeps formant peaks shaped, never negative
    lsp = np.log(np.maximum(sp, 1e-300))
    return np.exp(lsp[:, lo] * (1.0 - w) + lsp[:, hi] * w)


def freqt(c: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """Frequency transformation of cepstra onto a warped (all-pass, ``alpha``) axis: SPTK
    ``freqt`` (Oppenheim-Johnson recursion), vectorised over frames.

    Args:
        c: f64 [T, M1+1] cepstra.
        order: output order M2.
        alpha: all-pass constant.

    Returns:
        f64 [T, M2+1] warped cepstra.
    """
    c = np.asarray(c, dtype=np.float64)
    T, m1 = c.shape[0], c.shape[1] - 1
    beta = 1.0 - alpha * alpha
    d = np.zeros((T, order + 1))
    g = np.zeros((T, order + 1))
    for i in range(m1, -1, -1):
        d[:] = g
        g[:, 0] = c[:, i] + alpha * d[:, 0]
        if order >= 1:
            g[:, 1] = beta * d[:, 0] + alpha * d[:, 1]
        for j in range(2, order + 1):
            g[:, j] = d[:, j - 1] + alpha * (d[:, j] - g[:, j - 1])
    return g


def mel_cepstrum(sp: np.ndarray, order: int = MCEP_ORDER, alpha: float = MCEP_ALPHA) -> np.ndarray:
    """Mel-cepstrum of a WORLD power envelope: the real cepstrum of the log amplitude spectrum
    warped by ``freqt`` (the approach of pysptk ``sp2mc``).

    Args:
        sp: f64 [T, K] power envelope (K = fft_size / 2 + 1).

    Returns:
        f64 [T, order + 1] mel-cepstra (c0 = log gain).
    """
    logamp = 0.5 * np.log(np.maximum(np.asarray(sp, dtype=np.float64), 1e-300))
    c = np.fft.irfft(logamp, axis=1)   # [T, fft_size], as pysptk sp2mc (all of it goes to freqt)
    c[:, 0] /= 2.0
    return freqt(c, order, alpha)


def mcd_db(mc_a: np.ndarray, mc_b: np.ndarray) -> float:
    """Mel-cepstral distortion (dB), mean over frames: ``10 / ln 10 * sqrt(2 * sum_{d>=1}
    (a_d - b_d)^2)``, c0 (energy) excluded (Kubichek, "Mel-cepstral distance measure for
    objective speech quality assessment", 1993). Frames must already be paired (same length)."""
    a, b = np.asarray(mc_a), np.asarray(mc_b)
    n = min(len(a), len(b))
    if n == 0:
        return float("nan")
    diff = a[:n, 1:] - b[:n, 1:]
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(diff * diff, axis=1))))
