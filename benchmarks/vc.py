"""Voice-conversion benchmark, one run: pitch trackers on the same real speech clips, then the whole
vc.pitch_shift chain.

Pitch trackers (each: ms per second of audio, raw pitch accuracy within 50 cents against WORLD
Harvest on the same clips, frames paired on the 10 ms grid; the pitch counts whether or not the
tracker called the frame voiced, as mir_eval's RPA):
  - crepe_onnx_fp32 / crepe_onnx_int8: our numpy framing + crepe_tiny[.int8].onnx (static batch
    64, onnxruntime) + CREPE weighted decoding (device_agent.vc.crepe);
  - torchcrepe: ``torchcrepe.predict`` (PyTorch, tiny, weighted_argmax, batch 512) - the baseline;
  - pyin: ``librosa.pyin`` (fmin 50, fmax 1000 Hz, frame 1024, hop 160, fill_na=None).
The clips are interleaved (each clip through every tracker before the next clip), one warm-up clip
first, 2 threads everywhere.

Pipeline: vc.pitch_shift through the agent in-process on a locally laid-out board (a CPU board:
fp32 CREPE; an emulated RK3588: INT8 CREPE, what the NPU runs) at +3 semitones, hop 10 and 20 ms,
metrics off: per-stage and total RTF (total ms / audio s). Target: total RTF <= 0.1 with CREPE
tiny on this machine.

    .venv/bin/python benchmarks/vc.py [--clips N] [--json out.json]
    .venv/bin/python benchmarks/vc.py --quality [--hop 20]   # the suite's metrics per clip (suite.yml limits)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_RTF = 0.1
STAGES = ("load", "pitch", "pitch_decode", "analysis", "conversion", "synthesis")


def speech_dir() -> Path:
    """The speech data set in the data root ($FLEET_DATA; a FleetError says how to fetch it)."""
    from fleet.datasets.local import require

    return require("speech")


def clips(n: int) -> list[dict]:
    items = [json.loads(x) for x in (speech_dir() / "manifest.jsonl").read_text().splitlines() if x.strip()]
    return items[:n] if n else items


def rpa(ref: np.ndarray, est: np.ndarray) -> tuple[int, int]:
    """(correct, reference-voiced) frame counts within 50 cents."""
    k = min(len(ref), len(est))
    r, e = ref[:k], np.nan_to_num(est[:k], nan=0.0)
    m = r > 0
    ok = (e[m] > 0) & (np.abs(1200 * np.log2(np.where(e[m] > 0, e[m], 1.0) / r[m])) <= 50.0)
    return int(ok.sum()), int(m.sum())


def trackers():
    """name -> callable(x f32 16 kHz) -> f0 Hz on the 10 ms grid."""
    import librosa
    import onnxruntime as ort
    import torch

    from device_agent.vc import crepe as vc
    from fleet.models.crepe_build import import_torchcrepe

    torch.set_num_threads(2)
    tc = import_torchcrepe()
    arts = ROOT / "artifacts" / "cpu" / "crepe-tiny"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")

    def onnx(name):
        s = ort.InferenceSession(str(arts / name), so, providers=["CPUExecutionProvider"])

        def run(x):
            frames, rms_db = vc.frame_audio(x, 160)
            loud = rms_db >= vc.DEFAULT_SILENCE_DB
            sal = np.zeros((len(frames), vc.PITCH_BINS), np.float32)
            sal[loud] = vc.run_batched(frames[loud], 64, lambda a: s.run(["salience"], {"frames": a})[0])
            return vc.decode_weighted(sal)[0]
        return run

    def torchcrepe_run(x):
        with torch.no_grad():
            return tc.predict(torch.from_numpy(x)[None], 16000, 160, 50.0, 1000.0, model="tiny",
                              decoder=tc.decode.weighted_argmax, batch_size=512)[0].numpy()

    def pyin_run(x):
        f0, _, _ = librosa.pyin(x, fmin=50.0, fmax=1000.0, sr=16000, frame_length=1024, hop_length=160,
                                fill_na=None)
        return f0

    return {"crepe_onnx_fp32": onnx("crepe_tiny.onnx"), "crepe_onnx_int8": onnx("crepe_tiny.int8.onnx"),
            "torchcrepe": torchcrepe_run, "pyin": pyin_run}


def bench_trackers(items: list[dict]) -> dict:
    from device_agent.audio import load_audio
    from device_agent.vc import world

    tr = trackers()
    warm = load_audio(speech_dir() / items[0]["audio"])
    for f in tr.values():
        f(warm)
    stats = {k: {"s": 0.0, "ok": 0, "n": 0} for k in tr}
    audio_s = 0.0
    for it in items:
        x = load_audio(speech_dir() / it["audio"])
        audio_s += len(x) / 16000
        ref = world.reference_f0(x.astype(np.float64), 16000, "harvest")
        for name, f in tr.items():
            t = time.perf_counter()
            est = f(x)
            stats[name]["s"] += time.perf_counter() - t
            ok, n = rpa(ref, est)
            stats[name]["ok"] += ok
            stats[name]["n"] += n
        print(f"  {it['id']}", file=sys.stderr, flush=True)
    return {k: {"ms_per_audio_s": v["s"] * 1e3 / audio_s, "rpa": v["ok"] / max(v["n"], 1)}
            for k, v in stats.items()} | {"_audio_s": audio_s}


def bench_pipeline(items: list[dict]) -> dict:
    from device_agent.agent import Agent
    from device_agent.config import load_config
    from fleet.deploy.local import lay_out_board

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (board, acc, emu) in {"cpu_fp32": ("cpu", "cpu", False),
                                         "emulated_int8": ("rk3588", "rk3588", True)}.items():
            root = lay_out_board(Path(tmp) / label, ROOT / "artifacts", board=board, accelerator=acc,
                                 emulated=emu, models=("crepe-tiny",), data={"speech": speech_dir()})
            agent = Agent(load_config(root), sensors=[])
            for hop in (10, 20):
                opts = {"semitones": 3.0, "metrics": False, "write_output": False, "crepe_hop_ms": hop,
                        "threads": 2}
                agent.run({"pipeline": "vc.pitch_shift", "input": f"data/speech/{items[0]['audio']}",
                           "options": opts}, {})
                ms = {s: 0.0 for s in (*STAGES, "total")}
                audio_s = 0.0
                for it in items:
                    r = agent.run({"pipeline": "vc.pitch_shift", "input": f"data/speech/{it['audio']}",
                                   "options": opts}, {})
                    audio_s += r["audio_s"]
                    for s in STAGES:
                        ms[s] += r["stages"][s]["ms"]
                    ms["total"] += r["total_ms"]
                out[f"{label}_hop{hop}"] = {k: v / 1e3 / audio_s for k, v in ms.items()}
            agent.close()
    return out


def quality(items: list[dict], hop: int = 10) -> dict:
    """The suite's conversions (suites/voice_conversion SHIFTS + target) on a locally laid-out
    emulated RK3588 (INT8 CREPE), metrics on: per-clip ranges and means of the suite's metrics
    (where suite.yml's emulated limits come from)."""
    sys.path.insert(0, str(ROOT / "suites" / "voice_conversion"))
    import test_voice_conversion as suite_t

    from device_agent.agent import Agent
    from device_agent.config import load_config
    from fleet.deploy.local import lay_out_board

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = lay_out_board(Path(tmp) / "b", ROOT / "artifacts", board="rk3588", accelerator="rk3588",
                             emulated=True, models=("crepe-tiny",), data={"speech": speech_dir()})
        agent = Agent(load_config(root), sensors=[])
        for it in items:
            path = f"data/speech/{it['audio']}"
            convs = [(f"shift{st:+g}", {"semitones": st}) for st in suite_t.SHIFTS]
            tgt = suite_t._target_for(it)
            if tgt != it["audio"]:
                convs.append(("target", {"target_ref": f"data/speech/{tgt}"}))
            for label, o in convs:
                r = agent.run({"pipeline": "vc.pitch_shift", "input": path,
                               "options": {**o, "write_output": False, "crepe_hop_ms": hop}}, {})
                rows.append((it["id"], label, r))
            print(f"  {it['id']}", file=sys.stderr, flush=True)
        agent.close()

    def rng(vals):
        v = [x for x in vals if x is not None]
        return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}

    first = [r for _, lab, r in rows if lab == "shift+0"]
    out = {"crepe_rpa": rng(r["metrics"]["crepe_rpa"] for r in first),
           "crepe_voicing_error": rng(r["metrics"]["crepe_voicing_error"] for r in first),
           "mcd_db": rng(r["metrics"]["mcd_db"] for r in first)}
    for lab in sorted({lab for _, lab, _ in rows}):
        rs = [r for _, la, r in rows if la == lab]
        for k in ("f0_rmse_cents", "f0_median_abs_cents", "voicing_error", "f0_gross_error_ratio"):
            out[f"{lab}/{k}"] = rng(r["metrics"][k] for r in rs)
    tg = [r for _, lab, r in rows if lab == "target"]
    out["target_f0_gap_semitones"] = rng(abs(12 * np.log2(r["metrics"]["achieved_mean_f0_hz"]
                                                         / r["conversion"]["target"]["mean_f0_hz"])) for r in tg)
    out["source_f0_gap_semitones"] = rng(abs(12 * np.log2(r["conversion"]["target"]["source_mean_f0_hz"]
                                                         / r["conversion"]["target"]["mean_f0_hz"])) for r in tg)
    audio = sum(r["audio_s"] for _, _, r in rows)
    out["rtf"] = {"mean": sum(r["total_ms"] for _, _, r in rows) / 1e3 / audio}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=0, help="first N clips of the speech set (0 = all 20)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--hop", type=int, default=10, choices=(10, 20), help="--quality: CREPE hop (ms)")
    ap.add_argument("--pipeline-only", action="store_true", help="skip the pitch-tracker comparison")
    ap.add_argument("--quality", action="store_true",
                    help="instead: the suite's conversions with metrics, per-clip ranges (suite.yml limits)")
    args = ap.parse_args()
    items = clips(args.clips)
    if args.quality:
        q = quality(items, args.hop)
        print(f"\n{len(items)} clips, emulated RK3588 (INT8 CREPE, hop {args.hop} ms), suite conversions\n")
        print("| metric | mean | min (per clip) | max (per clip) |")
        print("|---|---|---|---|")
        for k, v in q.items():
            print(f"| {k} | {v['mean']:.4g} | {v.get('min', float('nan')):.4g} | {v.get('max', float('nan')):.4g} |")
        if args.json:
            args.json.write_text(json.dumps(q, indent=2))
        return 0
    load0 = os.getloadavg()[0]
    tr = {}
    if not args.pipeline_only:
        print(f"pitch trackers on {len(items)} clips...", file=sys.stderr)
        tr = bench_trackers(items)
    print("pipeline...", file=sys.stderr)
    pl = bench_pipeline(items)
    audio_s = sum(float(it["duration_s"]) for it in items)
    print(f"\n{len(items)} clips, {audio_s:.1f} s of audio; load average {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f} (2 cores)\n")
    if tr:
        base = tr["torchcrepe"]["ms_per_audio_s"]
        print("| pitch tracker | ms per s of audio | vs torchcrepe | RPA (50 c) vs Harvest |")
        print("|---|---|---|---|")
        for k in ("crepe_onnx_fp32", "crepe_onnx_int8", "torchcrepe", "pyin"):
            v = tr[k]
            print(f"| {k} | {v['ms_per_audio_s']:.1f} | {v['ms_per_audio_s'] / base:.2f}x | {v['rpa']:.3f} |")
    print("\n| vc.pitch_shift (+3 st) | " + " | ".join(f"{s} RTF" for s in STAGES) + " | total RTF |")
    print("|---|" + "---|" * (len(STAGES) + 1))
    for k, v in pl.items():
        print(f"| {k} | " + " | ".join(f"{v[s]:.4f}" for s in STAGES) + f" | **{v['total']:.4f}** |")
    best = min(pl.items(), key=lambda kv: kv[1]["total"])
    for k in ("emulated_int8_hop10", "emulated_int8_hop20", "cpu_fp32_hop10"):
        verdict = "PASS" if pl[k]["total"] <= TARGET_RTF else "FAIL"
        print(f"{verdict}: {k} total RTF {pl[k]['total']:.4f} (target <= {TARGET_RTF})")
    print(f"fastest: {best[0]} {best[1]['total']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"trackers": tr, "pipeline": pl}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
