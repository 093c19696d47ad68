"""Suites on boards whose CPU is emulated (issue 14 §3): the smoke selection, latency that is never
VALID there, and ARM-kernel parity against the controller's x86_64 ONNX Runtime.

An aarch64 emulated board (``fleet sim up --arch aarch64``) runs a Debian arm64 root under
qemu-user: its installs, its Python and ONNX Runtime's ARM kernels are real, its speed is not
(SIMD code runs ~100-200x slower than on the host). So, on a board whose inventory says
``cpu_emulated: qemu-user``:

- **latency** measurements are INVALID with the reason "CPU emulated by qemu-user"
  (``fleet.measure.protocol.emulation_reason``). A latency test records every figure, then
  reports *skipped* ("not judged") when that is the only reason (:func:`judge_measurement`), and
  *failed* when another rule was broken too, as on any board. Thresholds are never applied to an
  emulated CPU's latency: a failure would say nothing about the product, a pass would be a lie.
- the suite runs its **smoke selection** (suite.yml ``smoke:``; ``Suite.uses_smoke``): a few items
  with smaller measurement minimums, so a qemu board finishes a suite in minutes.
  ``fleet test --smoke`` picks it on any board. Accuracy and function tests run on the selection
  and are checked against the board class's limits as on the full set (the smoke items are
  chosen so that holds: a limit over 20 clips is a loose one over 2 with no error).
- **ARM-kernel parity**: the board's outputs on the items it ran are compared with the same
  artifacts, laid out for the board's class on the controller (``fleet.deploy.local``), run by
  the device agent in-process on the controller's x86_64 ONNX Runtime (:class:`X86Reference`;
  the design already reuses the agent in-process for parity). The artifact sha256s on both sides
  are checked equal, so the difference is the kernels' alone. Bounds: suite.yml
  ``arm_parity.bounds`` per board class (``Suite.arm_parity_bounds_for``).

Every board's stored info carries ``arch``, ``cpu_emulated`` and ``selection`` (:func:`board_labels`),
so ``fleet results`` labels each result of such a board.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fleet.errors import FleetError
from fleet.measure.protocol import emulation_reason
from fleet.runner.parity_check import bound_failures
from fleet.runner.suite import ARM_PARITY_BOUND_KEYS

if TYPE_CHECKING:
    from fleet.inventory import Board
    from fleet.measure.protocol import Measurement
    from fleet.runner.plugin import Recorder
    from fleet.runner.suite import Suite

#: the architecture whose kernels are the reference (the controller's)
REFERENCE_ARCH = "x86_64"


def selection(board: Board, suite: Suite | None, forced: bool = False) -> dict:
    """What the board runs: ``{"name": "smoke"|"full", "items": [...], "why": ...}``."""
    if suite is not None and suite.uses_smoke(board, forced):
        why = emulation_reason(board.cpu_emulated) if board.cpu_emulated else "fleet test --smoke"
        return {"name": "smoke", "items": suite.smoke_ids(), "why": why}
    out = {"name": "full"}
    if suite is not None and board.cpu_emulated and not suite.smoke:
        out["note"] = f"suite {suite.name} declares no smoke: selection; the full suite ran on an emulated CPU"
    return out


def board_labels(board: Board, suite: Suite | None, forced: bool = False) -> dict:
    """The keys stored with a board's info for every run: ``arch`` (inventory; "" = not said),
    ``cpu_emulated`` (None for a native CPU) and ``selection`` (:func:`selection`)."""
    return {"arch": board.arch or None, "cpu_emulated": board.cpu_emulated or None,
            "selection": selection(board, suite, forced)}


def judge_measurement(m: Measurement, board: Board) -> None:
    """Apply the protocol's verdict in a latency test, after its figures are recorded: VALID
    returns (thresholds apply); INVALID only because the CPU is emulated skips the test as not
    judged, with the reason; INVALID for any other reason fails it with every reason."""
    if m.valid:
        return
    if m.invalid_only_by_emulation:
        pytest.skip(f"latency not judged on {board.name}: INVALID measurement ({m.reasons[0]}); "
                    f"n={m.latency.get('n')} recorded, no threshold applied")
    pytest.fail(f"INVALID measurement on {board.name}: " + "; ".join(m.reasons), pytrace=False)


def not_judged(board: Board, what: str) -> None:
    """For a suite whose latency comes from one request (no Protocol run): on a board whose CPU is
    emulated, skip ``what`` as not judged (its figures are recorded first by the caller)."""
    reason = emulation_reason(board.cpu_emulated)
    if reason:
        pytest.skip(f"{what} not judged on {board.name}: INVALID ({reason}); recorded, no threshold applied")


def require_arm(board: Board, board_info: dict | None = None) -> str:
    """The board's architecture; skips unless it is aarch64 (an x86_64 board's kernels are the
    reference itself)."""
    arch = board.arch or ((board_info or {}).get("cpu") or {}).get("machine") or ""
    if arch != "aarch64":
        pytest.skip(f"{board.name} is {arch or 'of unknown arch'}: ARM-kernel parity compares an aarch64 "
                    f"board with the {REFERENCE_ARCH} controller")
    return arch


_references: dict[tuple, X86Reference] = {}


class X86Reference:
    """The device agent in-process on the controller (x86_64 ONNX Runtime), on a board root laid
    out for ``board``'s class with the suite's model and data set, the same artifact selection a
    deploy makes (symlinks; ``fleet.deploy.local.lay_out_board``).

    Args:
        board: the board whose class (board, accelerator, emulated) is laid out.
        suite: gives the model and the data set.

    Raises:
        FleetError: no artifacts for the model, or the data set is missing (as lay_out_board / Suite).
    """

    def __init__(self, board: Board, suite: Suite):
        import platform

        from device_agent.agent import Agent
        from device_agent.config import load_config
        from fleet.deploy.local import lay_out_board
        from fleet.paths import artifacts_dir

        self._tmp = tempfile.TemporaryDirectory(prefix="fleet-x86-ref-")
        data = {suite.dataset: suite.dataset_dir()} if suite.dataset else {}
        root = lay_out_board(Path(self._tmp.name), artifacts_dir(), board=board.board,
                             accelerator=board.accelerator, emulated=board.emulated,
                             models=(suite.model,), data=data)
        self.agent = Agent(load_config(root), sensors=[])
        self.machine = platform.machine()
        self.label = f"controller in-process, {self.machine} onnxruntime (same artifacts)"

    def request(self, op: str, args: dict | None = None) -> dict:
        """One agent op in-process. Raises FleetError when the agent answers with an error."""
        from device_agent.protocol import Request

        rep = self.agent.handle(Request(1, op, args or {}))
        if not rep.ok:
            e = rep.error or {}
            raise FleetError(f"x86 reference: agent {op} failed: {e.get('type')}: {e.get('message')}",
                             e.get("fix") or "see the message", exit_code=3)
        return rep.result

    def run(self, pipeline: str, path: str, options: dict) -> dict:
        """``run`` of ``pipeline`` on ``path`` (relative to the laid-out fleet_root), no telemetry."""
        return self.request("run", {"pipeline": pipeline, "input": path, "options": options, "telemetry": False})

    def model_sha256(self, model: str) -> dict:
        """{file: sha256} of ``model`` as the in-process agent reports it (its ``info``)."""
        return _model_files(self.request("info"), model)

    def close(self) -> None:
        try:
            self.agent.close()
        finally:
            self._tmp.cleanup()


def x86_reference(board: Board, suite: Suite) -> X86Reference:
    """The (cached, one per board class and model in this process) :class:`X86Reference`."""
    key = (board.board, board.accelerator, board.emulated, suite.model, suite.dataset)
    if key not in _references:
        _references[key] = X86Reference(board, suite)
    return _references[key]


def _model_files(info: dict, model: str) -> dict:
    m = (info.get("models") or {}).get(model) or {}
    files = m.get("files") if isinstance(m, dict) and "files" in m else m
    out = {}
    for name, f in (files or {}).items():
        if isinstance(f, dict) and f.get("sha256"):
            out[name] = f["sha256"]
        elif isinstance(f, str):
            out[name] = f
    return out


def same_artifacts(board: Board, board_info: dict, ref: X86Reference, model: str) -> dict:
    """{file: sha256} of the model files both sides hold; asserts every one of them is equal (the
    difference measured is then the kernels', not the artifacts')."""
    mine, theirs = _model_files(board_info, model), ref.model_sha256(model)
    common = sorted(set(mine) & set(theirs))
    differ = [f for f in common if mine[f] != theirs[f]]
    assert not differ, (f"{board.name} runs other {model} artifacts than the controller's: {', '.join(differ)} "
                        f"differ by sha256 (run `fleet deploy` for the board)")
    return {f: mine[f] for f in common}


def record_and_check(board: Board, suite: Suite, record: Recorder, ref: X86Reference,
                     metrics: dict[str, tuple[float, str, str]], summary: dict, rows: list[dict],
                     what: str) -> None:
    """Record an ARM-kernel parity result and assert it within ``arm_parity.bounds`` for the
    board's class (null = reported, not enforced).

    Args:
        metrics: {name: (value, unit, "lower"|"higher")}, names of ARM_PARITY_BOUND_KEYS' metrics.
        summary: the comparison (stored as the first output, with the reference's label).
        rows: per-item outputs.
        what: what was compared, for messages ("2 clips").

    Raises:
        AssertionError: a bound not met (all listed), or a bound on a metric not recorded.
    """
    for name, (v, unit, better) in metrics.items():
        record.metric(name, v, unit, better)
    record.backends["arm_parity_reference"] = ref.label
    record.output({"arm_parity": f"{board.name} ({board.arch or 'aarch64'}"
                                 f"{', CPU emulated by ' + board.cpu_emulated if board.cpu_emulated else ''}) "
                                 f"vs {ref.label}", **summary})
    for row in rows:
        record.output(row)
    fails = bound_failures(suite.arm_parity_bounds_for(board), ARM_PARITY_BOUND_KEYS, metrics, "arm_parity.bounds")
    assert not fails, f"ARM-kernel parity on {board.name} vs {REFERENCE_ARCH}, {what}: " + "; ".join(fails)
