"""Audio input: any file libsndfile reads (WAV, FLAC, OGG…) → mono float32 at 16 kHz.

16 kHz is Whisper's sample rate (openai-whisper ``whisper/audio.py``: ``SAMPLE_RATE = 16000``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .protocol import BadInput

SAMPLE_RATE = 16000
#: Default longest accepted input (s); pipelines expose it as the option ``max_audio_s``.
DEFAULT_MAX_SECONDS = 600.0


def load_audio(path: str | os.PathLike, max_seconds: float = DEFAULT_MAX_SECONDS,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file, downmix to mono (channel mean) and resample with soxr (HQ).

    Args:
        path: audio file (WAV/FLAC/… anything libsndfile decodes).
        max_seconds: longest accepted duration (s), checked from the header before decoding.
        sample_rate: output rate (Hz), 16000 for Whisper.

    Returns:
        float32 array [n_samples], values nominally in [-1, 1], at ``sample_rate``.

    Raises:
        BadInput: missing file, a directory, not decodable audio, zero samples, longer than
            ``max_seconds``, or containing NaN/Inf.
    """
    p = Path(path)
    if not p.exists():
        raise BadInput(f"audio file not found: {p}", "check the input path (relative to fleet_root) "
                       "and that the dataset was deployed")
    if not p.is_file():
        raise BadInput(f"audio input {p} is not a file", "give the path of one audio file")
    if p.stat().st_size == 0:
        raise BadInput(f"audio file {p} is empty (0 bytes)",
                       "the copy was cut short or never written: redeploy the dataset (fleet deploy) "
                       "or record the file again")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise BadInput(f"{p} is not a readable audio file: {e}",
                       "give a WAV or FLAC file (anything libsndfile decodes)") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise BadInput(f"{p} holds no audio samples", "give a non-empty recording")
    duration = info.frames / info.samplerate
    if duration > max_seconds:
        raise BadInput(f"{p} is {duration:.1f} s long, over the {max_seconds:g} s limit",
                       "cut the recording, or raise the option max_audio_s")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise BadInput(f"{p} could not be decoded: {e}", "re-encode it as 16-bit PCM WAV or FLAC") from None
    if data.size == 0:
        raise BadInput(f"{p} holds no audio samples", "give a non-empty recording")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).any(axis=1).sum())
        raise BadInput(f"{p} contains NaN or infinite samples ({bad} of {len(data)} frames)",
                       "re-export the recording without invalid values (e.g. as 16-bit PCM WAV or FLAC)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
