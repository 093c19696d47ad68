"""suites/voice_conversion: CREPE pitch on the NPU + WORLD on the CPU, on every board, real speech.

Per board, every clip of the speech set (or the first $FLEET_VC_MAX_CLIPS) is converted at each
shift of SHIFTS (0 = the identity round trip) and once toward a target voice (TARGETS). Per
conversion the board reports per-stage ms/RTF/backend and re-analyses the output with WORLD
Harvest; the tests check, against suite.yml's limits for the board's class:
  - CREPE on the input: raw pitch accuracy (50 cents) and voicing error against Harvest;
  - conversion: RMSE and median |error| in cents between requested and achieved F0 over voiced
    frames, voicing decision error, per shift;
  - round trip: mel-cepstral distortion input vs identity conversion;
  - target: the output's mean F0 lands near the target voice's;
  - speed: total RTF and per-stage RTF;
  - parity: the board's CREPE F0 vs torchcrepe PyTorch on the controller (same clips).
A few converted files per run are kept for listening: on the board (``outputs/vc/``) and copied
to the controller beside the run's JUnit XML (``runs/<run>/outputs/<board>/``), sha256-checked;
their paths and sha256 are in the test outputs.

Smoke selection (suite.yml ``smoke:``, on a board whose CPU is emulated or under ``fleet test
--smoke``): the smoke clip(s) only. On an emulated CPU test_speed records the RTF and is skipped as
not judged (fleet.runner.emulation). test_arm_parity: an aarch64 board's CREPE F0 against the same
artifacts on the controller's x86_64 ONNX Runtime, in cents.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fleet.runner import emulation

SHIFTS = (0.0, -4.0, 3.0, 7.0)
# target voice per source: a female (LJ Speech) reference for the others, a male (LibriSpeech
# 1272) one for LJ Speech clips; the reference clip itself is not converted toward itself
TARGETS = {"female": "LJ001-0004.flac", "male": "1272-141231-0009.wav"}
# in a smoke run the target voices come from the data set's deployable smoke selection
# (`fleet deploy --datasets speech:smoke`), which a slow board may be the only part it holds
SMOKE_TARGETS = {"female": "LJ002-0020.wav", "male": "251-137823-0002.wav"}
KEEP_OUTPUTS = 2          # clips whose converted audio is written and kept on the board
PARITY_CLIPS = 2
STAGES = ("load", "pitch", "pitch_decode", "analysis", "conversion", "synthesis")

_runs: dict[str, list] = {}


def _clips(suite, smoke: bool = False) -> list[dict]:
    items = suite.dataset_items(smoke)
    cap = int(os.environ.get("FLEET_VC_MAX_CLIPS", "0") or 0)
    return items[:cap] if cap > 0 else items


def _target_for(item: dict, smoke: bool = False) -> str:
    targets = SMOKE_TARGETS if smoke else TARGETS
    return targets["male"] if str(item["id"]).startswith("LJ") else targets["female"]


@pytest.fixture
def conversions(request, board, agent, suite, smoke) -> list[tuple[dict, str, dict]]:
    """[(clip, conversion label, result)] for every clip (the smoke clips with ``smoke``) and
    conversion on ``board``."""
    if board.name not in _runs:
        options = suite.options_for(smoke)
        agent.request("load", {"pipeline": suite.pipeline, "options": options})
        out = []
        for i, item in enumerate(_clips(suite, smoke)):
            path = f"data/{suite.dataset}/{item['audio']}"
            keep = i < KEEP_OUTPUTS
            for st in SHIFTS:
                r = agent.run(suite.pipeline, path, {**options, "semitones": st, "write_output": keep})
                out.append((item, f"shift{st:+g}", r))
            tgt = _target_for(item, smoke)
            if tgt != item["audio"]:
                r = agent.run(suite.pipeline, path, {**options, "target_ref": f"data/{suite.dataset}/{tgt}",
                                                     "write_output": keep})
                out.append((item, "target", r))
            if keep:
                _fetch_outputs(agent, board, [r for it, _, r in out if it is item],
                               request.config.getoption("--fleet-run", default=None) or "adhoc")
        _runs[board.name] = out
    return _runs[board.name]


def _fetch_outputs(agent, board, results: list[dict], run_id: str) -> None:
    """Copy the kept converted WAVs to the controller, beside the run's JUnit XML
    (runs/<run>/outputs/<board>/), checked against the sha256 the agent reported; each result's
    ``output`` gets ``local_path``. Without a run id (plain pytest) they go to runs/adhoc/."""
    from fleet.paths import runs_dir

    for r in results:
        out = r.get("output") or {}
        if out.get("path"):
            dest = runs_dir() / run_id / "outputs" / board.name / Path(out["path"]).name
            out["local_path"] = str(agent.fetch(out["path"], dest, sha256=out.get("sha256")))


def _common(record, r: dict) -> None:
    record.backends.update({s: v.get("backend") for s, v in r["stages"].items() if v.get("backend")})
    record.emulated = bool(r.get("emulated"))
    record.models.update(r.get("models", {}))


def _mean(values) -> float:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def test_agent_reports_board(board, board_info, suite):
    """The agent is the board the inventory describes, with the suite's model and pipeline."""
    assert board_info["board"] == board.board
    assert board_info["accelerator"] == board.accelerator
    assert board_info["emulated"] == board.emulated
    assert suite.model in board_info.get("models", {}), (
        f"model {suite.model} is not deployed on {board.name}: fleet models build crepe-tiny; fleet deploy")
    assert suite.pipeline in board_info.get("pipelines", {}), f"agent on {board.name} lacks {suite.pipeline}"


