"""suites/whisper_hybrid: Whisper tiny.en on every board, on real recorded speech.

Per board: the agent reports the board the inventory describes and the models deploy put there;
the clips are transcribed under the suite's measurement protocol (fleet/measure/protocol.py:
warm-up excluded, at least min_queries and min_duration_s, telemetry sampled during every
request); WER and CER over the first pass of the set, and latency n with p50/p90/p99/min/max,
energy per inference, temperatures and throttling, are recorded and checked against suite.yml's
limits for the board's class. An INVALID measurement fails test_latency with its reasons; on a
board whose CPU is emulated (inventory cpu_emulated: qemu-user) it is INVALID for that reason and
test_latency is skipped as not judged (fleet.runner.emulation.judge_measurement).

Smoke selection (suite.yml ``smoke:``): a board whose CPU is emulated, or any board under
``fleet test --smoke``, transcribes only the smoke clips with the smoke's measurement minimums
(the ``smoke`` fixture). test_arm_parity compares an aarch64 board's transcripts with the same
artifacts on the controller's x86_64 ONNX Runtime (fleet.runner.emulation.X86Reference).
"""

from __future__ import annotations

import numpy as np
import pytest

from fleet.measure.protocol import Measurement, Protocol, reading_temps
from fleet.measure.report import headline
from fleet.metrics.asr import normalize, wer_cer
from fleet.runner import emulation
from fleet.runner.parity_check import record_and_check, request_parity

_measurements: dict[str, Measurement] = {}  # board name -> its measurement, once per board per worker


def _run(agent, suite, item, smoke: bool) -> dict:
    """One clip through the pipeline with telemetry at the suite's rate; adds ``rtt_ms``."""
    rep = agent.request("run", {"pipeline": suite.pipeline, "input": f"data/{suite.dataset}/{item['audio']}",
                                "options": suite.options_for(smoke),
                                "telemetry": {"rate_hz": suite.measurement_for(smoke).sample_hz}})
    return {**rep.result, "rtt_ms": rep.rtt_ms}


@pytest.fixture
def measurement(board, agent, suite, smoke) -> Measurement:
    """The clips (the smoke clips with ``smoke``) transcribed on ``board`` under the suite's
    measurement protocol (the smoke's minimums with ``smoke``); INVALID on an emulated CPU."""
    if board.name not in _measurements:
        items = suite.dataset_items(smoke)
        agent.request("load", {"pipeline": suite.pipeline, "options": suite.options_for(smoke)})
        _measurements[board.name] = Protocol(suite.measurement_for(smoke), cpu_emulated=board.cpu_emulated).run(
            items, lambda item: _run(agent, suite, item, smoke),
            read_temps=lambda: reading_temps(agent.request("telemetry").result))
    return _measurements[board.name]


@pytest.fixture
def transcripts(measurement):
    """Every clip of the suite's dataset transcribed once (list of (manifest item, result))."""
    return measurement.first_pass()


def _backends(results) -> dict:
    """{stage: backend} of the first result, plus ``emulation`` (what stood in for the NPU on an
    emulated board, e.g. "onnxruntime static QDQ INT8 (hailo8l)" or "cpu int8-dynamic fallback")."""
    stages = results[0][1].get("stages", {})
    out = {stage: s.get("backend", "?") for stage, s in stages.items()}
    if stages.get("encoder", {}).get("emulation"):
        out["emulation"] = stages["encoder"]["emulation"]
    return out


def test_agent_reports_board(board, board_info, suite):
    """The agent on the board is the board the inventory describes, and has the suite's model."""
    assert board_info["board"] == board.board
    assert board_info["accelerator"] == board.accelerator
    assert board_info["emulated"] == board.emulated
    assert suite.model in board_info.get("models", {}), (
        f"model {suite.model} is not deployed on {board.name}: run `fleet deploy --inventory ...`")


