"""Audio and log-mel for the model build: the boards' own implementation (device_agent), so the
build verifies the very features a board computes, not a second copy of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device_agent import audio as _audio
from device_agent import mel as _mel
from device_agent.protocol import AgentError
from fleet.errors import FleetError

SAMPLE_RATE = _mel.SAMPLE_RATE  # 16 kHz, Whisper's input rate
FRAMES_10S = _mel.N_FRAMES      # 1000 frames of 10 ms: the static encoder's input


def load_audio(path: Path) -> np.ndarray:
    """float32 [n_samples] mono at 16 kHz (device_agent.audio.load_audio).

    Raises:
        FleetError: the file is missing, unreadable or not valid audio.
    """
    try:
        return _audio.load_audio(path)
    except AgentError as e:
        raise FleetError(f"{path}: {e}", "pass a wav/flac file that python-soundfile can open") from None


def log_mel(audio: np.ndarray, filters: np.ndarray, n_frames: int = FRAMES_10S) -> np.ndarray:
    """Whisper log-mel of one window: float32 [80, n_frames] (device_agent.mel.log_mel without the
    batch axis). ``filters`` is the [80, 201] filterbank."""
    return _mel.log_mel(audio, filters, n_frames)[0]
