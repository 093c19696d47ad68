"""suites/whisper_hybrid: Whisper tiny.en on every board, on real recorded speech.

Per board: the agent reports the board the inventory describes and the models deploy put there;
every clip is transcribed once (after a warm-up request that is not measured); WER and CER over
the set, and latency p50/p90 per clip, are recorded and checked against suite.yml's limits for
the board's class.
"""

from __future__ import annotations

import numpy as np
import pytest

from fleet.metrics.asr import normalize, wer_cer

_transcripts: dict[str, list] = {}  # board name -> [(item, result)], one pass per board per worker


@pytest.fixture
def transcripts(board, agent, suite):
    """Every clip of the suite's dataset transcribed on ``board`` (list of (manifest item, result))."""
    if board.name not in _transcripts:
        items = suite.dataset_items()
        agent.request("load", {"pipeline": suite.pipeline, "options": suite.options})
        for item in items[: suite.warmup_requests]:
            agent.run(suite.pipeline, f"data/{suite.dataset}/{item['audio']}", suite.options)
        _transcripts[board.name] = [
            (item, agent.run(suite.pipeline, f"data/{suite.dataset}/{item['audio']}", suite.options))
            for item in items
        ]
    return _transcripts[board.name]


def _backends(results) -> dict:
    return {stage: s.get("backend", "?") for stage, s in results[0][1].get("stages", {}).items()}


def test_agent_reports_board(board, board_info, suite):
    """The agent on the board is the board the inventory describes, and has the suite's model."""
    assert board_info["board"] == board.board
    assert board_info["accelerator"] == board.accelerator
    assert board_info["emulated"] == board.emulated
    assert suite.model in board_info.get("models", {}), (
        f"model {suite.model} is not deployed on {board.name}: run `fleet deploy --inventory ...`")


def test_wer(board, transcripts, thresholds, record):
    """WER/CER over every clip within the board class's limits."""
    refs = [item["text"] for item, _ in transcripts]
    hyps = [r["text"] for _, r in transcripts]
    wer, cer = wer_cer(refs, hyps)
    record.metric("wer", wer, "ratio", "lower")
    record.metric("cer", cer, "ratio", "lower")
    record.metric("clips", len(transcripts), "count", "higher")
    record.backends.update(_backends(transcripts))
    record.emulated = bool(transcripts[0][1].get("emulated"))
    record.models.update(transcripts[0][1].get("models", {}))
    for item, r in transcripts:
        record.output({"id": item["id"], "reference": normalize(item["text"]), "hypothesis": normalize(r["text"]),
                       "total_ms": r["total_ms"], "audio_s": r.get("audio_s")})
    if thresholds.get("wer_max") is not None:
        assert wer <= thresholds["wer_max"], f"WER {wer:.3f} > limit {thresholds['wer_max']} on {board.name}"
    if thresholds.get("cer_max") is not None:
        assert cer <= thresholds["cer_max"], f"CER {cer:.3f} > limit {thresholds['cer_max']} on {board.name}"


def test_latency(board, transcripts, thresholds, record):
    """Per-clip latency (agent-side total, ms) p50/p90 and real-time factor within limits."""
    total = np.array([r["total_ms"] for _, r in transcripts])
    audio_s = np.array([r.get("audio_s") or 0.0 for _, r in transcripts])
    p50, p90 = np.percentile(total, [50, 90])
    record.metric("latency_p50_ms", p50, "ms", "lower")
    record.metric("latency_p90_ms", p90, "ms", "lower")
    record.metric("latency_max_ms", total.max(), "ms", "lower")
    record.metric("rtf", float(total.sum() / 1000.0 / max(audio_s.sum(), 1e-9)), "ratio", "lower")
    for stage in ("mel", "encoder", "decoder"):
        ms = [r["stages"][stage]["ms"] for _, r in transcripts if stage in r.get("stages", {})]
        if ms:
            record.metric(f"{stage}_p50_ms", float(np.median(ms)), "ms", "lower")
    rtt = np.array([r["rtt_ms"] - r["total_ms"] for _, r in transcripts])
    record.metric("transport_overhead_p50_ms", float(np.median(rtt)), "ms", "lower")
    record.backends.update(_backends(transcripts))
    if thresholds.get("latency_p90_ms_max") is not None:
        assert p90 <= thresholds["latency_p90_ms_max"], (
            f"p90 {p90:.0f} ms > limit {thresholds['latency_p90_ms_max']} ms on {board.name}")