# test_latency runs before test_wer: the measurement runs in the setup of the first test that
# needs it, and a result's duration is setup + call + teardown, so it is test_latency's time;
# test_wer reuses the measurement's first pass.
def test_latency(board, measurement, thresholds, record):
    """Per-clip latency (agent-side total, ms) under the measurement protocol: n, then p50/p90/p99
    and the p90 early-stopping estimate as LoadGen reports them (each only from enough samples),
    min/max/mean, real-time factor, energy per inference and thermals; VALID or INVALID."""
    m = measurement
    runs = [(q.item, q.result) for q in m.queries]
    lat = m.latency
    # n first, so every table lists it beside the percentiles; a percentile from too few samples
    # is None (latency_stats) and is not recorded: the measurement's latency.unreported says why
    record.metric("latency_n", lat["n"], "count", "higher")
    for key in ("p50", "p90", "p90_early_stopping", "p99", "min", "max", "mean"):
        if lat.get(f"{key}_ms") is not None:
            record.metric(f"latency_{key}_ms", lat[f"{key}_ms"], "ms", "lower")
    record.metric("measurement_duration_s", m.duration_s, "s", "higher")
    record.metric("measurement_valid", float(m.valid), "bool", "higher")
    total = np.array([r["total_ms"] for _, r in runs])
    audio_s = np.array([r.get("audio_s") or 0.0 for _, r in runs])
    record.metric("rtf", float(total.sum() / 1000.0 / max(audio_s.sum(), 1e-9)), "ratio", "lower")
    for stage in ("mel", "encoder", "decoder"):
        ms = [r["stages"][stage]["ms"] for _, r in runs if stage in r.get("stages", {})]
        if ms:
            record.metric(f"{stage}_p50_ms", float(np.median(ms)), "ms", "lower")
    rtt = np.array([r["rtt_ms"] - r["total_ms"] for _, r in runs])
    record.metric("transport_overhead_p50_ms", float(np.median(rtt)), "ms", "lower")
    record.backends.update(_backends(runs))
    h = headline(m.summary)
    if "energy_per_inference_j" in h:
        record.metric("energy_per_inference_j", h["energy_per_inference_j"], "J", "lower")
        record.metric("power_mean_w", h["power_mean_w"], "W", "lower")
    if "temp_max_c" in h:
        record.metric("temp_max_c", h["temp_max_c"], "°C", "lower")
    record.metric("throttle_events", h["throttle_events"], "count", "lower")
    record.metric("freq_drops", h["freq_drops"], "count", "lower")
    for q in m.queries:
        record.trace(str(q.item.get("id", q.index)), q.result.get("telemetry"))
    record.telemetry_summary = {"summary": m.summary, "measurement": m.to_dict(), "headline": h}
    emulation.judge_measurement(m, board)  # INVALID: fails, or on an emulated CPU only: not judged
    for key, metric in (("latency_p50_ms_max", "p50_ms"), ("latency_p90_ms_max", "p90_ms"),
                        ("latency_p99_ms_max", "p99_ms")):
        if thresholds.get(key) is not None:
            if lat[metric] is None:
                pytest.fail(f"{key} is set but {metric[:3]} is not reported on {board.name}: "
                            f"{lat['unreported'][metric]}; raise measurement.min_queries or drop the limit",
                            pytrace=False)
            assert lat[metric] <= thresholds[key], (
                f"{metric[:3]} {lat[metric]:.0f} ms > limit {thresholds[key]} ms on {board.name} (n={lat['n']})")
    if thresholds.get("energy_per_inference_j_max") is not None and "energy_per_inference_j" in h:
        assert h["energy_per_inference_j"] <= thresholds["energy_per_inference_j_max"], (
            f"energy {h['energy_per_inference_j']:.2f} J/inference ({h['power_channel']}) > limit "
            f"{thresholds['energy_per_inference_j_max']} J on {board.name}")


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


