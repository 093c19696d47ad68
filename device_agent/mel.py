"""Whisper log-mel spectrogram in numpy.

Constants are Whisper's (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision", §2.2: 25 ms windows, 10 ms stride, 80 channels; code: openai-whisper
``whisper/audio.py``: ``N_FFT = 400``, ``HOP_LENGTH = 160``, ``SAMPLE_RATE = 16000``,
``torch.hann_window(N_FFT)`` (periodic), ``stft[..., :-1].abs() ** 2``, ``clamp(min=1e-10).log10()``,
``maximum(log_spec, log_spec.max() - 8.0)``, ``(log_spec + 4.0) / 4.0``).

The filterbank is the ``mel_filters.npy`` artifact, f32 [80, 201] (librosa slaney mel filters,
as in openai-whisper ``assets/mel_filters.npz``).

Like transformers' ``WhisperFeatureExtractor``, the audio is zero-padded (or cut) to the window
length *before* the STFT, so the ``max - 8`` floor sees the padding too.
"""

from __future__ import annotations

import numpy as np

N_FFT = 400            # 25 ms at 16 kHz
HOP_LENGTH = 160       # 10 ms at 16 kHz
N_MELS = 80
SAMPLE_RATE = 16000
N_FRAMES = 1000        # 10 s window: 1000 frames of 10 ms (the encoder's static input length)
LOG_FLOOR = 1e-10      # clamp before log10
DYNAMIC_RANGE = 8.0    # log10 units kept below the maximum (80 dB)


def hann_window(n: int = N_FFT) -> np.ndarray:
    """Periodic Hann window (``torch.hann_window(n)`` default), float64 [n]."""
    k = np.arange(n, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)


_WINDOW = hann_window()


def log_mel(audio: np.ndarray, filters: np.ndarray, n_frames: int = N_FRAMES) -> np.ndarray:
    """Whisper log-mel features of one window.

    Args:
        audio: float32/float64 [n_samples] mono at 16 kHz; zero-padded or cut to
            ``n_frames * HOP_LENGTH`` samples first.
        filters: mel filterbank [80, 201] (``mel_filters.npy``).
        n_frames: frames to return (1000 = 10 s).

    Returns:
        float32 [1, 80, n_frames], roughly in [-1, 1.5].

    Raises:
        ValueError: audio not 1-D, or filters not [n_mels, N_FFT // 2 + 1].
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D [n_samples], got shape {audio.shape}")
    if filters.ndim != 2 or filters.shape[1] != N_FFT // 2 + 1:
        raise ValueError(f"mel filters must be [n_mels, {N_FFT // 2 + 1}], got {filters.shape}")
    n_samples = n_frames * HOP_LENGTH
    x = np.zeros(n_samples, dtype=np.float64)
    n = min(n_samples, audio.shape[0])
    x[:n] = audio[:n]
    # center=True STFT with reflect padding (torch.stft default used by Whisper)
    padded = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]  # [n_frames+1, 400]
    spec = np.fft.rfft(frames * _WINDOW, axis=-1)                                    # [n_frames+1, 201]
    power = (spec.real ** 2 + spec.imag ** 2)[:-1]                                    # drop last frame
    mel = filters.astype(np.float64) @ power.T                                        # [80, n_frames]
    log_spec = np.log10(np.maximum(mel, LOG_FLOOR))
    log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec.astype(np.float32)[None]