def test_crepe_accuracy(board, conversions, thresholds, record):
    """CREPE on each input vs WORLD Harvest: raw pitch accuracy (50 cents) and voicing error."""
    first = {item["id"]: r for item, label, r in conversions if label == "shift+0"}
    rpa = _mean(r["metrics"]["crepe_rpa"] for r in first.values())
    verr = _mean(r["metrics"]["crepe_voicing_error"] for r in first.values())
    record.metric("crepe_rpa", rpa, "ratio", "higher")
    record.metric("crepe_voicing_error", verr, "ratio", "lower")
    record.metric("clips", len(first), "count", "higher")
    _common(record, next(iter(first.values())))
    for cid, r in first.items():
        record.output({"clip": cid, "crepe_rpa": r["metrics"]["crepe_rpa"],
                       "crepe_voicing_error": r["metrics"]["crepe_voicing_error"],
                       "voiced_frames": r["voiced_frames"], "frames": r["frames"], "warnings": r["warnings"]})
    if thresholds.get("crepe_rpa_min") is not None:
        assert rpa >= thresholds["crepe_rpa_min"], f"CREPE RPA {rpa:.3f} < {thresholds['crepe_rpa_min']} on {board.name}"
    if thresholds.get("crepe_voicing_error_max") is not None:
        assert verr <= thresholds["crepe_voicing_error_max"], (
            f"CREPE voicing error {verr:.3f} > {thresholds['crepe_voicing_error_max']} on {board.name}")


@pytest.mark.parametrize("shift", SHIFTS)
def test_conversion_f0(board, shift, conversions, thresholds, record):
    """Requested vs achieved F0 (output re-analysed with Harvest) at one shift, over all clips."""
    rs = [r for _, label, r in conversions if label == f"shift{shift:+g}"]
    assert rs, "no conversions ran"
    assert all(r["conversion"]["semitones"] == shift for r in rs)
    rmse = _mean(r["metrics"]["f0_rmse_cents"] for r in rs)
    med = _mean(r["metrics"]["f0_median_abs_cents"] for r in rs)
    verr = _mean(r["metrics"]["voicing_error"] for r in rs)
    gross = _mean(r["metrics"]["f0_gross_error_ratio"] for r in rs)
    record.metric("f0_rmse_cents", rmse, "cents", "lower")
    record.metric("f0_median_abs_cents", med, "cents", "lower")
    record.metric("voicing_error", verr, "ratio", "lower")
    record.metric("f0_gross_error_ratio", gross, "ratio", "lower")
    _common(record, rs[0])
    for (item, _label, r) in [c for c in conversions if c[1] == f"shift{shift:+g}"]:
        record.output({"clip": item["id"], "semitones": shift, **{k: r["metrics"][k] for k in (
            "f0_rmse_cents", "f0_median_abs_cents", "voicing_error", "requested_mean_f0_hz", "achieved_mean_f0_hz")},
            "output": r["output"]})
    for key, val in (("f0_rmse_cents_max", rmse), ("f0_median_abs_cents_max", med), ("voicing_error_max", verr)):
        if thresholds.get(key) is not None:
            assert val <= thresholds[key], f"shift {shift:+g}: {key[:-4]} {val:.3f} > {thresholds[key]} on {board.name}"


