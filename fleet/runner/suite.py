"""A suite folder: ``suite.yml`` (pipeline, dataset, board requirements, thresholds per board class)
plus ``test_*.py``. This module reads suite.yml; fleet.runner.suite_schema checks it (pydantic
models of every key below, the JSON Schema in docs/suite.schema.json generated from them).

suite.yml keys:
    name: str                        suite name (default: folder name)
    pipeline: str                    a device_agent pipeline, e.g. asr.whisper_hybrid
    model: str                       the artifact set the pipeline loads, e.g. whisper-tiny.en
    dataset: str                     a catalog data set (fleet datasets list), read from the data root
                                     ($FLEET_DATA) and deployed to fleet_root/data/<dataset>;
                                     optional for the model.bench pipeline (random or .npz inputs)
    requires: {accelerators: [..], boards: [..]}   which boards the suite runs on (default: all)
    options: {..}                    pipeline options passed with every request
    request_timeout_s: float         per-request timeout (s), default 120
    reconnect_timeout_s: float       how long (s) to retry SSH to a board that does not answer or whose
                                     link dropped mid-request (rebooting, sshd restarted), with backoff;
                                     default 5 (fleet.remote.session.RECONNECT_TIMEOUT_S), 0 = no retry.
                                     An inventory host var fleet_reconnect_timeout_s wins for its board.
    warmup_requests: int             requests run first and left out of latency figures (default 1)
    measurement: {..}                the latency protocol (fleet.measure.protocol.MeasurementConfig,
                                     MLPerf SingleStream style): min_queries, min_duration_s (a run
                                     goes on until both and every item are met), max_duration_s
                                     (safety bound, reaching it is INVALID), start_temp_max_c,
                                     sample_hz, cooldown: {below_c, zone, timeout_s, poll_s}. A
                                     measurement breaking it is INVALID and fails the latency test
                                     with the reason.
    thresholds: {CLASS: {KEY: value|null}}  CLASS is emulated or a board family's accelerator
                                     (hailo8l | hailo8 | hailo10h | rk3588 | cpu | a plug-in's);
                                     null = not measured for that class yet, reported, not enforced
    parity: {inputs: int, bounds: {CLASS: {KEY: value|null}}}  the NPU-stage parity test: `inputs`
                                     evaluation items (clips / texts) through the CPU fp32 reference
                                     and the board's NPU stage (its emulation on emulated boards);
                                     KEY one of PARITY_BOUND_KEYS, null = reported, not enforced
    smoke: {..}                      the suite's smoke selection (fleet.runner.emulation): a few items
                                     run on boards whose CPU is emulated (inventory cpu_emulated,
                                     e.g. qemu-user) and by `fleet test --smoke` on any board:
                                     items: [ids] (data set manifest ids, or the collections of a
                                     suite whose items are collections), warmup_requests, options
                                     (over the suite's), measurement (over the suite's; smaller
                                     minimums), parity_inputs (NPU-stage parity inputs)
    arm_parity: {bounds: {CLASS: {KEY: value|null}}}  ARM-kernel parity (fleet.runner.emulation): an
                                     aarch64 board's outputs on the smoke items against the same
                                     artifacts on the controller's x86_64 ONNX Runtime; KEY one of
                                     ARM_PARITY_BOUND_KEYS, null = reported, not enforced
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fleet.errors import FleetError
from fleet.inventory import Board, accelerators, board_classes
from fleet.measure.protocol import MeasurementConfig
from fleet.remote.session import RECONNECT_TIMEOUT_S


def threshold_classes() -> set[str]:
    """suite.yml threshold classes: ``emulated`` and every board family's accelerator."""
    return {"emulated"} | accelerators()


def __getattr__(name: str):
    if name == "THRESHOLD_CLASSES":  # older callers: read from the board families when asked
        return threshold_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


