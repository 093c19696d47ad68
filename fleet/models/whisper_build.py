"""Build the cpu (ONNX) artifacts of whisper-tiny.en into a folder, verifying every step.

Steps (docs/reference/models.md §4–§6, docs/contracts.md §3):
 1. read the pinned CT2 model.bin, map it to HF Whisper (fp32, eager);
 2. check the numpy mel against WhisperFeatureExtractor on a real clip;
 3. check the torch wrappers against CTranslate2 float32 (encoder output, decoder logits);
 4. export encoder / cross_kv / decoder_step with the dynamo exporter, check I/O names/shapes;
 5. check ONNX (onnxruntime) against the torch wrappers, and the ONNX greedy transcript against
    CTranslate2's greedy tokens;
 6. quantize to INT8 (decoder: untied projection + value_info stripped), load each, compare the
    greedy transcript with fp32;
 7. write tokenizer.json, mel_filters.npy, generation.json;
 8. copy the CTranslate2 model folder (model.bin, config.json, vocabulary.txt, tokenizer.json)
    into ``ct2/``: the board's alternative CPU decoder (``decoder_backend=ct2``); check that the
    copy loads in CTranslate2 at compute_type int8 and transcribes like the INT8 ONNX decoder.
Any check out of tolerance raises FleetError and the build leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from fleet.errors import FleetError
from fleet.models import ct2 as ct2mod
from fleet.models.mel import FRAMES_10S, load_audio, log_mel
from fleet.models.verify import check_close, greedy_decode, session, word_error_rate

MODEL = "whisper-tiny.en"

# Tolerances (max abs diff). docs/reference/models.md §4 measured: mel 3e-5, 10 s encoder vs CT2 2.0e-4,
# decoder logits vs CT2 <= 3.5e-5. The brief allows 1e-3 for encoder and logits.
TOL_MEL = 1e-4
TOL_ENCODER_CT2 = 1e-3
TOL_LOGITS_CT2 = 1e-3
TOL_ONNX = 1e-3  # onnxruntime fp32 vs torch, any output
CT2_STEPS = 8  # decoder steps compared with CT2 logits (teacher forced on CT2's tokens)
MAX_INT8_WER = 0.25  # int8 transcript vs fp32 transcript (word edit distance / words)
# CTranslate2 4.8.5 Whisper.generate returns at most max_length // 2 new tokens after the
# 2-token prompt (measured), so this allows the 222 that generation.json allows.
CT2_MAX_LENGTH = 444

# The verification clip: LibriSpeech dev-clean 1272-141231-0009 (8.6 s, CC BY 4.0), see the speech
# data set's README (fleet/datasets/catalog/speech/README.md).
VERIFY_CLIP = "1272-141231-0009.wav"
VERIFY_TEXT = ("THE CONTESTANTS IN THE TWENTIES NEEDED UNDISTURBED REST THEREFORE NIGHTS IN THE "
               "DORMITORIES WERE AS QUIET AS DEATH")


def _io(name: str, shape: list, dtype: str = "float32") -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


_D = 384
# role -> (file stem, inputs, outputs): docs/contracts.md §3
ONNX_ROLES = {
    "encoder": ("encoder", [_io("mel", [1, 80, FRAMES_10S])],
                [_io("encoder_out", [1, FRAMES_10S // 2, _D])]),
    "cross_kv": ("cross_kv", [_io("encoder_out", [1, "S", _D])],
                 [_io("cross_k", [4, 1, "S", _D]), _io("cross_v", [4, 1, "S", _D])]),
    "decoder_step": ("decoder_step",
                     [_io("tokens", [1, "T"], "int64"), _io("self_k", [4, 1, "P", _D]),
                      _io("self_v", [4, 1, "P", _D]), _io("cross_k", [4, 1, "S", _D]),
                      _io("cross_v", [4, 1, "S", _D])],
                     [_io("logits", [1, 51864]), _io("new_self_k", [4, 1, "P+T", _D]),
                      _io("new_self_v", [4, 1, "P+T", _D])]),
}
# export dynamic axes: input -> {axis: (dim name, min, max)}
_DYN = {
    "cross_kv": {"encoder_out": {1: ("S", 1, 1500)}},
    "decoder_step": {"tokens": {1: ("T", 1, 448)}, "self_k": {2: ("P", 0, 447)},
                     "self_v": {2: ("P", 0, 447)}, "cross_k": {2: ("S", 1, 1500)},
                     "cross_v": {2: ("S", 1, 1500)}},
}
DATA_ROLES = {
    "tokenizer": ("tokenizer.json", "json", []),
    "mel_filters": ("mel_filters.npy", "npy", [_io("mel_filters", [80, 201])]),
    "generation": ("generation.json", "json", []),
}
# The CTranslate2 decoder (device_agent asr.whisper_hybrid, decoder_backend=ct2): the package's
# model folder copied as is into ct2/ (the manifest path keeps the sub-folder; deploy mirrors
# it on the board). Weights stay float16; the board picks compute_type int8 or float32 from the
# variant when it loads them, so both variants list the same files. One role per file, because
# manifest entries are unique by (model, role, variant, target).
CT2_DIR = "ct2"
CT2_ROLES = {
    "decoder_ct2": "model.bin",
    "decoder_ct2_config": "config.json",
    "decoder_ct2_vocabulary": "vocabulary.txt",
    "decoder_ct2_tokenizer": "tokenizer.json",
}
VARIANTS = ("fp32", "int8")


def expected_files() -> list[tuple[str, str, str]]:
    """(role, variant, file name) of every artifact the cpu build produces.

    Data files (tokenizer, mel_filters, generation) are listed once per variant, pointing to
    the same file, so each variant's entries form a complete set.
    """
    out = []
    for variant in VARIANTS:
        for role, (stem, _, _) in ONNX_ROLES.items():
            suffix = ".onnx" if variant == "fp32" else ".int8.onnx"
            out.append((role, variant, stem + suffix))
        for role, (fname, _, _) in DATA_ROLES.items():
            out.append((role, variant, fname))
        for role, fname in CT2_ROLES.items():
            out.append((role, variant, f"{CT2_DIR}/{fname}"))
    return out


def find_verify_clip() -> Path:
    """The verification clip: $FLEET_VERIFY_AUDIO, else ``VERIFY_CLIP`` of the speech data set in
    the data root (``$FLEET_DATA``).

    Raises:
        FleetError: $FLEET_VERIFY_AUDIO names no file, or the speech data set is missing.
    """
    from fleet.models.calibration import dataset_folder

    env = os.environ.get("FLEET_VERIFY_AUDIO")
    if env:
        if not Path(env).is_file():
            raise FleetError(f"FLEET_VERIFY_AUDIO={env}: no such file",
                             "set FLEET_VERIFY_AUDIO to a 16 kHz English speech wav/flac under 10 s, or unset it")
        return Path(env)
    return dataset_folder("speech") / VERIFY_CLIP


def build_cpu(work: Path, report) -> tuple[list[dict], dict]:
    """Build and verify all cpu artifacts of whisper-tiny.en into ``work``.

    Args:
        work: empty folder that receives the files (encoder.onnx, ..., generation.json).
        report: progress reporter with ``step(title)`` (a context manager yielding a dict whose
            "detail" is printed after the timing) and ``metrics`` (a dict filled here).

    Returns:
        (entries, metrics): manifest entries without source/exporter/path prefix (``path`` is
        the bare file name), and measured numbers (max abs diffs, sizes, transcripts).

    Raises:
        FleetError: source not pinned, a check out of tolerance, export/quantization failure.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # weights come from the package; never from a hub
    m = report.metrics
    work = Path(work)

    with report.step("read CTranslate2 model.bin (pinned sha256)") as s:
        model_dir = ct2mod.package_model_dir()
        ct2 = ct2mod.read_model_bin(model_dir / "model.bin")
        s["detail"] = f"{len(ct2.variables)} variables, alias {list(ct2.aliases.items())[0]}"

    with report.step("map to HF WhisperForConditionalGeneration (fp32, eager)") as s:
        import torch

        from fleet.models.whisper import generation_config, load_hf_model, mel_filters

        torch.set_num_threads(min(2, os.cpu_count() or 1))
        hf = load_hf_model(ct2)
        filters = mel_filters()
        gen = generation_config(model_dir)
        s["detail"] = f"{sum(p.numel() for p in hf.parameters()):,} parameters"

    with report.step("check numpy mel vs WhisperFeatureExtractor") as s:
        from transformers import WhisperFeatureExtractor

        clip = find_verify_clip()
        audio = load_audio(clip)
        mel = log_mel(audio, filters)[None]  # [1, 80, 1000]
        ref = WhisperFeatureExtractor(feature_size=80)(
            audio[: FRAMES_10S * 160], sampling_rate=16000, padding="max_length",
            max_length=FRAMES_10S * 160, return_tensors="np").input_features
        m["mel_vs_hf"] = check_close("numpy mel vs WhisperFeatureExtractor", mel, ref, TOL_MEL)
        s["detail"] = f"{clip.name}: max abs diff {m['mel_vs_hf']:.2g}"

    from fleet.models.whisper_torch import CrossKV, DecoderStep, Encoder10s

    encoder, cross_kv, decoder = Encoder10s(hf).eval(), CrossKV(hf).eval(), DecoderStep(hf).eval()
    with report.step("check torch wrappers vs CTranslate2 float32") as s:
        import ctranslate2

        c2 = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32",
                                        intra_threads=2)
        c2_enc = np.array(c2.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
        with torch.no_grad():
            t_enc = encoder(torch.from_numpy(mel)).numpy()
        m["encoder_vs_ct2"] = check_close("torch Encoder10s vs CT2 encode", t_enc, c2_enc,
                                          TOL_ENCODER_CT2)
        # raw logits: no suppression, so every vocab entry is comparable
        res = c2.generate(ctranslate2.StorageView.from_array(c2_enc), [gen["prompt"]],
                          beam_size=1, max_length=4 * CT2_STEPS, return_logits_vocab=True,
                          suppress_blank=False, suppress_tokens=[])[0]
        c2_tokens, c2_logits = res.sequences_ids[0], [np.array(x) for x in res.logits[0]]
        worst = 0.0
        with torch.no_grad():
            ck, cv = cross_kv(torch.from_numpy(c2_enc))
            sk = sv = torch.zeros(4, 1, 0, _D)
            feed = gen["prompt"]
            for i, ref_logits in enumerate(c2_logits[:CT2_STEPS]):
                lg, sk, sv = decoder(torch.tensor([feed]), sk, sv, ck, cv)
                worst = max(worst, check_close(f"DecoderStep logits step {i} vs CT2",
                                               lg.numpy()[0], ref_logits, TOL_LOGITS_CT2))
                if i >= len(c2_tokens):
                    break
                if int(lg.argmax()) != c2_tokens[i]:
                    raise FleetError(f"verification failed: DecoderStep argmax {int(lg.argmax())}"
                                     f" != CT2 token {c2_tokens[i]} at step {i}",
                                     "check the CT2 -> HF mapping", exit_code=3)
                feed = [c2_tokens[i]]
        m["logits_vs_ct2"] = worst
        m["logits_steps"] = min(len(c2_logits), CT2_STEPS)
        s["detail"] = (f"encoder {m['encoder_vs_ct2']:.2g}, logits {worst:.2g} "
                       f"over {m['logits_steps']} steps")

    from fleet.models.onnx_export import (
        OPSET,
        export_onnx,
        graph_io,
        opset_of,
        quantize_int8,
    )

    tok = torch.tensor([gen["prompt"] + [400]])  # T=3 and P=3: no 0/1 specialization
    dec_args = (tok, torch.randn(4, 1, 3, _D), torch.randn(4, 1, 3, _D),
                torch.randn(4, 1, 500, _D), torch.randn(4, 1, 500, _D))
    modules = {"encoder": (encoder, (torch.from_numpy(mel),)),
               "cross_kv": (cross_kv, (torch.from_numpy(c2_enc),)),
               "decoder_step": (decoder, dec_args)}

    def export(role: str, module, args, path: Path) -> None:
        _, ins, outs = ONNX_ROLES[role]
        export_onnx(module, args, path, [i["name"] for i in ins], [o["name"] for o in outs],
                    dynamic=_DYN.get(role), rename_dims={"T + P": "P+T", "P + T": "P+T"})
        got = graph_io(path)
        if got != (ins, outs):
            raise FleetError(f"{path.name}: graph I/O {got} differs from contracts.md §3 "
                             f"{(ins, outs)}", "this is a bug in the export wrappers",
                             exit_code=3)

    for role, (module, args) in modules.items():
        with report.step(f"export {role}.onnx (dynamo, opset 20)") as s:
            path = work / f"{ONNX_ROLES[role][0]}.onnx"
            export(role, module, args, path)
            s["detail"] = f"{path.stat().st_size / 1e6:.1f} MB"
            m[f"bytes_{path.name}"] = path.stat().st_size
    m["opset"] = opset_of(work / "encoder.onnx")
    if m["opset"] != OPSET:
        raise FleetError(f"the exporter wrote opset {m['opset']}, expected {OPSET}",
                         "check the torch/onnxscript versions against docs/reference/models.md §1", exit_code=3)

    with report.step("check onnxruntime fp32 vs torch") as s:
        enc_s, ckv_s, dec_s = (session(work / f"{r}.onnx") for r in ONNX_ROLES)
        o_enc = enc_s.run(["encoder_out"], {"mel": mel})[0]
        m["onnx_encoder_vs_torch"] = check_close("encoder.onnx vs torch", o_enc, t_enc, TOL_ONNX)
        o_ck, o_cv = ckv_s.run(["cross_k", "cross_v"], {"encoder_out": c2_enc})
        d_ckv = max(check_close("cross_kv.onnx cross_k vs torch", o_ck, ck.numpy(), TOL_ONNX),
                    check_close("cross_kv.onnx cross_v vs torch", o_cv, cv.numpy(), TOL_ONNX))
        m["onnx_cross_kv_vs_torch"] = d_ckv
        # decoder: the prompt with an empty cache (P=0), then one cached step (P=2, T=1)
        d_dec = 0.0
        sk_t = sv_t = torch.zeros(4, 1, 0, _D)
        sk_o = sv_o = np.zeros((4, 1, 0, _D), np.float32)
        for feed in (gen["prompt"], [c2_tokens[0]]):
            p_before = sk_o.shape[2]
            with torch.no_grad():
                lt, sk_t, sv_t = decoder(torch.tensor([feed]), sk_t, sv_t, ck, cv)
            lo, sk_o, sv_o = dec_s.run(None, {"tokens": np.array([feed], np.int64),
                                              "self_k": sk_o, "self_v": sv_o,
                                              "cross_k": o_ck, "cross_v": o_cv})
            for name, a, b in (("logits", lo, lt), ("new_self_k", sk_o, sk_t),
                               ("new_self_v", sv_o, sv_t)):
                d_dec = max(d_dec, check_close(f"decoder_step.onnx {name} vs torch "
                                               f"(P={p_before})", a, b.numpy(),
                                               TOL_ONNX))
        m["onnx_decoder_vs_torch"] = d_dec
        s["detail"] = (f"encoder {m['onnx_encoder_vs_torch']:.2g}, cross_kv {d_ckv:.2g}, "
                       f"decoder {d_dec:.2g}")

    with report.step("check onnxruntime greedy transcript vs CTranslate2") as s:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        fp32_tokens = greedy_decode(ckv_s, dec_s, o_enc, gen)
        ct2_full = c2.generate(ctranslate2.StorageView.from_array(c2_enc), [gen["prompt"]],
                               beam_size=1, max_length=CT2_MAX_LENGTH)[0].sequences_ids[0]
        ct2_full = [t for t in ct2_full if t != gen["eot"]]
        fp32_text = tokenizer.decode(fp32_tokens, skip_special_tokens=True).strip()
        m["fp32_text"] = fp32_text
        m["fp32_wer_vs_reference"] = word_error_rate(VERIFY_TEXT, fp32_text)
        if fp32_tokens != ct2_full:
            ct2_text = tokenizer.decode(ct2_full, skip_special_tokens=True).strip()
            raise FleetError(f"verification failed: ONNX fp32 greedy transcript {fp32_text!r} "
                             f"differs from CTranslate2 {ct2_text!r}",
                             "check the decoder export and generation.json", exit_code=3)
        s["detail"] = f"{len(fp32_tokens)} tokens identical: {fp32_text!r}"
        del enc_s, ckv_s, dec_s

    with report.step("quantize INT8 (dynamic, QInt8)") as s:
        quantize_int8(work / "encoder.onnx", work / "encoder.int8.onnx")
        quantize_int8(work / "cross_kv.onnx", work / "cross_kv.int8.onnx")
        untied_dir = work / ".untied"
        untied_dir.mkdir()
        untied = untied_dir / "decoder_step.untied.onnx"
        export("decoder_step", DecoderStep(hf, untied=True).eval(), dec_args, untied)
        quantize_int8(untied, work / "decoder_step.int8.onnx", strip_value_info=True)
        shutil.rmtree(untied_dir)
        for role in ONNX_ROLES:
            p = work / f"{ONNX_ROLES[role][0]}.int8.onnx"
            got = graph_io(p)
            if got != ONNX_ROLES[role][1:]:
                raise FleetError(f"{p.name}: graph I/O {got} differs from contracts.md §3",
                                 "this is a bug in the INT8 step", exit_code=3)
            m[f"bytes_{p.name}"] = p.stat().st_size
        s["detail"] = ", ".join(f"{r} {m[f'bytes_{ONNX_ROLES[r][0]}.int8.onnx'] / 1e6:.1f} MB"
                                for r in ONNX_ROLES)

    with report.step("check INT8 models load and transcribe") as s:
        enc_q, ckv_q, dec_q = (session(work / f"{r}.int8.onnx") for r in ONNX_ROLES)
        q_enc = enc_q.run(["encoder_out"], {"mel": mel})[0]
        m["int8_encoder_vs_fp32"] = float(np.abs(q_enc - o_enc).max())
        int8_tokens = greedy_decode(ckv_q, dec_q, q_enc, gen)
        int8_text = tokenizer.decode(int8_tokens, skip_special_tokens=True).strip()
        m["int8_text"] = int8_text
        m["int8_wer_vs_fp32"] = word_error_rate(fp32_text, int8_text)
        m["int8_wer_vs_reference"] = word_error_rate(VERIFY_TEXT, int8_text)
        if not m["int8_wer_vs_fp32"] <= MAX_INT8_WER:
            raise FleetError(f"verification failed: INT8 transcript {int8_text!r} differs from "
                             f"fp32 {fp32_text!r} (word distance {m['int8_wer_vs_fp32']:.0%} > "
                             f"{MAX_INT8_WER:.0%})", "check the INT8 recipe (docs/reference/models.md §5)",
                             exit_code=3)
        s["detail"] = (f"word distance to fp32 {m['int8_wer_vs_fp32']:.0%}: {int8_text!r}")
        del enc_q, ckv_q, dec_q

    with report.step("write tokenizer.json, mel_filters.npy, generation.json") as s:
        shutil.copyfile(model_dir / "tokenizer.json", work / "tokenizer.json")
        np.save(work / "mel_filters.npy", filters)
        (work / "generation.json").write_text(json.dumps(gen, indent=2) + "\n")
        s["detail"] = f"mel_filters {filters.shape} {filters.dtype}"

    with report.step("copy the CTranslate2 decoder folder (ct2/) and check it at int8") as s:
        ct2_out = work / CT2_DIR
        ct2_out.mkdir()
        for fname in CT2_ROLES.values():
            src = model_dir / fname
            if not src.is_file():
                raise FleetError(f"{src} is missing from the installed {ct2mod.PACKAGE}",
                                 f"reinstall {ct2mod.PACKAGE}=={ct2mod.PACKAGE_VERSION}")
            shutil.copyfile(src, ct2_out / fname)
        from fleet.models.manifest import sha256_file

        got = sha256_file(ct2_out / "model.bin")
        if got != ct2mod.MODEL_BIN_SHA256:
            raise FleetError(f"copied ct2/model.bin has sha256 {got}, the pin is "
                             f"{ct2mod.MODEL_BIN_SHA256}", f"reinstall {ct2mod.PACKAGE}",
                             exit_code=3)
        c2q = ctranslate2.models.Whisper(str(ct2_out), device="cpu", compute_type="int8",
                                         intra_threads=2)
        # the board feeds the unpadded 10 s encoder output (S = 500) of the INT8 encoder
        c2q_ids = c2q.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(q_enc)),
                               [gen["prompt"]], beam_size=1,
                               max_length=CT2_MAX_LENGTH)[0].sequences_ids[0]
        del c2q
        ct2_text = tokenizer.decode([t for t in c2q_ids if t != gen["eot"]],
                                    skip_special_tokens=True).strip()
        m["ct2_int8_text"] = ct2_text
        m["ct2_int8_wer_vs_onnx_int8"] = word_error_rate(int8_text, ct2_text)
        if not m["ct2_int8_wer_vs_onnx_int8"] <= MAX_INT8_WER:
            raise FleetError(f"verification failed: CTranslate2 int8 transcript {ct2_text!r} "
                             f"differs from ONNX int8 {int8_text!r} (word distance "
                             f"{m['ct2_int8_wer_vs_onnx_int8']:.0%} > {MAX_INT8_WER:.0%})",
                             "check the ctranslate2 version against docs/reference/models.md §1", exit_code=3)
        s["detail"] = (f"word distance to ONNX int8 {m['ct2_int8_wer_vs_onnx_int8']:.0%}: "
                       f"{ct2_text!r}")

    entries = []
    for role, variant, fname in expected_files():
        if role in ONNX_ROLES:
            _, ins, outs = ONNX_ROLES[role]
            fmt, quant = "onnx", ("none" if variant == "fp32" else "int8-dynamic")
        elif role in CT2_ROLES:
            # float16 weights as shipped; CTranslate2 converts at load (compute_type)
            fmt, ins, outs, quant = "ct2", [], [], "none"
        else:
            _, fmt, outs = DATA_ROLES[role]
            ins, quant = [], "none"
        entries.append({"model": MODEL, "role": role, "variant": variant, "target": "cpu",
                        "format": fmt, "path": fname, "inputs": ins, "outputs": outs,
                        "quantization": quant})
    return entries, m