def test_round_trip_mcd(board, conversions, thresholds, record):
    """Mel-cepstral distortion between each input and its identity conversion (0 st, factor 1)."""
    rs = [(item, r) for item, label, r in conversions if label == "shift+0"]
    assert all(r["conversion"]["identity"] for _, r in rs)
    mcd = _mean(r["metrics"]["mcd_db"] for _, r in rs)
    record.metric("mcd_db", mcd, "dB", "lower")
    for item, r in rs:
        record.output({"clip": item["id"], "mcd_db": r["metrics"]["mcd_db"], "frames": r["metrics"].get("mcd_frames")})
    _common(record, rs[0][1])
    if thresholds.get("mcd_db_max") is not None:
        assert mcd <= thresholds["mcd_db_max"], f"round-trip MCD {mcd:.2f} dB > {thresholds['mcd_db_max']} on {board.name}"


def test_target_conversion(board, conversions, thresholds, record):
    """Toward a target voice: the output's mean F0 (Harvest) lands near the target's mean F0, and
    nearer than the source was."""
    rs = [(item, r) for item, label, r in conversions if label == "target"]
    if not rs:
        pytest.fail("no target conversion ran (every clip was its own target)")
    gaps, before = [], []
    for item, r in rs:
        tgt = r["conversion"]["target"]["mean_f0_hz"]
        got = r["metrics"]["achieved_mean_f0_hz"]
        src = r["conversion"]["target"]["source_mean_f0_hz"]
        gaps.append(abs(12 * np.log2(got / tgt)))
        before.append(abs(12 * np.log2(src / tgt)))
        record.output({"clip": item["id"], "target": r["conversion"]["target"], "semitones": r["conversion"]["semitones"],
                       "formant_factor": r["conversion"]["formant_factor"], "achieved_mean_f0_hz": got,
                       "gap_semitones": round(gaps[-1], 3), "gap_before_semitones": round(before[-1], 3),
                       "output": r["output"]})
    gap = float(np.mean(gaps))
    record.metric("target_f0_gap_semitones", gap, "semitones", "lower")
    record.metric("source_f0_gap_semitones", float(np.mean(before)), "semitones", "lower")
    _common(record, rs[0][1])
    assert gap < float(np.mean(before)), f"conversion moved F0 no closer to the targets ({gap:.2f} st vs {np.mean(before):.2f})"
    if thresholds.get("target_f0_gap_semitones_max") is not None:
        assert gap <= thresholds["target_f0_gap_semitones_max"], (
            f"target F0 gap {gap:.2f} st > {thresholds['target_f0_gap_semitones_max']} on {board.name}")


def test_speed(board, conversions, thresholds, record):
    """Real-time factor of the whole chain and per stage (agent-side, metrics excluded)."""
    rs = [r for _, _, r in conversions]
    audio = sum(r["audio_s"] for r in rs)
    rtf = sum(r["total_ms"] for r in rs) / 1e3 / audio
    record.metric("rtf", rtf, "ratio", "lower")
    for s in STAGES:
        record.metric(f"{s}_rtf", sum(r["stages"][s]["ms"] for r in rs) / 1e3 / audio, "ratio", "lower")
    record.metric("latency_p50_ms", float(np.median([r["total_ms"] for r in rs])), "ms", "lower")
    record.metric("metrics_ms_p50", float(np.median([r["metrics"]["ms"] for r in rs])), "ms", "lower")
    st = rs[0]["stages"]
    for slot in ("vocoder", "separation"):
        assert st[slot]["present"] or st[slot]["absent"], slot
        record.output({"slot": slot, **{k: v for k, v in st[slot].items() if k != "ms"}})
    record.output({"stage_backends": {s: v.get("backend") for s, v in st.items()}, "pitch": st["pitch"]})
    _common(record, rs[0])
    emulation.not_judged(board, "speed (RTF, latency)")
    if thresholds.get("rtf_max") is not None:
        assert rtf <= thresholds["rtf_max"], f"RTF {rtf:.3f} > {thresholds['rtf_max']} on {board.name}"