def test_npu_parity(board, agent, suite, smoke, record):
    """The board's NPU encoder against the CPU fp32 reference on the same clips (the agent's
    ``parity`` op): output cosine / max abs error and the WER delta of transcribing each clip from
    either encoder with the same decoder, within suite.yml ``parity.bounds`` for the board's class
    (fleet.runner.parity_check). On an emulated board the NPU stage is its emulation (static QDQ
    INT8 model, or the cpu INT8 fallback), and the result is labelled so. Clips: the evaluation
    side of the calibration split (fleet.models.calibration), so no clip the quantizer calibrated
    on is measured. With ``smoke``: the smoke clips on that side, at most smoke.parity_inputs."""
    from fleet.models.calibration import in_calibration_split, split_key

    n = (suite.smoke.get("parity_inputs") or 1) if smoke else (suite.parity["inputs"] or 6)
    clips = [c for c in suite.dataset_items(smoke)
             if not in_calibration_split(split_key(suite.dataset, "clip", c["id"]))][:n]
    if not clips:
        pytest.skip(f"no smoke clip of {suite.name} is on the evaluation side of the calibration split")
    r = request_parity(board, agent, suite, [f"data/{suite.dataset}/{c['audio']}" for c in clips])
    refs = [c["text"] for c in clips]
    wer_ref, _ = wer_cer(refs, [p["text_reference"] for p in r["per_input"]])
    wer_npu, _ = wer_cer(refs, [p["text_candidate"] for p in r["per_input"]])
    record_and_check(board, suite, record, r, stage="encoder", output="encoder_out", inputs=f"{len(clips)} clips",
                     metrics={"parity_wer_reference": (wer_ref, "ratio", "lower"),
                              "parity_wer_npu": (wer_npu, "ratio", "lower"),
                              "parity_wer_delta": (wer_npu - wer_ref, "ratio", "lower")},
                     output_extra={"wer_reference": wer_ref, "wer_npu": wer_npu},
                     rows=[{"id": c["id"], **p} for c, p in zip(clips, r["per_input"])])


def test_arm_parity(board, board_info, transcripts, suite, smoke, record):
    """ARM-kernel parity: the aarch64 board's transcripts of the clips it ran (the smoke clips on
    an emulated CPU) against the same artifacts run by the controller's x86_64 ONNX Runtime, in
    process (fleet.runner.emulation.X86Reference; artifact sha256s checked equal): transcripts
    identical (raw text), and WER of each side after Whisper's normaliser, within suite.yml
    ``arm_parity.bounds`` for the board's class. Skipped on an x86_64 board (its kernels are the
    reference)."""
    emulation.require_arm(board, board_info)
    ref = emulation.x86_reference(board, suite)
    same = emulation.same_artifacts(board, board_info, ref, suite.model)
    refs = [item["text"] for item, _ in transcripts]
    arm = [r["text"] for _, r in transcripts]
    x86 = [ref.run(suite.pipeline, f"data/{suite.dataset}/{item['audio']}", suite.options_for(smoke))["text"]
           for item, _ in transcripts]
    wer_arm, _ = wer_cer(refs, arm)
    wer_x86, _ = wer_cer(refs, x86)
    changed = sum(a.strip() != x.strip() for a, x in zip(arm, x86))
    changed_norm = sum(normalize(a) != normalize(x) for a, x in zip(arm, x86))
    rows = [{"id": item["id"], "arm": a, "x86": x, "identical": a.strip() == x.strip(),
             "identical_normalized": normalize(a) == normalize(x)}
            for (item, _), a, x in zip(transcripts, arm, x86)]
    emulation.record_and_check(
        board, suite, record, ref,
        metrics={"arm_parity_wer_arm": (wer_arm, "ratio", "lower"),
                 "arm_parity_wer_x86": (wer_x86, "ratio", "lower"),
                 "arm_parity_wer_delta": (wer_arm - wer_x86, "ratio", "lower"),
                 "arm_parity_transcripts_changed": (changed, "count", "lower"),
                 "arm_parity_transcripts_changed_normalized": (changed_norm, "count", "lower"),
                 "arm_parity_clips": (len(transcripts), "count", "higher")},
        summary={"clips": len(transcripts), "wer_arm": wer_arm, "wer_x86": wer_x86,
                 "transcripts_changed": changed, "transcripts_changed_normalized": changed_norm,
                 "artifacts_sha256": same, "smoke": smoke},
        rows=rows, what=f"{len(transcripts)} clips")
