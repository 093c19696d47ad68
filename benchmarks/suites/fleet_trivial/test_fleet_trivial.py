"""benchmarks/suites/fleet_trivial: the requests benchmarks/fleet_scale.py times through `fleet test`.

test_info_requests is the trivial suite (selected with ``-k info``): INFO_REQUESTS ``info``
round trips per board over the board's one agent session. test_whisper_clips is the short real
one (``-k whisper``): the first CLIPS clips of the speech set through asr.whisper_hybrid.
Each records its round-trip times (ms) as metrics so the results store holds them per board.
"""

from __future__ import annotations

import numpy as np

from fleet.metrics.asr import wer_cer

INFO_REQUESTS = 50
CLIPS = 3


def test_info_requests(board, agent, record):
    """INFO_REQUESTS `info` replies, each naming this board; rtt p50/p99 and agent handle_ms p50."""
    rtt, handle = [], []
    for _ in range(INFO_REQUESTS):
        rep = agent.request("info")
        assert rep.result["board"] == board.board, f"{board.name}: agent reports {rep.result['board']}"
        rtt.append(rep.rtt_ms)
        handle.append(rep.timings.get("handle_ms", 0.0))
    record.metric("info_rtt_p50_ms", float(np.percentile(rtt, 50)), "ms", "lower")
    record.metric("info_rtt_p99_ms", float(np.percentile(rtt, 99)), "ms", "lower")
    record.metric("info_handle_p50_ms", float(np.percentile(handle, 50)), "ms", "lower")
    record.metric("info_requests", len(rtt), "count", "higher")


def test_whisper_clips(board, agent, suite, record):
    """CLIPS real clips transcribed on the board; WER over them stays under 0.2 (a sanity bound:
    the full 20-clip set measures 3.0 % on emulated boards, suites/whisper_hybrid)."""
    items = suite.dataset_items()[:CLIPS]
    agent.request("load", {"pipeline": suite.pipeline, "options": suite.options})
    hyps, rtt = [], []
    for it in items:
        rep = agent.request("run", {"pipeline": suite.pipeline, "input": f"data/{suite.dataset}/{it['audio']}",
                                    "options": suite.options})
        hyps.append(rep.result["text"])
        rtt.append(rep.rtt_ms)
    wer, _ = wer_cer([it["text"] for it in items], hyps)
    record.metric("wer", wer, "ratio", "lower")
    record.metric("clip_rtt_p50_ms", float(np.percentile(rtt, 50)), "ms", "lower")
    assert wer < 0.2, f"WER {wer:.3f} on {board.name}: {hyps}"
