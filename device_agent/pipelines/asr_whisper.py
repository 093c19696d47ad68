"""``asr.whisper_hybrid``: Whisper tiny.en with the encoder on the board's NPU and a KV-cached
greedy decoder on the CPU. Recipe: docs/reference/models.md §6.

Per 10 s window:
  1. log-mel [1, 80, 1000] in numpy (``device_agent.mel``);
  2. encoder → [1, 500, 384] on hailo (.hef), rknn (.rknn) or onnx;
  3. optionally zero-pad to ``pad_to`` positions (default 0: no padding, see below);
  4. decoder (``decoder_backend``):
     - ``onnx`` (default): cross_kv once → cross_k, cross_v [4, 1, S, 384], then greedy decoding
       with decoder_step: the first call feeds the prompt with an empty past (P = 0), then one
       token per call with the returned self K/V (kept as onnxruntime values through I/O
       binding); ``suppress_ids`` and every special id above eot are masked (additive masks
       computed once at load), the first step also masks ``suppress_ids_begin``; stops at eot or
       ``max_new_tokens``;
     - ``ct2``: CTranslate2 ``Whisper.generate`` (greedy) on the encoder output, with the
       package's CT2 folder deployed as ``ct2/`` (compute_type int8 or float32 after
       ``precision``); same prompt and suppression; needs the ``ctranslate2`` package, imported
       only when chosen;
  5. tokenizer decode (special tokens skipped).
Audio longer than 10 s is cut into windows at the quietest point (lowest short-time energy in
25 ms frames) within the last ``window_search_s`` seconds before each 10 s boundary; window
texts are joined with a space.

Encoder backend (``encoder_backend=auto``): the board's NPU backend when the board is not
emulated and an NPU artifact (.hef for hailo8l/hailo8, .rknn for rk3588) is deployed; onnx
otherwise (emulated board, CPU board, or no NPU artifact). The result says which ran and why.

Measured defaults (benchmarks/asr_hybrid.py, 20 speech clips, 2-core x86 shared with other
work, load average 5-8, every variant in its own process, clip-interleaved; ratios are to
faster-whisper int8 beam 1 in the same run, which took 1259-1947 ms per clip under that load):
  - onnxruntime intra-op spin-waiting off (``ort_spinning=false``): int8 393 ms (0.31x) vs 786 ms
    (0.62x) with spinning; decoder 8.5 vs 22.5 ms/token. Spinning threads of the encoder and
    decoder sessions compete with each other and with every other process for the 2 cores.
  - ``pad_to=0``: 0.31x, WER 3.0 %, decoder 8.5 ms/token vs ``pad_to=1500``: 0.38x, WER 4.9 %,
    12.3 ms/token (cross-attention over 1500 instead of 500 positions; the decoder copes with
    the 10 s encoder output unpadded, docs/reference/models.md §7). 1500 stays available.
  - ``decoder_backend=onnx``: int8 equal to ct2 within noise in one process (6.7 vs 6.9 ms/token,
    20 clips x 2, interleaved) and 0.31-0.35x vs ct2's 0.28-0.29x in the separate-process
    benchmark runs (WER 3.0 % vs 2.4 %, one word in 20 clips); at fp32 CTranslate2 was 2-3x
    slower here (float32: 102 ms/token vs onnx 19 ms/token). onnx keeps ctranslate2 off the
    board and is the runtime measured on every board; ct2 stays an option.
  - I/O binding and the precomputed masks remove the per-step numpy work (about 0.5 ms/token
    of logits copying and masking over 51,864 ids, of 5-9 ms/token). What remains in
    decoder_step is its own graph: ORT profiling shows ~30 % of its kernel time in Split +
    Transpose of cross K/V, re-laid out every step because the contract passes them as
    [4, 1, S, 384]; fixing that needs a per-layer, head-major cross K/V in the contract.

Decoding defaults: ``repetition_penalty=1.0`` and ``eos_boost=0`` (both off). Hailo's example
applies a 1.5 penalty to its fixed-window, cache-less decoder; with this KV-cached greedy loop it
penalises legitimately repeated words ("the", "of"): on the 20 shared speech clips (int8) WER was
4.9 % with 1.0 or 1.1 and 13.3 % with 1.5, and ``eos_boost=1`` changed nothing (measured with
pad_to=1500).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import manifest as mf
from ..audio import load_audio
from ..backends.base import Backend, LoadedModel
from ..mel import HOP_LENGTH, N_FFT, N_FRAMES, SAMPLE_RATE, log_mel
from ..protocol import BadInput, ModelError
from ..whisper_generation import greedy, suppression_masks
from . import npu_stage
from .base import Option, Pipeline

WINDOW_S = N_FRAMES * HOP_LENGTH / SAMPLE_RATE   # 10.0 s: the static encoder's input length
ENCODER_FRAMES = N_FRAMES // 2                   # 500: conv2 has stride 2 (Whisper encoder)
TEXT_CTX = 448                                   # Whisper n_text_ctx: decoder positions
# The CTranslate2 decoder folder: manifest role -> file (fleet/models/whisper_build.py CT2_ROLES).
# Deploy keeps the ct2/ sub-folder of the artifacts; a flat model folder works too.
CT2_ROLES = {"decoder_ct2": "model.bin", "decoder_ct2_config": "config.json",
             "decoder_ct2_vocabulary": "vocabulary.txt"}
CT2_COMPUTE = {"fp32": "float32", "int8": "int8"}
CT2_VERSION = "4.8.5"  # the version measured (docs/reference/models.md §1)
# ctranslate2 4.8.5 Whisper.generate with the 2-token prompt yields at most max_length // 2 new
# tokens (measured: max_length 2..8 -> 1, 1, 2, 2, 3, 3, 4), so N new tokens need 2 N.
CT2_LENGTH_FACTOR = 2
# Roles of an NPU encoder's emulation model, in order of preference: the channels-last graph the
# Hailo/RKNN build compiles (``encoder_npu``, NHWC [1,1,1000,80]) or the plain ``encoder``.
ENCODER_NPU_ROLES = ("encoder_npu", "encoder")
GENERATION_KEYS = ("sot", "eot", "no_timestamps", "prompt", "suppress_ids", "suppress_ids_begin",
                   "max_new_tokens")


@contextmanager
def _timer(acc: dict, key: str):
    """Add the block's wall time (ms) to ``acc[key]``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        acc[key] += (time.perf_counter() - t) * 1e3


