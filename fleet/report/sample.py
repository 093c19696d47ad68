"""A small, realistic results store for tests and demos: several runs of ``whisper_hybrid`` on three
emulated boards (two Pi 5 + Hailo-8L, one RK3588), shaped like what the runner records (per-clip
outputs, metrics with units/direction, per-request telemetry traces, a ``doctor`` fingerprint)."""

from __future__ import annotations

import random

from fleet.results.store import Metric, Result, Store

BOARDS = [("sim-pi5-1", "pi5-hailo8l", "hailo8l"), ("sim-pi5-2", "pi5-hailo8l", "hailo8l"),
          ("sim-rk3588-1", "rk3588", "rk3588")]
CLIPS = [("1272-141231-0009", "the contestants in the twenties needed undisturbed rest",
          "the contestants in the twentys needed undisturbed rest"),
         ("174-168635-0013", "week followed week these two beings led a happy life in that hovel",
          "week followed week these two beings let a happy life in that huddle"),
         ("2035-147960-0005", "she said <b>\"quoted\"</b> & more", "she said <b>\"quoted\"</b> and more")]


def _trace(t0: float, n: int, temp: float, throttle_at: int | None = None) -> dict:
    t = [round(i * 0.1, 3) for i in range(n)]
    return {"t0": t0, "rate_hz": 10.0, "decimated": 1, "t": t, "errors": {},
            "channels": [{"name": "emulated.temp.soc", "unit": "°C", "kind": "temperature", "emulated": True},
                         {"name": "emulated.power", "unit": "W", "kind": "power", "emulated": True},
                         {"name": "emulated.throttled", "unit": "flags", "kind": "throttle", "emulated": True}],
            "values": {"emulated.temp.soc": [temp + 0.05 * i for i in range(n)],
                       "emulated.power": [3.0 + 0.5 * (i % 3) for i in range(n)],
                       "emulated.throttled": [1 if throttle_at is not None and i >= throttle_at else 0
                                              for i in range(n)]}}


def build_sample_store(path, runs: int = 6, regress_last: bool = True, seed: int = 7,
                       failing: tuple[str, str] | None = ("sim-pi5-2", "test_latency"),
                       error_board: str | None = "sim-rk3588-1") -> tuple[Store, list[str]]:
    """Create a store at ``path`` with ``runs`` runs (ids returned oldest first). In the last run:
    ``failing`` (board, test) failed, ``error_board``'s test_wer is an infrastructure error and,
    with ``regress_last``, sim-pi5-1's p50 latency is 40 % worse (a regression)."""
    rnd = random.Random(seed)
    s = Store(path)
    ids = []
    for k in range(runs):
        run_id = f"20260101-0000{k:02d}-ab{k:02d}"
        last = k == runs - 1
        s.start_run(run_id, "whisper_hybrid", inventory="inventory/sim.yml")
        s.set_run_times(run_id, started=1_767_225_600.0 + 3600 * k)
        for name, board, acc in BOARDS:
            s.add_board(run_id, name, board, acc, True,
                        {"doctor": {"status": "pass", "failures": [], "ignored": False},
                         "stack": {"os": {"name": "Debian GNU/Linux 12 (bookworm)"}}})
            t0 = 1_767_225_600.0 + 3600 * k
            outcome = "error" if (last and name == error_board) else "passed"
            s.add_result(Result(
                run_id, name, "test_wer", outcome, emulated=True, duration_s=12.0,
                message="infrastructure: board lost (SSH EOF)" if outcome == "error" else "",
                backends={"mel": "numpy", "encoder": "onnx", "decoder": "onnx"},
                outputs=[{"id": c, "reference": ref, "hypothesis": hyp, "total_ms": 300 + rnd.random() * 200,
                          "audio_s": 6.0} for c, ref, hyp in CLIPS],
                metrics=[Metric("wer", 0.0298, "ratio", "lower"), Metric("cer", 0.0094, "ratio", "lower")]))
            p50 = 500 + rnd.gauss(0, 8) + (200 if (last and regress_last and name == "sim-pi5-1") else 0)
            fail = last and failing == (name, "test_latency")
            traces = [{"label": c, "summary": {}, "trace": _trace(t0 + 1.0 * i, 6, 40.0 + i * 0.3,
                                                                  throttle_at=4 if (last and i == 2) else None)}
                      for i, (c, _, _) in enumerate(CLIPS)]
            s.add_result(Result(
                run_id, name, "test_latency", "failed" if fail else "passed", emulated=True, duration_s=14.0,
                message="p90 900 ms > limit 800 ms" if fail else "",
                metrics=[Metric("latency_p50_ms", p50, "ms", "lower"),
                         Metric("latency_p90_ms", p50 * 1.5, "ms", "lower"),
                         Metric("energy_per_inference_j", 2.0 + rnd.gauss(0, 0.02), "J", "lower"),
                         Metric("temp_max_c", 41.0, "°C", "lower")],
                telemetry=traces,
                telemetry_summary={"summary": {}, "measurement": {"verdict": "VALID", "valid": True,
                                                                  "reasons": []}}))
        s.finish_run(run_id, "failed" if last else "passed")
        s.set_run_times(run_id, finished=1_767_225_600.0 + 3600 * k + 60)
        ids.append(run_id)
    return s, ids