def test_crepe_parity(board, agent, suite, smoke, thresholds, record):
    """The board's CREPE F0 vs torchcrepe PyTorch (tiny, same decoding) on the same clips."""
    try:
        from fleet.errors import FleetError
        from fleet.models.crepe_build import import_torchcrepe

        tc = import_torchcrepe()
        import torch
    except (ImportError, FleetError) as e:
        pytest.skip(f"the parity reference needs torch and torchcrepe on the controller "
                    f"(pip install -e '.[build]'; pip install --no-deps torchcrepe==0.0.24): {e}")
    from device_agent.audio import load_audio

    agree, n = [], 0
    for item in _clips(suite, smoke)[:PARITY_CLIPS]:
        r = agent.run(suite.pipeline, f"data/{suite.dataset}/{item['audio']}",
                      {**suite.options, "return_f0": True, "metrics": False, "write_output": False,
                       "crepe_hop_ms": 10, "decoder": "weighted"})
        board_f0 = np.asarray(r["f0"]["hz"])
        voiced = np.asarray(r["f0"]["voiced"], dtype=bool)
        x = load_audio(suite.dataset_dir() / item["audio"])
        with torch.no_grad():
            ref = tc.predict(torch.from_numpy(x)[None], 16000, 160, 50.0, 1000.0, model="tiny",
                             decoder=tc.decode.weighted_argmax, batch_size=512)[0].numpy()
        k = min(len(ref), len(board_f0))
        c = np.abs(1200 * np.log2(board_f0[:k][voiced[:k]] / ref[:k][voiced[:k]]))
        agree.append(float(np.mean(c <= 50.0)))
        n += int(voiced[:k].sum())
        record.output({"clip": item["id"], "voiced_frames": int(voiced[:k].sum()),
                       "agree_50c": round(agree[-1], 4), "median_cents": round(float(np.median(c)), 3),
                       "precision": r["stages"]["pitch"]["artifact"]})
        _common(record, r)
    parity = float(np.mean(agree))
    record.metric("crepe_parity_50c", parity, "ratio", "higher")
    record.metric("crepe_parity_frames", n, "count", "higher")
    if thresholds.get("crepe_parity_min") is not None:
        assert parity >= thresholds["crepe_parity_min"], (
            f"CREPE parity {parity:.3f} < {thresholds['crepe_parity_min']} on {board.name}")


F0_OPTIONS = {"return_f0": True, "metrics": False, "write_output": False}


def test_arm_parity(board, board_info, agent, suite, smoke, record):
    """ARM-kernel parity: an aarch64 board's CREPE F0 on the clips it runs (the smoke clip on an
    emulated CPU; at most PARITY_CLIPS) against the same artifacts run by the controller's x86_64
    ONNX Runtime in process (fleet.runner.emulation.X86Reference; sha256s checked equal):
    |1200 log2(f0_arm / f0_x86)| over the frames both call voiced, median and p95 in cents, and
    the voicing disagreement, within suite.yml ``arm_parity.bounds``. Skipped on an x86_64 board."""
    emulation.require_arm(board, board_info)
    ref = emulation.x86_reference(board, suite)
    same = emulation.same_artifacts(board, board_info, ref, suite.model)
    opts = {**suite.options_for(smoke), **F0_OPTIONS}
    cents, disagree, rows = [], [], []
    for item in _clips(suite, smoke)[:PARITY_CLIPS]:
        path = f"data/{suite.dataset}/{item['audio']}"
        a, x = agent.run(suite.pipeline, path, opts)["f0"], ref.run(suite.pipeline, path, opts)["f0"]
        k = min(len(a["hz"]), len(x["hz"]))
        fa, fx = np.asarray(a["hz"][:k], float), np.asarray(x["hz"][:k], float)
        va, vx = np.asarray(a["voiced"][:k], bool), np.asarray(x["voiced"][:k], bool)
        both = va & vx & (fa > 0) & (fx > 0)
        c = np.abs(1200 * np.log2(fa[both] / fx[both])) if both.any() else np.zeros(0)
        cents.append(c)
        disagree.append(float(np.mean(va != vx)) if k else 0.0)
        rows.append({"clip": item["id"], "frames": k, "voiced_both": int(both.sum()),
                     "median_cents": round(float(np.median(c)), 4) if c.size else None,
                     "max_cents": round(float(c.max()), 4) if c.size else None,
                     "voicing_disagreement": round(disagree[-1], 5)})
    allc = np.concatenate(cents) if cents else np.zeros(0)
    med = float(np.median(allc)) if allc.size else 0.0
    p95 = float(np.percentile(allc, 95)) if allc.size else 0.0
    emulation.record_and_check(
        board, suite, record, ref,
        metrics={"arm_parity_f0_median_cents": (med, "cents", "lower"),
                 "arm_parity_f0_p95_cents": (p95, "cents", "lower"),
                 "arm_parity_f0_max_cents": (float(allc.max()) if allc.size else 0.0, "cents", "lower"),
                 "arm_parity_voicing_disagreement": (float(np.mean(disagree)) if disagree else 0.0, "ratio", "lower")},
        summary={"clips": len(rows), "frames_compared": int(allc.size), "artifacts_sha256": same, "smoke": smoke},
        rows=rows, what=f"{len(rows)} clips")
