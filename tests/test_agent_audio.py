"""Audio loading (device_agent.audio), window cutting, and the numpy log-mel vs transformers."""


import numpy as np
import pytest
import soundfile as sf

from device_agent.audio import load_audio
from device_agent.mel import N_FRAMES, hann_window, log_mel
from device_agent.pipelines.asr_whisper import split_windows
from device_agent.protocol import BadInput
from fleet.datasets.local import require

# integration: real sshd/Ansible, built models, PostgreSQL or a browser (make check leaves it out)
pytestmark = pytest.mark.slow

SPEECH = require("speech")  # in the data root ($FLEET_DATA)


def tone(seconds, sr=16000, f=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_stereo_44k_becomes_mono_16k(tmp_path):
    x = tone(1.0, sr=44100)
    stereo = np.stack([x, 0.5 * x], axis=1)
    sf.write(tmp_path / "s.flac", stereo, 44100)
    y = load_audio(tmp_path / "s.flac")
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1
    assert 0.2 < np.abs(y).max() < 0.25  # mean of 0.3 and 0.15


def test_16k_wav_unchanged(tmp_path):
    x = tone(0.5)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav"), x)


def test_errors(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(BadInput, match="not a file"):
        load_audio(tmp_path)
    # not audio, zero length, no samples, NaN samples, over the length limit: the bad-input corpus
    # (tests/test_bad_input_corpus.py, through `fleet-agent serve`)


def test_split_windows_cuts_at_quietest_point():
    sr = 16000
    x = tone(25.0)
    x[int(8.5 * sr):int(8.6 * sr)] = 0.0     # a pause inside the search span of the 1st boundary
    x[int(17.0 * sr):int(17.2 * sr)] = 0.0   # 2nd window starts ~8.55 s: boundary 18.55, span 16.55-18.55
    w = split_windows(x, search_s=2.0)
    assert w[0][0] == 0 and w[-1][1] == len(x)
    assert all(a[1] == b[0] for a, b in zip(w, w[1:]))
    assert all(e - s <= 10 * sr for s, e in w)
    assert 8.5 * sr <= w[0][1] <= 8.6 * sr
    assert 17.0 * sr <= w[1][1] <= 17.2 * sr
    assert split_windows(tone(10.0)) == [(0, 160000)]
    with pytest.raises(BadInput):
        split_windows(x, search_s=0)


def test_hann_is_periodic():
    torch_like = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    np.testing.assert_allclose(hann_window(400), torch_like)
    assert hann_window(400)[0] == 0.0 and hann_window(400)[-1] != 0.0


@pytest.mark.parametrize("clip, seconds", [("jfk.flac", None), ("LJ002-0020.wav", None),
                                           ("2412-153948-0000.flac", None), ("noise", 4.0)])
def test_log_mel_matches_transformers(clip, seconds):
    """Against transformers.WhisperFeatureExtractor with a 10 s chunk, same filterbank."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(chunk_length=10)
    if clip == "noise":
        audio = np.random.default_rng(0).standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
    else:
        audio = load_audio(SPEECH / clip)
    ref = fe(audio, sampling_rate=16000, return_tensors="np").input_features
    ours = log_mel(audio, fe.mel_filters.T.astype(np.float32))
    assert ours.shape == ref.shape == (1, 80, N_FRAMES) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-4


def test_log_mel_bad_shapes():
    with pytest.raises(ValueError):
        log_mel(np.zeros((2, 100), np.float32), np.zeros((80, 201), np.float32))
    with pytest.raises(ValueError):
        log_mel(np.zeros(100, np.float32), np.zeros((80, 200), np.float32))
