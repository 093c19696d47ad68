"""The NPU-stage parity test the suites share (``test_npu_parity``): ask the board's agent for its
``parity`` op (the same inputs through the cpu fp32 ONNX stage and through the board's NPU stage,
``device_agent.parity``), record the comparison, and check it against suite.yml ``parity.bounds``
for the board's class (``Suite.parity_bounds_for``; keys and the metrics they bound:
``fleet.runner.suite.PARITY_BOUND_KEYS``).

A suite's test is two calls, with its own task metric in between when it has one::

    r = request_parity(board, agent, suite, inputs)
    record_and_check(board, suite, record, r, stage="inference", output="embedding",
                     inputs=f"{len(inputs)} texts")

On an emulated board the NPU stage is its emulation (the target's static QDQ INT8 model, or the
cpu INT8 fallback) and the result is labelled so (``emulation: ...``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pytest

from fleet.runner.suite import PARITY_BOUND_KEYS

if TYPE_CHECKING:
    from fleet.inventory import Board
    from fleet.remote.session import AgentSession
    from fleet.runner.plugin import Recorder
    from fleet.runner.suite import Suite

#: how each bound reads in a failure message ({output}: the stage output compared)
BOUND_TEXT = {"cosine_min": "{output} cosine min", "cosine_mean_min": "{output} cosine mean",
              "max_abs_err_max": "{output} max abs err", "wer_delta_max": "WER delta (NPU - fp32)"}


def request_parity(board: Board, agent: AgentSession, suite: Suite, inputs: list) -> dict:
    """The agent's ``parity`` result for ``inputs`` under the suite's pipeline and options.

    Args:
        inputs: what the pipeline's parity takes: audio paths relative to fleet_root
            (``asr.whisper_hybrid``, ``vc.pitch_shift``) or texts (``rag.hybrid``).

    Returns:
        the op's result: ``reference``, ``candidate`` {backend, artifact, emulation, ...},
        ``per_input`` [{cosine, max_abs_err, ...}], ``summary`` {n, cosine_mean, cosine_min,
        max_abs_err} (docs/contracts.md §4).

    Skips (pytest) on a cpu board: it has no NPU stage, its encoder is the reference itself.
    Errors of the agent propagate (``fleet.remote.session.AgentError``).
    """
    if board.accelerator == "cpu":
        pytest.skip(f"{board.name} has no NPU: its NPU stage is the CPU reference itself")
    return agent.request("parity", {"pipeline": suite.pipeline, "options": suite.options,
                                    "inputs": inputs}).result


def label(board: Board, result: dict) -> str:
    """What stood in the NPU stage: ``emulation: <label>`` on an emulated board, ``<backend> NPU``."""
    cand = result["candidate"]
    return f"emulation: {cand['emulation']}" if board.emulated else f"{cand['backend']} NPU"


def record_and_check(board: Board, suite: Suite, record: Recorder, result: dict, *, stage: str,
                     output: str, inputs: str, metrics: dict[str, tuple[float, str, str]] | None = None,
                     output_extra: dict | None = None, rows: Iterable[dict] = ()) -> None:
    """Record a parity result and assert it is within the suite's bounds for the board's class.

    Records the metrics ``parity_cosine_mean``, ``parity_cosine_min`` (ratio, higher is better)
    and ``parity_max_abs_err`` (output units, lower) from ``result["summary"]``, then ``metrics``;
    the backends ``{stage: candidate backend, stage_reference: "onnx fp32"}`` (+ ``emulation``);
    one output {parity label, reference, candidate, summary, **output_extra}, then ``rows``.

    Args:
        stage: the result's stage name in ``record.backends`` ("encoder", "inference").
        output: the compared output in messages ("encoder_out", "embedding").
        inputs: what was compared, for the message ("6 clips", "32 texts").
        metrics: task metrics of the suite, {name: (value, unit, "lower" | "higher")}, e.g.
            ``parity_wer_delta``; a bound in suite.yml on a metric not recorded is a failure.
        output_extra: more keys of the output record; rows: more output records (per input).

    Raises:
        AssertionError: a non-null bound of ``parity.bounds.<class>`` is not met (all are
            listed), or bounds a metric this test did not record.
    """
    s, cand = result["summary"], result["candidate"]
    values = {"parity_cosine_mean": (s["cosine_mean"], "ratio", "higher"),
              "parity_cosine_min": (s["cosine_min"], "ratio", "higher"),
              "parity_max_abs_err": (s["max_abs_err"], "", "lower"), **(metrics or {})}
    for name, (v, unit, better) in values.items():
        record.metric(name, v, unit, better)
    record.backends.update({stage: cand["backend"], f"{stage}_reference": "onnx fp32"})
    if cand.get("emulation"):
        record.backends["emulation"] = cand["emulation"]
    record.emulated = bool(board.emulated)
    what = label(board, result)
    record.output({"parity": what, "reference": result["reference"], "candidate": cand, "summary": s,
                   **(output_extra or {})})
    for row in rows:
        record.output(row)
    fails = bound_failures(suite.parity_bounds_for(board), PARITY_BOUND_KEYS, values, "parity.bounds",
                           lambda key: BOUND_TEXT.get(key, key).format(output=output))
    assert not fails, f"parity ({what}) on {board.name}, {inputs}: " + "; ".join(fails)


def bound_failures(bounds: dict, keys: dict, values: dict, where: str, text=None) -> list[str]:
    """The broken bounds of a suite.yml bounds block, as messages (empty: all hold).

    Args:
        bounds: bound key -> limit (None = not measured on this class yet: reported, not enforced).
        keys: bound key -> (metric name, "min" | "max", help), e.g. PARITY_BOUND_KEYS.
        values: metric name -> (value, unit, better), as recorded.
        where: the block's name in suite.yml for the message (``parity.bounds``).
        text: bound key -> how the message names the value (default: the metric name).
    """
    fails = []
    for key, lim in bounds.items():
        if lim is None:
            continue
        metric, kind, _ = keys[key]
        if metric not in values:
            fails.append(f"{where} sets {key} but this test records no {metric}")
            continue
        v = values[metric][0]
        if (v < lim) if kind == "min" else (v > lim):
            fails.append(f"{text(key) if text else metric} {v:.5g} {'<' if kind == 'min' else '>'} {lim}")
    return fails