THRESHOLD_KEYS = {
    # key: (metric it bounds, "max" | "min", unit)
    "wer_max": ("wer", "max", "ratio"),
    "cer_max": ("cer", "max", "ratio"),
    "latency_p50_ms_max": ("latency_p50_ms", "max", "ms"),
    "latency_p90_ms_max": ("latency_p90_ms", "max", "ms"),
    "latency_p99_ms_max": ("latency_p99_ms", "max", "ms"),
    "energy_per_inference_j_max": ("energy_per_inference_j", "max", "J"),
    "rtf_max": ("rtf", "max", "ratio"),
    # model_bench (suites/model_bench: the model.bench pipeline's stream of back-to-back inferences)
    "throughput_ips_min": ("throughput_ips", "min", "inferences/s"),
    # rag_embedder (hybrid mode per collection; parity = min cosine to sentence-transformers)
    "cranfield_ndcg_at_10_min": ("hybrid_ndcg_at_10", "min", "ratio"),
    "cranfield_recall_at_10_min": ("hybrid_recall_at_10", "min", "ratio"),
    "cisi_ndcg_at_10_min": ("hybrid_ndcg_at_10", "min", "ratio"),
    "cisi_recall_at_10_min": ("hybrid_recall_at_10", "min", "ratio"),
    "parity_cos_min": ("parity_cos_min", "min", "ratio"),
    # voice_conversion (suites/voice_conversion/README.md has the definitions)
    "crepe_rpa_min": ("crepe_rpa", "min", "ratio"),
    "crepe_voicing_error_max": ("crepe_voicing_error", "max", "ratio"),
    "crepe_parity_min": ("crepe_parity_50c", "min", "ratio"),
    "f0_rmse_cents_max": ("f0_rmse_cents", "max", "cents"),
    "f0_median_abs_cents_max": ("f0_median_abs_cents", "max", "cents"),
    "voicing_error_max": ("voicing_error", "max", "ratio"),
    "mcd_db_max": ("mcd_db", "max", "dB"),
    "target_f0_gap_semitones_max": ("target_f0_gap_semitones", "max", "semitones"),
}
PARITY_BOUND_KEYS = {
    # key: (parity metric it bounds, "max" | "min", unit); metrics from the agent's parity op
    "cosine_min": ("parity_cosine_min", "min", "ratio"),
    "cosine_mean_min": ("parity_cosine_mean", "min", "ratio"),
    "max_abs_err_max": ("parity_max_abs_err", "max", ""),
    "wer_delta_max": ("parity_wer_delta", "max", "ratio"),
}
ARM_PARITY_BOUND_KEYS = {
    # key: (ARM-kernel parity metric it bounds, "max" | "min", unit); aarch64 board vs x86_64 controller
    "wer_delta_max": ("arm_parity_wer_delta", "max", "ratio"),
    "transcripts_changed_max": ("arm_parity_transcripts_changed", "max", "count"),
    "cosine_min": ("arm_parity_cosine_min", "min", "ratio"),
    "recall_at_10_delta_max": ("arm_parity_recall_at_10_abs_delta", "max", "ratio"),
    "f0_median_cents_max": ("arm_parity_f0_median_cents", "max", "cents"),
    "f0_p95_cents_max": ("arm_parity_f0_p95_cents", "max", "cents"),
}
SMOKE_KEYS = ("items", "warmup_requests", "options", "measurement", "parity_inputs")


def _parity(block: dict | None) -> dict:
    """A validated ``parity:`` block as {"inputs": int, "bounds": {class: {key: number|None}}}
    (``inputs`` 6 when the block omits it; no block: inputs 0, i.e. no parity test)."""
    if block is None:
        return {"inputs": 0, "bounds": {}}
    bounds = block.get("bounds") or {}
    return {"inputs": block.get("inputs", 6), "bounds": {k: dict(v or {}) for k, v in bounds.items()}}


