"""The model recipe interface: everything ``fleet models`` needs to know about one model.

A recipe is one class in one file (``fleet/models/recipes/<model>.py``, or a lab's own package
through the ``fleet.recipes`` entry-point group, fleet.models.recipes). The generic machinery
calls it:

=====================================  ====================================================
fleet.models.build (``--target cpu``)  ``expected_files``, ``source_info``, ``build_cpu``
fleet.models.target_build (NPU)        ``npu_graphs``, ``build_npu_graphs``, ``source_info``
fleet.models.calibration               ``calibration_data``, ``calibration_rule``,
                                       ``calibration_arrays``
fleet.models.parity                    ``pipeline``, ``parity_options``, ``parity_task``,
                                       ``format_task``
``fleet models list``                  ``name``, ``summary``, ``verification``
=====================================  ====================================================

The build skeleton around a recipe (fleet.models.skeleton) is the same for every model: the
up-to-date check against manifest.json, the temp folder inside the artifacts root, the swap into
``<target>/<model>/`` and the atomic manifest rewrite. A recipe only writes files into the folder
it is given and describes them; it never touches the artifacts root or the manifest. Its
verification (numbers against the framework's own reference, checked before anything is swapped
in) runs inside ``build_cpu`` / ``build_npu_graphs``: a failed check raises FleetError
(exit_code 3) and the previous artifacts stay.

Heavy imports (torch, transformers, onnx) belong inside the methods: the registry imports every
recipe module to list the models, and ``fleet --help`` must stay fast.

A minimal recipe (cpu only; tests/test_recipes.py has one with NPU graphs, calibration and
parity)::

    from fleet.models.recipes.base import Recipe

    class TinyNet(Recipe):
        name = "tiny-net"
        summary = "a lab's classifier exported to ONNX"
        verification = "onnxruntime vs torch on 16 samples, max abs 1e-4"

        def expected_files(self):
            return [("net", "fp32", "net.onnx")]

        def source_info(self):
            return {"package": "lab-weights", "version": "1.0", "sha256": "<weights sha256>"}

        def build_cpu(self, work, report):
            with report.step("export net.onnx"):
                ...  # write work / "net.onnx" and check it; raise FleetError(exit_code=3) if off
            return [{"model": self.name, "role": "net", "variant": "fp32", "target": "cpu",
                     "format": "onnx", "path": "net.onnx", "inputs": [...], "outputs": [...],
                     "quantization": "none"}], {}

    RECIPE = TinyNet()   # in fleet/models/recipes/tiny_net.py; a plug-in names the class instead
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fleet.errors import FleetError

#: (role, variant, file name relative to the build folder), e.g. ("pitch", "fp32", "crepe_tiny.onnx")
ExpectedFile = tuple[str, str, str]
#: role -> (inputs, outputs), each a list of {"name", "shape" (ints, static), "dtype" (numpy name)}
GraphRoles = dict[str, tuple[list[dict], list[dict]]]


@dataclass
class ParityRequest:
    """What ``fleet models parity`` asks of a recipe's ``parity_task``.

    Attributes:
        request: ``request(op, args) -> result`` on the in-process device agent (a failed op
            raises FleetError, exit_code 3); ops as in device_agent.protocol (``parity``, ``run``).
        options: the pipeline options for the candidate side, already passed through
            ``parity_options`` ({"precision": "int8", "threads": int, ...}).
        target: ``cpu`` or an NPU target (hailo8l, hailo8, rk3588).
        clips: speech models: at most this many evaluation clips (None = all).
        texts: text models: texts for the per-output comparison.
        collection: text models: the retrieval collection for the task metric (``cranfield``).
        task_metric: False skips an expensive task metric (MiniLM's recall@10).
    """

    request: Callable[[str, dict], dict]
    options: dict
    target: str = "cpu"
    clips: int | None = None
    texts: int = 64
    collection: str = "cranfield"
    task_metric: bool = True


@dataclass
class CalibrationDraw:
    """Calibration arrays a recipe drew for one graph.

    Attributes:
        arrays: input name -> array with a leading sample axis N (each row shaped like the graph
            input, the graph's dtype).
        items: one dict per sample naming the data item it came from (written to the sidecar).
        what: one phrase for the manifest ("log-mel windows of 9 speech clips").
    """

    arrays: dict
    items: list[dict]
    what: str


class Recipe(ABC):
    """One model ``fleet`` builds, calibrates and checks for parity.

    Class attributes:
        name: the model name (``whisper-tiny.en``): CLI argument, manifest ``model``, folder
            ``artifacts/<target>/<name>/`` and ``models/<name>`` on the boards.
        summary: one line for ``fleet models list`` (what it is, where the weights come from).
        verification: one line: what the build checks before it swaps the artifacts in.
        pipeline: the device-agent pipeline that runs the model (``asr.whisper_hybrid``), or
            None when the model has no parity task.
        calibration_data: data sets of the data root the calibration set is drawn from
            (``("speech",)``); empty when the model has no NPU graphs.
        calibration_rule: how items are split, in words, for the calibration record
            ("speech clips").
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    verification: ClassVar[str] = ""
    pipeline: ClassVar[str | None] = None
    calibration_data: ClassVar[tuple[str, ...]] = ()
    calibration_rule: ClassVar[str] = ""

    # ------------------------------------------------------------------ cpu build

    @abstractmethod
    def expected_files(self) -> list[ExpectedFile]:
        """(role, variant, file) of every artifact the cpu build records; (role, variant) unique.

        The up-to-date check compares this set with manifest.json."""

    @abstractmethod
    def source_info(self) -> dict:
        """Where the weights come from, pinned: {"package", "version", "sha256", ...}.

        Recorded in every manifest entry; a change rebuilds.

        Raises:
            FleetError: the source package is missing or not the pinned version.
        """

    @abstractmethod
    def build_cpu(self, work: Path, report) -> tuple[list[dict], dict]:
        """Build and verify the cpu artifacts into ``work`` (an empty folder).

        Args:
            work: the build folder; files go to ``work/<file>`` as in ``expected_files``.
            report: fleet.models.skeleton.Report (``report.step(title)``, ``report.metrics``).

        Returns:
            (entries, metrics): one dict per expected file with keys model, role, variant,
            target, format, path (relative to ``work``), inputs, outputs, quantization; the
            skeleton adds sha256, bytes, source and exporter.

        Raises:
            FleetError: export failure or a failed verification (exit_code 3).
        """

    # ------------------------------------------------------------------ NPU targets

    def npu_graphs(self) -> GraphRoles:
        """role -> (inputs, outputs) of the static-shape NPU graphs; empty: no NPU build."""
        return {}

    def build_npu_graphs(self, work: Path, report) -> list:
        """Export and verify the NPU graphs into ``work`` (files ``<role>.onnx``).

        Returns:
            fleet.models.npu_graphs.NpuGraph per role of ``npu_graphs()``.

        Raises:
            FleetError: no NPU graphs (exit 2), export failure or a failed check (exit 3).
        """
        raise FleetError(f"no NPU graphs for model {self.name!r}",
                         "build it for --target cpu, or give its recipe npu_graphs()")

    def calibration_arrays(self, graph: Path, inputs: list[dict], n: int,
                           root: Path | None = None) -> CalibrationDraw:
        """Draw up to ``n`` calibration samples for ``graph`` from the data root.

        Args:
            graph: the fp32 ONNX graph to be quantized.
            inputs: its inputs [{name, shape, dtype}] (fleet.models.calibration.graph_inputs).
            n: samples wanted (>= 1).
            root: data root (default fleet.paths.data_root()).

        Raises:
            FleetError: no calibration recipe, graph inputs of an unexpected kind, data missing.
        """
        raise FleetError(f"no calibration data recipe for model {self.name!r}",
                         "give its recipe calibration_data and calibration_arrays()")

    # ------------------------------------------------------------------ parity

    def parity_options(self, target: str, options: dict) -> dict:
        """The candidate's pipeline options for ``target`` (default: ``options`` unchanged)."""
        return options

    def parity_task(self, req: ParityRequest) -> tuple[dict, dict]:
        """Run the agent's ``parity`` op (and the task metric) on the evaluation split.

        Returns:
            (parity op result, task metric dict: {"metric": ..., deltas ...}, or {}).

        Raises:
            FleetError: the model has no parity task, or the agent failed.
        """
        raise FleetError(f"no parity recipe for model {self.name!r}",
                         "give its recipe a pipeline and parity_task()", exit_code=2)

    def format_task(self, task: dict) -> str | None:
        """One line of ``fleet models parity`` output for the task metric, or None."""
        return None

    # ------------------------------------------------------------------ helpers

    @property
    def has_npu_graphs(self) -> bool:
        """True when the model builds for NPU targets."""
        return bool(self.npu_graphs())

    def describe(self) -> dict:
        """What ``fleet models list --json`` prints for this recipe."""
        return {"name": self.name, "summary": self.summary, "verification": self.verification,
                "cpu_roles": sorted({r for r, _, _ in self.expected_files()}),
                "npu_graphs": sorted(self.npu_graphs()), "calibration_data": list(self.calibration_data),
                "pipeline": self.pipeline, "recipe": f"{type(self).__module__}.{type(self).__qualname__}"}