def split_windows(audio: np.ndarray, window_s: float = WINDOW_S, search_s: float = 2.0,
                  sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Cut audio longer than one window at its quietest points.

    Before each ``window_s`` boundary the cut goes to the centre of the 25 ms frame (10 ms hop)
    with the least energy (sum of squares) within the last ``search_s`` seconds.

    Args:
        audio: float32 [n_samples] at ``sample_rate``.
        window_s: window length (s); 10 s for the static encoder.
        search_s: how far before each boundary to search (s), 0 < search_s < window_s.

    Returns:
        [(start, end)] sample indices covering the audio, each at most ``window_s`` long.
    """
    if not 0 < search_s < window_s:
        raise BadInput(f"window_search_s={search_s} must be > 0 and < {window_s}",
                       "use a value like 2.0 (seconds)")
    win = int(round(window_s * sample_rate))
    span = int(round(search_s * sample_rate))
    frame, hop = N_FFT, HOP_LENGTH
    n = len(audio)
    out, start = [], 0
    while n - start > win:
        lo = start + win - span
        seg = np.asarray(audio[lo:start + win], dtype=np.float64)
        c = np.concatenate([[0.0], np.cumsum(seg * seg)])
        starts = np.arange(0, len(seg) - frame + 1, hop)
        energy = c[starts + frame] - c[starts]
        cut = lo + int(starts[int(np.argmin(energy))]) + frame // 2
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


def _ort_session(path: Path, threads: int, spinning: bool):
    """An onnxruntime CPU session (``OnnxBackend.load``: sequential execution, all graph
    optimizations, spin-waiting off unless ``spinning``; module docstring has the numbers).

    Raises:
        ModelError: file missing or onnxruntime cannot load it.
    """
    from ..backends.onnx import OnnxBackend

    return OnnxBackend().load(path, intra_op_threads=threads, spinning=spinning)


def _ort_error(model, e: Exception) -> Exception:
    """A ModelError for an onnxruntime failure inside the decoder loop."""
    msg = str(e).splitlines()[0] if str(e) else repr(e)
    return ModelError(f"{model.path.name}: onnxruntime failed: {msg}",
                      "check the artifact (fleet models build) and onnxruntime version")


def mel_layout(mel: np.ndarray, shape) -> np.ndarray:
    """A log-mel window f32 [1, 80, T] in an encoder's input layout.

    Layouts (from the declared input ``shape``): channels first [1, 80, T] (cpu encoder) or
    [1, 80, 1, T]; channels last [1, T, 80] (a stream) or NHWC [1, 1, T, 80] (Hailo's
    ``encoder_npu``, docs/reference/models.md §5: Transpose to [1, 80, 1, T] inside the graph). A dimension that
    is not an int (dynamic) matches anything.

    Returns:
        C-contiguous float32 array of ``shape`` (dynamic dims filled from the mel).

    Raises:
        BadInput: no layout of the mel fits ``shape``.
    """
    n_mels, frames = mel.shape[1], mel.shape[2]
    dims = list(shape)
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]

    def fits(cand):
        return len(cand) == len(fixed) and all(f is None or f == c for f, c in zip(fixed, cand))

    cf = [1, n_mels, frames]
    cl = [1, frames, n_mels]
    for cand, x in (([1, n_mels, frames], mel), ([1, n_mels, 1, frames], mel[:, :, None, :]),
                    ([1, frames, n_mels], mel.transpose(0, 2, 1)),
                    ([1, 1, frames, n_mels], mel.transpose(0, 2, 1)[:, None])):
        # channels last only when the last axis is really the mel axis (n_mels != frames)
        if fits(cand) and not (cand[-1] == n_mels and fixed[-1] is None):
            return np.ascontiguousarray(x, dtype=np.float32)
    raise BadInput(f"encoder input shape {dims} fits neither channels-first {cf} / [1,{n_mels},1,{frames}] "
                   f"nor channels-last {cl} / [1,1,{frames},{n_mels}]",
                   "rebuild the encoder with one of those layouts (fleet models build)")


def declared_input(art: mf.Artifact, model: LoadedModel):
    """The encoder input as the artifact's manifest ``inputs`` declare it (name, shape, dtype),
    else as the loaded model reports it. The shape decides the mel layout (``mel_layout``)."""
    from ..backends.base import TensorInfo

    decl = art.get("inputs") or []
    if decl and isinstance(decl[0], dict) and decl[0].get("name") and decl[0].get("shape"):
        return TensorInfo(str(decl[0]["name"]), tuple(decl[0]["shape"]), str(decl[0].get("dtype", "float32")))
    return model.inputs[0]


def import_ctranslate2():
    """The ctranslate2 module, or ModelError saying how to install it."""
    try:
        import ctranslate2
    except ImportError as e:
        raise ModelError(f"decoder_backend=ct2 needs the ctranslate2 package, which is not "
                         f"installed in the agent's Python ({e})",
                         f"pip install ctranslate2=={CT2_VERSION} into the agent's venv, or use "
                         "decoder_backend=onnx") from None
    return ctranslate2


class WhisperHybrid(Pipeline):
    """Whisper hybrid ASR (see module docstring). Result: docs/contracts.md §4."""

    name = "asr.whisper_hybrid"
    default_model = "whisper-tiny.en"
    NPU_ROLES = ENCODER_NPU_ROLES  # not decoder_npu: the full-NPU decoder is built, no pipeline runs it
    NPU_STAGE = "encoder"  # the info key of the NPU stage parity compares
    PARITY_REFERENCE_ROLE = "encoder"  # its cpu fp32 reference in the manifest
    OPTIONS = (
        Option("precision", str, None, "ONNX variant for the CPU stages (and the encoder when it runs "
               "on onnx): fp32 or int8; default int8 on NPU boards (NPUs run int8), fp32 on cpu",
               choices=("fp32", "int8"), load=True),
        Option("encoder_backend", str, "auto", "auto (NPU if deployed, else onnx), onnx, hailo or rknn",
               choices=("auto", "onnx", "hailo", "rknn"), load=True),
        Option("decoder_backend", str, "onnx", "CPU decoder: onnx (decoder_step.onnx in a KV-cached "
               "greedy loop) or ct2 (CTranslate2 Whisper.generate on the ct2/ model folder; needs the "
               "ctranslate2 package on the board)", choices=("onnx", "ct2"), load=True),
        Option("threads", int, 0, "intra-op threads of onnxruntime (and CTranslate2) "
               "(0 = the runtime's default: one per physical core)", load=True),
        Option("ort_spinning", bool, False, "let onnxruntime's intra-op threads spin-wait for work "
               "(only pays on an otherwise idle CPU; off by default, see the module docstring)",
               load=True),
        Option("pad_to", int, 0, "zero-pad the 500 encoder positions to this many before the decoder "
               "(0 = no padding, the default; 1500 = Whisper's 30 s length)"),
        Option("max_new_tokens", int, 0, "most tokens per window (0 = generation.json's value)"),
        Option("repetition_penalty", float, 1.0, "divide positive / multiply negative logits of "
               "already generated tokens by this (CTRL/HF style); 1.0 = off"),
        Option("eos_boost", float, 0.0, "added to the eot logit each step (>0 ends earlier); 0 = off "
               "(decoder_backend=onnx only)"),
        Option("max_audio_s", float, 600.0, "refuse longer inputs (s)"),
        Option("window_search_s", float, 2.0, "search span (s) before each 10 s boundary for the cut"),
    )

    def __init__(self, config):
        super().__init__(config)
        self.encoder: LoadedModel | None = None
        self.cross_kv: LoadedModel | None = None
        self.decoder: LoadedModel | None = None
        self.ct2 = None  # ctranslate2.models.Whisper when decoder_backend=ct2
        self.emulation: str | None = None
        self.enc_input = None  # TensorInfo of the encoder input as the manifest declares it

    def default_options(self) -> dict:
        opts = super().default_options()
        opts["precision"] = "fp32" if self.config.npu is None else "int8"
        return opts

    # -- load --------------------------------------------------------------------------------
    def _choose_encoder(self, arts: list[mf.Artifact], precision: str, want: str,
                        backends: dict[str, Backend]) -> tuple[str, mf.Artifact, str]:
        """(backend name, artifact, reason) for the encoder; ``self.emulation`` is set to what
        stands in for the NPU on an emulated board (``device_agent.emulation``), else None."""
        cfg = self.config
        onnx_art = mf.find(arts, role="encoder", format="onnx", variant=precision)
        self.emulation = None

        choice = npu_stage.choose_npu_stage(arts, cfg, backends, want=want, precision=precision,
                                            roles=ENCODER_NPU_ROLES, stage="encoder", option="encoder_backend")
        if choice is not None:
            self.emulation = choice.emulation
            return choice.backend, choice.artifact, choice.reason
        if onnx_art is None:
            have = sorted({str(a.get("variant")) for a in arts if a.get("role") == "encoder"})
            raise ModelError(f"no {precision} ONNX encoder in the model folder (encoders: {have or 'none'})",
                             "deploy that variant, or pick another precision option")
        fb = npu_stage.cpu_fallback(onnx_art, cfg, want=want, precision=precision, stage="encoder",
                                    option="encoder_backend", model=self.default_model)
        self.emulation = fb.emulation
        return "onnx", onnx_art, fb.reason

    def load(self, model_dir: Path, backends: dict[str, Backend], options: dict) -> dict:
        self.unload()
        precision = options["precision"]
        arts = mf.read_manifest(model_dir)

        def need(role, **match):
            a = mf.find(arts, role=role, **match)
            if a is None:
                raise ModelError(f"{model_dir}: manifest has no {role} "
                                 + " ".join(f"{k}={v}" for k, v in match.items()),
                                 "deploy that artifact (fleet deploy), or pick another precision option")
            return a

        enc_backend, enc_art, reason = self._choose_encoder(arts, precision, options["encoder_backend"],
                                                            backends)
        dec_backend = options["decoder_backend"]
        used = {"encoder": enc_art, "tokenizer": need("tokenizer"), "mel_filters": need("mel_filters"),
                "generation": need("generation")}
        if dec_backend == "onnx":
            used["cross_kv"] = need("cross_kv", format="onnx", variant=precision)
            used["decoder_step"] = need("decoder_step", format="onnx", variant=precision)
        models = {a.file: mf.verify(a) for a in used.values()}
        ct2_dir = None
        if dec_backend == "ct2":
            ct2mod = import_ctranslate2()  # fail before hashing 75 MB when it is not installed
            ct2_dir, ct2_models = self._ct2_folder(model_dir, arts, precision, need)
            models.update(ct2_models)

        try:
            filters = np.load(used["mel_filters"].path)
        except (OSError, ValueError) as e:
            raise ModelError(f"{used['mel_filters'].path} is not a .npy array: {e}",
                             "rebuild the artifacts (fleet models build)") from None
        if filters.shape != (80, N_FFT // 2 + 1):
            raise ModelError(f"{used['mel_filters'].path} has shape {filters.shape}, expected (80, 201)",
                             "rebuild the artifacts (fleet models build)")
        try:
            gen = json.loads(used["generation"].path.read_text())
        except ValueError as e:
            raise ModelError(f"{used['generation'].path} is not JSON: {e}", "rebuild the artifacts") from None
        missing = [k for k in GENERATION_KEYS if k not in gen]
        if missing:
            raise ModelError(f"{used['generation'].path} lacks {missing}", "rebuild the artifacts")
        from tokenizers import Tokenizer
        try:
            tokenizer = Tokenizer.from_file(str(used["tokenizer"].path))
        except Exception as e:  # tokenizers raises a plain Exception
            raise ModelError(f"{used['tokenizer'].path} is not a tokenizers JSON: {e}",
                             "rebuild the artifacts (fleet models build)") from None

        threads, spin = options["threads"], options["ort_spinning"]
        ok, why = backends["onnx"].available() if "onnx" in backends else (True, "")
        if not ok and (enc_backend == "onnx" or dec_backend == "onnx"):
            raise ModelError(f"onnxruntime is not available: {why}", "install onnxruntime")
        try:
            if enc_backend == "onnx":
                self.encoder = _ort_session(enc_art.path, threads, spin)
            else:
                self.encoder = backends[enc_backend].load(
                    enc_art.path, inputs=enc_art.get("inputs"), outputs=enc_art.get("outputs"))
            if dec_backend == "onnx":
                self.cross_kv = _ort_session(used["cross_kv"].path, threads, spin)
                self.decoder = _ort_session(used["decoder_step"].path, threads, spin)
            else:
                try:
                    self.ct2 = ct2mod.models.Whisper(str(ct2_dir), device="cpu",
                                                     compute_type=CT2_COMPUTE[precision],
                                                     intra_threads=threads, inter_threads=1)
                except (RuntimeError, ValueError, OSError) as e:
                    raise ModelError(f"CTranslate2 cannot load {ct2_dir}: {e}",
                                     "rebuild and redeploy the artifacts (fleet models build; "
                                     f"fleet deploy), ctranslate2=={CT2_VERSION}") from None
        except BaseException:
            self.unload()  # nothing half-loaded stays open (e.g. a configured HEF)
            raise
        self.enc_input = declared_input(enc_art, self.encoder)
        self.filters = filters.astype(np.float32)
        self.gen = gen
        self.tokenizer = tokenizer
        self.eot = int(gen["eot"])
        self.prompt = [int(t) for t in gen["prompt"]]
        vocab = 51864  # Whisper English vocab
        if self.decoder is not None:
            vocab_dim = self.decoder.outputs[0].shape[-1]
            vocab = vocab_dim if isinstance(vocab_dim, int) else vocab
        # suppress_ids, plus every special id from suppress_from (default eot + 1: sot, task,
        # no_timestamps, timestamps): docs/reference/models.md §6; eot itself stays allowed.
        # Computed once as additive masks (0 or -inf) over the vocabulary (whisper_generation).
        self.mask, self.mask_begin = suppression_masks(gen, vocab)
        if dec_backend == "onnx":
            dec_info = {"backend": "onnx", "artifact": used["decoder_step"].file}
        else:
            rel = (ct2_dir / "model.bin").relative_to(model_dir) if ct2_dir.is_relative_to(model_dir) \
                else ct2_dir / "model.bin"
            dec_info = {"backend": "ct2", "artifact": str(rel),
                        "compute_type": CT2_COMPUTE[precision], "ctranslate2": ct2mod.__version__}
        self.info = {
            "pipeline": self.name, "model_dir": str(model_dir), "precision": precision,
            "encoder": {"backend": enc_backend, "artifact": enc_art.file, "reason": reason,
                        "emulated": self._emulated(enc_backend), "emulation": self.emulation,
                        "quantization": enc_art.get("quantization"),
                        "input": self.enc_input.to_dict()},
            "decoder": dec_info,
            "models": models,
        }
        return self.info

    def _ct2_folder(self, model_dir: Path, arts: list[mf.Artifact], precision: str,
                    need) -> tuple[Path, dict]:
        """The verified CTranslate2 folder and {"<folder>/<file>": sha256} of its files.

        The files sit where the manifest path says (``ct2/model.bin``, as deployed) or flat in
        the model folder; all must share one folder, since CTranslate2 loads a directory.
        """
        found, models = {}, {}
        for role, fname in CT2_ROLES.items():
            a = need(role, format="ct2", variant=precision)
            p = model_dir / str(a.get("path"))
            if not p.is_file():
                p = a.path  # flat layout
            sha = mf.verify(mf.Artifact(p.parent, {**a.entry, "path": p.name}))
            if p.name != fname:
                raise ModelError(f"{model_dir}: manifest role {role} is {p.name}, expected {fname}",
                                 "rebuild the artifacts (fleet models build)")
            found[role] = p
            models[f"{p.parent.name}/{p.name}" if p.parent != model_dir else p.name] = sha
        dirs = {p.parent for p in found.values()}
        if len(dirs) != 1:
            raise ModelError(f"the CTranslate2 files are spread over {sorted(map(str, dirs))}",
                             "redeploy the models (fleet deploy): they belong in one folder")
        return dirs.pop(), models

    def _emulated(self, backend: str) -> bool:
        return bool(self.config.emulated and self.config.npu and backend == "onnx")

    def parity(self, config, backends: dict, inputs: list, options: dict) -> dict:
        """NPU-stage parity: each clip's encoder output from the cpu fp32 reference and from this
        board's encoder (cosine, max abs error), and both decoded by the same greedy decoder.

        Returns the parity op's stage part (device_agent.parity): output, reference, per_input,
        summary. Raises BadInput (a bad input), ModelError (the fp32 reference is missing)."""
        from .. import parity as par

        ref_model, ref_art, ref_sha = par.reference_model(self, self.PARITY_REFERENCE_ROLE, backends)
        decode = self._decode_onnx if self.info["decoder"]["backend"] == "onnx" else self._decode_ct2
        rows, per_window = [], []
        for inp in inputs:
            if not isinstance(inp, str) or not inp:
                raise BadInput(f"parity input {inp!r} is not an audio path", "pass paths like data/speech/jfk.flac")
            path = config.resolve(inp, "input")
            audio = load_audio(path, max_seconds=options["max_audio_s"])
            ms = {"mel": 0.0, "encoder": 0.0, "cross_kv": 0.0, "decoder": 0.0}
            ref_ids, cand_ids, cmp = [], [], []
            for start, end in split_windows(audio, search_s=options["window_search_s"]):
                mel = log_mel(audio[start:end], self.filters)
                ref = ref_model.run({ref_model.inputs[0].name: mel})[ref_model.outputs[0].name]
                ref = np.asarray(ref, np.float32).reshape(1, -1, ref.shape[-1])
                cand = self._encode(mel)
                cmp.append(par.compare(ref, cand))
                ref_ids += decode(ref, options, ms)
                cand_ids += decode(cand, options, ms)
            per_window += cmp
            rows.append({"input": inp, "windows": len(cmp),
                         "cosine": min(c["cosine"] for c in cmp),
                         "max_abs_err": max(c["max_abs_err"] for c in cmp),
                         "text_reference": self.tokenizer.decode(ref_ids, skip_special_tokens=True).strip(),
                         "text_candidate": self.tokenizer.decode(cand_ids, skip_special_tokens=True).strip()})
        return {"output": "encoder_out", "reference": {"backend": "onnx", "artifact": ref_art.file,
                                                       "precision": "fp32", "sha256": ref_sha},
                "per_input": rows, "summary": par.summarize(per_window)}

    def unload(self) -> None:
        for m in (self.encoder, self.cross_kv, self.decoder):
            if m is not None:
                m.close()
        self.encoder = self.cross_kv = self.decoder = None
        self.ct2 = None

    # -- run ---------------------------------------------------------------------------------
    def _encode(self, mel: np.ndarray) -> np.ndarray:
        """mel f32 [1, 80, 1000] → encoder_out f32 [1, 500, 384], fed in the layout the encoder
        artifact's manifest ``inputs`` declare (``mel_layout``)."""
        t = self.enc_input or self.encoder.inputs[0]
        x = mel_layout(mel, t.shape)
        # the runtime's own input name (a HEF's stream name may differ from the manifest's)
        out = self.encoder.run({self.encoder.inputs[0].name: x})
        y = np.asarray(out[self.encoder.outputs[0].name], dtype=np.float32)
        return y.reshape(1, -1, y.shape[-1])

    def _max_new(self, options: dict) -> int:
        max_new = options["max_new_tokens"] or int(self.gen["max_new_tokens"])
        return min(max_new, TEXT_CTX - len(self.prompt))

    def _decode_onnx(self, enc: np.ndarray, options: dict, ms: dict) -> list[int]:
        """cross_kv once, then greedy KV-cached decoding with decoder_step.

        I/O binding: cross K/V and the self K/V stay onnxruntime values from one step to the next
        (no numpy round trip); only the logits row comes back. Returns the generated ids
        (prompt and eot excluded).
        """
        penalty, boost = options["repetition_penalty"], options["eos_boost"]
        ckv, dec = self.cross_kv.session, self.decoder.session
        try:
            with _timer(ms, "cross_kv"):
                io = ckv.io_binding()
                io.bind_cpu_input(self.cross_kv.inputs[0].name, np.ascontiguousarray(enc, np.float32))
                io.bind_output("cross_k")
                io.bind_output("cross_v")
                ckv.run_with_iobinding(io)
                cross_k, cross_v = io.get_outputs()
            with _timer(ms, "decoder"):
                io = dec.io_binding()
                io.bind_ortvalue_input("cross_k", cross_k)
                io.bind_ortvalue_input("cross_v", cross_v)
                empty = np.zeros((cross_k.shape()[0], 1, 0, cross_k.shape()[-1]), dtype=np.float32)
                io.bind_cpu_input("self_k", empty)
                io.bind_cpu_input("self_v", empty)
                io.bind_cpu_input("tokens", np.asarray([self.prompt], dtype=np.int64))
                state: list = []  # the last step's self K/V (onnxruntime values)

                def next_logits(generated: list[int]) -> np.ndarray:
                    if generated:  # feed the last chosen id with the cache the step returned
                        io.bind_ortvalue_input("self_k", state[0])
                        io.bind_ortvalue_input("self_v", state[1])
                        io.bind_cpu_input("tokens", np.asarray([[generated[-1]]], dtype=np.int64))
                    for name in ("logits", "new_self_k", "new_self_v"):
                        io.bind_output(name)
                    dec.run_with_iobinding(io)
                    logits_v, self_k, self_v = io.get_outputs()
                    state[:] = [self_k, self_v]
                    return logits_v.numpy()[0]

                out = greedy(next_logits, self.eot, self._max_new(options), self.mask, self.mask_begin,
                             repetition_penalty=penalty, eos_boost=boost)
        except ModelError:
            raise
        except Exception as e:  # onnxruntime raises its own exception classes
            raise _ort_error(self.decoder, e) from None
        return out

    def _decode_ct2(self, enc: np.ndarray, options: dict, ms: dict) -> list[int]:
        """CTranslate2 ``Whisper.generate`` (greedy) on the encoder output; same prompt and
        suppression as the onnx loop (suppress_ids every step, suppress_ids_begin = blank/eot
        at the first step, special ids via the no-timestamps prompt)."""
        import ctranslate2

        max_new = self._max_new(options)
        with _timer(ms, "decoder"):
            try:
                res = self.ct2.generate(
                    ctranslate2.StorageView.from_array(np.ascontiguousarray(enc, dtype=np.float32)),
                    [self.prompt], beam_size=1, max_length=CT2_LENGTH_FACTOR * max_new,
                    repetition_penalty=options["repetition_penalty"], suppress_blank=True,
                    suppress_tokens=[int(t) for t in self.gen["suppress_ids"]])[0]
            except (RuntimeError, ValueError) as e:
                raise ModelError(f"CTranslate2 generate failed: {e}",
                                 f"check ctranslate2=={CT2_VERSION} and the ct2/ artifacts") from None
        return [int(t) for t in res.sequences_ids[0] if t != self.eot][:max_new]

    def run(self, input_path: Path, options: dict) -> dict:
        if self.decoder is None and self.ct2 is None:
            raise ModelError(f"{self.name} is not loaded", "load it first")
        backend = self.info["decoder"]["backend"]
        pad_to = options["pad_to"]
        if pad_to and pad_to < ENCODER_FRAMES:
            raise BadInput(f"pad_to={pad_to} is below the encoder's {ENCODER_FRAMES} positions",
                           f"use 0 (no padding) or a value >= {ENCODER_FRAMES}, e.g. 1500")
        if options["repetition_penalty"] <= 0:
            raise BadInput("repetition_penalty must be > 0", "use 1.0 (off) or e.g. 1.1")
        if options["eos_boost"] and backend == "ct2":
            raise BadInput("eos_boost is not supported with decoder_backend=ct2 (CTranslate2 "
                           "has no per-step logit hook)", "use decoder_backend=onnx, or eos_boost=0")
        decode = self._decode_onnx if backend == "onnx" else self._decode_ct2
        t0 = time.perf_counter()
        audio = load_audio(input_path, max_seconds=options["max_audio_s"])
        windows = split_windows(audio, search_s=options["window_search_s"])
        ms = {"mel": 0.0, "encoder": 0.0, "cross_kv": 0.0, "decoder": 0.0}
        texts, tokens = [], []
        for start, end in windows:
            with _timer(ms, "mel"):
                mel = log_mel(audio[start:end], self.filters)
            with _timer(ms, "encoder"):
                enc = self._encode(mel)
            enc_len = enc.shape[1]
            if pad_to and enc.shape[1] < pad_to:
                enc = np.pad(enc, ((0, 0), (0, pad_to - enc.shape[1]), (0, 0)))
            ids = decode(enc, options, ms)
            tokens.extend(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            if text:
                texts.append(text)
        total_ms = (time.perf_counter() - t0) * 1e3
        audio_s = len(audio) / SAMPLE_RATE
        enc_info = self.info["encoder"]
        return {
            "pipeline": self.name,
            "text": " ".join(texts),
            "tokens": tokens,
            "audio_s": round(audio_s, 3),
            "windows": len(windows),
            "stages": {
                "mel": {"ms": round(ms["mel"], 2), "backend": "numpy"},
                "encoder": {"ms": round(ms["encoder"], 2), "backend": enc_info["backend"],
                            "emulated": enc_info["emulated"], "emulation": enc_info["emulation"],
                            "artifact": enc_info["artifact"], "reason": enc_info["reason"]},
                "decoder": {"ms": round(ms["cross_kv"] + ms["decoder"], 2), "backend": backend,
                            "tokens": len(tokens), "artifact": self.info["decoder"]["artifact"],
                            "cross_kv_ms": round(ms["cross_kv"], 2), "positions": pad_to or enc_len},
            },
            "total_ms": round(total_ms, 2),
            "rtf": round(total_ms / 1e3 / audio_s, 4) if audio_s else None,
            "emulated": enc_info["emulated"],
            "models": dict(self.info["models"]),
        }