@dataclass
class Suite:
    """A parsed, checked suite.yml (see the module docstring for the keys)."""

    dir: Path
    name: str
    pipeline: str
    model: str
    dataset: str
    accelerators: set[str] = field(default_factory=accelerators)
    boards: set[str] = field(default_factory=lambda: set(board_classes()))
    options: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    request_timeout_s: float = 120.0
    reconnect_timeout_s: float = RECONNECT_TIMEOUT_S
    warmup_requests: int = 1
    measurement: MeasurementConfig = field(default_factory=MeasurementConfig)
    parity: dict = field(default_factory=lambda: {"inputs": 0, "bounds": {}})
    #: suite.yml ``smoke:`` as written ({} = the suite declares no smoke selection)
    smoke: dict = field(default_factory=dict)
    #: suite.yml ``arm_parity.bounds``: {class: {key: number|None}}
    arm_parity_bounds: dict = field(default_factory=dict)
    #: suite.yml ``measurement:`` as written (the smoke's measurement is laid over it)
    measurement_block: dict = field(default_factory=dict)

    def arm_parity_bounds_for(self, board: Board) -> dict:
        """ARM-kernel parity bounds for the board's class (``emulated`` for any emulated board)."""
        return dict(self.arm_parity_bounds.get(board.board_class, {}))

    def uses_smoke(self, board: Board, forced: bool = False) -> bool:
        """True when ``board`` runs the smoke selection: the suite declares one and the board's CPU
        is emulated (``cpu_emulated``) or ``forced`` (``fleet test --smoke``)."""
        return bool(self.smoke) and (forced or bool(board.cpu_emulated))

    def options_for(self, smoke: bool) -> dict:
        """Pipeline options: the suite's, with the smoke's laid over them when ``smoke``."""
        return {**self.options, **(self.smoke.get("options") or {})} if smoke else dict(self.options)

    def measurement_for(self, smoke: bool) -> MeasurementConfig:
        """The latency protocol: the suite's, or with ``smoke`` the smoke's ``measurement`` keys
        (and ``warmup_requests``) laid over it."""
        if not smoke:
            return self.measurement
        block = {**self.measurement_block, **(self.smoke.get("measurement") or {})}
        return MeasurementConfig.from_dict(block, warmup=self.smoke.get("warmup_requests", self.warmup_requests))

    def smoke_ids(self) -> list[str]:
        """The smoke selection's item ids, in order ([] when none is declared)."""
        return [str(i) for i in self.smoke.get("items") or []]

    def select_items(self, items: list[dict], smoke: bool) -> list[dict]:
        """``items`` (manifest rows with ``id``), or with ``smoke`` the smoke items in the
        smoke's order.

        Raises:
            FleetError: a smoke id the data set does not have (names it and the ids it has).
        """
        if not smoke:
            return items
        by_id = {str(i.get("id")): i for i in items}
        missing = [i for i in self.smoke_ids() if i not in by_id]
        if missing:
            raise FleetError(f"suite {self.name}: smoke item(s) {', '.join(missing)} not in data set {self.dataset}",
                             f"use ids of its manifest.jsonl in smoke.items, e.g. {', '.join(list(by_id)[:3])}")
        return [by_id[i] for i in self.smoke_ids()]

    def parity_bounds_for(self, board: Board) -> dict:
        """Parity bounds for the board's class (``emulated`` for any emulated board)."""
        return dict(self.parity.get("bounds", {}).get(board.board_class, {}))

    def matches(self, board: Board) -> bool:
        """True when the suite's requirements admit ``board``."""
        return board.accelerator in self.accelerators and board.board in self.boards

    def thresholds_for(self, board: Board) -> dict:
        """Threshold dict for the board's class (``emulated`` for any emulated board)."""
        return dict(self.thresholds.get(board.board_class, {}))

    def dataset_dir(self) -> Path:
        """The suite's data set in the controller's data root ($FLEET_DATA; docs/contracts.md §5),
        every file present with its catalog size.

        Raises:
            FleetError: unknown data set, or missing from the data root (the fix names
                ``fleet datasets fetch`` and FLEET_DATA).
        """
        from fleet.datasets.local import require

        return require(self.dataset)

    def dataset_items(self, smoke: bool = False) -> list[dict]:
        """Entries of the dataset's manifest.jsonl (each has at least ``id``, ``audio``/``text``);
        with ``smoke`` only the smoke selection's (``select_items``).

        Raises:
            FleetError: manifest missing, a line that is not JSON, or an unknown smoke id.
        """
        man = self.dataset_dir() / "manifest.jsonl"
        if not man.exists():
            raise FleetError(f"suite {self.name}: dataset manifest {man} is missing",
                             f"put the dataset in {man.parent} with a manifest.jsonl")
        items = []
        for i, line in enumerate(man.read_text().splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise FleetError(f"{man}:{i}: not JSON: {e}", "fix or remove that line") from None
        return self.select_items(items, smoke)


def load_suite(suite_dir: str | Path) -> Suite:
    """Read and check ``suite_dir/suite.yml`` (fleet.runner.suite_schema) and that the folder has
    test files, before anything is leased or written.

    Raises:
        FleetError: missing folder/file, YAML error, no test_*.py, or every problem the validator
            finds (unknown key or option with "did you mean", unknown pipeline, model, data set,
            board class or threshold key, a value of the wrong type or range), each naming the key
            path and the file.
    """
    from fleet.runner.suite_schema import validate

    d = Path(suite_dir)
    f = d / "suite.yml"
    if not f.exists():
        raise FleetError(f"{f} not found", "a suite is a folder with suite.yml and test_*.py (see suites/whisper_hybrid)")
    try:
        data = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FleetError(f"{f}: YAML syntax error{where}: {getattr(e, 'problem', e)}", "fix the YAML at that line") from None
    if not isinstance(data, dict):
        raise FleetError(f"{f}: expected a mapping, found {type(data).__name__}", "see suites/whisper_hybrid/suite.yml")
    validate(f, data)
    # pytest's default discovery (python_files = test_*.py *_test.py)
    if not any(d.glob("test_*.py")) and not any(d.glob("*_test.py")):
        raise FleetError(f"{d}: no test files (test_*.py) beside suite.yml",
                         f"add the suite's tests as {d}/test_<name>.py (see suites/whisper_hybrid)")
    req = data.get("requires") or {}
    accs = set(req.get("accelerators") or accelerators())
    boards = set(req.get("boards") or board_classes())
    th = data.get("thresholds") or {}
    warmup = data.get("warmup_requests", 1)
    try:  # the checks across keys (max_duration_s > min_duration_s ...)
        measurement = MeasurementConfig.from_dict(data.get("measurement"), warmup=warmup)
        smoke = dict(data.get("smoke") or {})
        if smoke:  # the smoke's protocol must hold on its own (its max_duration_s > min_duration_s ...)
            MeasurementConfig.from_dict({**(data.get("measurement") or {}), **(smoke.get("measurement") or {})},
                                        warmup=smoke.get("warmup_requests", warmup))
    except ValueError as e:
        raise FleetError(f"{f}: {e}", "see the measurement: block of suites/whisper_hybrid/suite.yml") from None
    return Suite(dir=d.resolve(), name=str(data.get("name") or d.name), pipeline=data["pipeline"], model=data["model"],
                 dataset=data.get("dataset") or "", accelerators=accs, boards=boards, options=dict(data.get("options") or {}),
                 thresholds={k: dict(v or {}) for k, v in th.items()},
                 request_timeout_s=float(data.get("request_timeout_s", 120.0)),
                 reconnect_timeout_s=float(data.get("reconnect_timeout_s", RECONNECT_TIMEOUT_S)),
                 warmup_requests=warmup, measurement=measurement, parity=_parity(data.get("parity")),
                 smoke=smoke, measurement_block=dict(data.get("measurement") or {}),
                 arm_parity_bounds={k: dict(v or {}) for k, v in
                                    ((data.get("arm_parity") or {}).get("bounds") or {}).items()})
