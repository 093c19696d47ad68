"""suites/model_bench: one model (suite.yml ``model``, usually a `fleet models import`) on every board.

Per board: the agent has the model (deploy ships an import only to boards that can run one of its
files; others skip with the reason); latency of single inferences under the suite's measurement
protocol (fleet/measure/protocol.py, LoadGen SingleStream: warm-up excluded, min_queries,
min_duration_s, telemetry sampled during every request, VALID/INVALID); throughput of back-to-back
inferences with energy per inference; parity of the model against its --reference ONNX on the same
inputs (per-output cosine and max abs error) within suite.yml ``parity.bounds``.
"""

from __future__ import annotations

import numpy as np
import pytest

from fleet.errors import FleetError
from fleet.measure.protocol import Measurement, Protocol, reading_temps
from fleet.models.manifest import read_manifest
from fleet.paths import artifacts_dir
from fleet.measure.report import headline
from fleet.runner import emulation
from fleet.runner.parity_check import record_and_check

_loaded: dict[str, dict] = {}
_measurements: dict[str, Measurement] = {}


def _args(suite, smoke: bool, **options) -> dict:
    """A model.bench request: model folder models/<model>, the suite's inputs, its options (the
    smoke's laid over them with ``smoke``) + ``options``."""
    base = suite.options_for(smoke)
    return {"pipeline": suite.pipeline, "model_dir": f"models/{suite.model}",
            "input": base.get("inputs", "random"), "options": {**base, **options}}


@pytest.fixture
def loaded(board, board_info, agent, suite, smoke) -> dict:
    """The pipeline's load reply on ``board`` (backend, artifact, emulation, reference present);
    skips a board the model was not deployed to (it has no file of the model it can run)."""
    if suite.model not in board_info.get("models", {}):
        if not _in_controller_manifest(suite.model):
            pytest.skip(f"{suite.model} is not deployed on {board.name}, nor imported (test_agent_reports_board "
                        "says how)")
        pytest.skip(f"{suite.model} is not deployed on {board.name}: none of its files runs on a "
                    f"{'emulated ' if board.emulated else ''}{board.accelerator} board (fleet deploy ships an "
                    "import only where it runs)")
    if board.name not in _loaded:
        a = _args(suite, smoke)
        _loaded[board.name] = agent.request("load", {k: a[k] for k in ("pipeline", "model_dir", "options")}).result
    return _loaded[board.name]


def _in_controller_manifest(model: str) -> bool:
    """Whether the controller's artifacts manifest ($FLEET_ARTIFACTS or artifacts/) lists ``model``."""
    try:
        return any(e.get("model") == model for e in read_manifest(artifacts_dir()))
    except FleetError:
        return False


def _record_stage(record, r: dict) -> None:
    record.backends["inference"] = r["backend"]
    if r.get("emulation"):
        record.backends["emulation"] = r["emulation"]
    record.emulated = bool(r.get("emulated"))
    record.models.update(r.get("models", {}))


@pytest.fixture
def measurement(board, agent, suite, smoke, loaded) -> Measurement:
    """Single inferences on ``board`` under the suite's measurement protocol, cycling over the
    input samples (their number comes from a first request, which warms up too)."""
    if board.name not in _measurements:
        first = agent.request("run", _args(suite, smoke, task="infer", sample=0)).result
        items = list(range(int(first["samples"])))
        cfg = suite.measurement_for(smoke)

        def query(i: int) -> dict:
            rep = agent.request("run", {**_args(suite, smoke, task="infer", sample=i),
                                        "telemetry": {"rate_hz": cfg.sample_hz}})
            return {**rep.result, "rtt_ms": rep.rtt_ms}

        _measurements[board.name] = Protocol(cfg, cpu_emulated=board.cpu_emulated).run(
            items, query, read_temps=lambda: reading_temps(agent.request("telemetry").result))
    return _measurements[board.name]


def test_agent_reports_board(board, board_info, suite):
    """The agent is the board the inventory describes and declares the model.bench pipeline."""
    assert board_info["board"] == board.board
    assert board_info["accelerator"] == board.accelerator
    assert board_info["emulated"] == board.emulated
    assert suite.pipeline in board_info.get("pipelines", {}), f"agent on {board.name} lacks {suite.pipeline}"
    if suite.model not in board_info.get("models", {}) and not _in_controller_manifest(suite.model):
        pytest.fail(f"model {suite.model!r} is not deployed on {board.name} and not in the controller's artifacts "
                    f"manifest ({artifacts_dir() / 'manifest.json'}): import it (fleet models import FILE --name "
                    f"{suite.model} --target TARGET), then fleet deploy", pytrace=False)


def test_latency(board, measurement, loaded, thresholds, record):
    """Latency of one inference (agent-side, ms): n, p50/p90/p99 and the p90 early-stopping estimate
    as LoadGen reports them (each only from enough samples), min/max/mean, energy per inference and
    thermals; VALID or INVALID; the class's limits."""
    m, lat = measurement, measurement.latency
    record.metric("latency_n", lat["n"], "count", "higher")
    for key in ("p50", "p90", "p90_early_stopping", "p99", "min", "max", "mean"):
        if lat.get(f"{key}_ms") is not None:
            record.metric(f"latency_{key}_ms", lat[f"{key}_ms"], "ms", "lower")
    record.metric("measurement_duration_s", m.duration_s, "s", "higher")
    record.metric("measurement_valid", float(m.valid), "bool", "higher")
    rtt = [q.result["rtt_ms"] - q.result["total_ms"] for q in m.queries]
    record.metric("transport_overhead_p50_ms", float(np.median(rtt)), "ms", "lower")
    h = headline(m.summary)
    if "energy_per_inference_j" in h:
        record.metric("energy_per_inference_j", h["energy_per_inference_j"], "J", "lower")
        record.metric("power_mean_w", h["power_mean_w"], "W", "lower")
    if "temp_max_c" in h:
        record.metric("temp_max_c", h["temp_max_c"], "°C", "lower")
    record.metric("throttle_events", h["throttle_events"], "count", "lower")
    _record_stage(record, m.queries[0].result)
    for q in m.queries:
        record.trace(f"q{q.index}", q.result.get("telemetry"))
    record.telemetry_summary = {"summary": m.summary, "measurement": m.to_dict(), "headline": h}
    record.output({"stage": loaded["stage"], "inputs": loaded["inputs"], "outputs": loaded["outputs"],
                   "latency": lat, "verdict": m.verdict, "reasons": m.reasons, "notes": m.notes})
    emulation.judge_measurement(m, board)  # INVALID: fails, or on an emulated CPU only: not judged
    for key, metric in (("latency_p50_ms_max", "p50_ms"), ("latency_p90_ms_max", "p90_ms"),
                        ("latency_p99_ms_max", "p99_ms")):
        if thresholds.get(key) is not None:
            if lat[metric] is None:
                pytest.fail(f"{key} is set but {metric[:3]} is not reported on {board.name}: "
                            f"{lat['unreported'][metric]}; raise measurement.min_queries or drop the limit",
                            pytrace=False)
            assert lat[metric] <= thresholds[key], (
                f"{metric[:3]} {lat[metric]:.2f} ms > limit {thresholds[key]} ms on {board.name} (n={lat['n']})")


def test_throughput(board, agent, suite, smoke, loaded, thresholds, record):
    """Inferences per second of a stream of back-to-back inferences (one in flight) for
    options.duration_s, with telemetry: energy per inference is the request's energy over its
    inferences."""
    rep = agent.request("run", {**_args(suite, smoke, task="throughput"),
                                "telemetry": {"rate_hz": suite.measurement_for(smoke).sample_hz}},
                        timeout_s=suite.request_timeout_s + float(suite.options_for(smoke).get("duration_s", 5)))
    r = rep.result
    record.metric("throughput_ips", r["throughput_ips"], "inferences/s", "higher")
    record.metric("throughput_inferences", r["inferences"], "count", "higher")
    if r["per_inference_ms"].get("p50") is not None:  # mode=stream times each inference; async only the whole
        record.metric("throughput_p50_ms", r["per_inference_ms"]["p50"], "ms", "lower")
    h = headline((r.get("telemetry") or {}).get("summary"))
    if "energy_per_inference_j" in h:
        record.metric("throughput_energy_per_inference_j", h["energy_per_inference_j"], "J", "lower")
    _record_stage(record, r)
    record.trace("throughput", r.get("telemetry"))
    if (r.get("telemetry") or {}).get("summary"):
        record.telemetry_summary = {"summary": r["telemetry"]["summary"], "headline": h}
    record.output({"mode": r["mode"], "inferences": r["inferences"], "seconds": r["seconds"],
                   "per_inference_ms": r["per_inference_ms"], "stage": loaded["stage"]})
    emulation.not_judged(board, "throughput")
    lim = thresholds.get("throughput_ips_min")
    if lim is not None:
        assert r["throughput_ips"] >= lim, (f"throughput {r['throughput_ips']:.1f} inferences/s < limit {lim} "
                                            f"on {board.name} ({loaded['stage']['artifact']})")


def test_parity(board, agent, suite, smoke, loaded, record):
    """The model against its --reference ONNX (fp32, onnxruntime) on the same inputs: per-output
    cosine and max abs error, within parity.bounds for the board's class."""
    if not loaded["reference"]["present"]:
        pytest.skip(f"{suite.model} on {board.name}: {loaded['reference']['reason']}")
    n = ((suite.smoke.get("parity_inputs") if smoke else None) or suite.parity["inputs"]
         or int(suite.options_for(smoke).get("samples", 8)))
    r = agent.request("run", _args(suite, smoke, task="parity", samples=n)).result
    _record_stage(record, r)
    for name, o in r["per_output"].items():
        record.output({"output": name, **o})
    record_and_check(board, suite, record, r, stage="inference", output="output", inputs=f"{n} samples",
                     output_extra={"per_output": r["per_output"], "matched_by": r["matched_by"],
                                   "note": r.get("note")})
