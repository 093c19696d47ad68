"""``vc.pitch_shift``: pitch shift / voice conversion with CREPE on the NPU and WORLD on the CPU.

An AutoVoice-like chain, per clip:
  1. load: any audio file -> mono f32 16 kHz (soundfile + soxr);
  2. pitch: CREPE tiny (``crepe_tiny.onnx``, static batch of N frames of 1024 samples) on the
     board's NPU backend when a .hef/.rknn ``pitch_npu`` (or ``pitch``) artifact is deployed, else
     onnxruntime (emulated NPU boards run their target's static QDQ INT8 ``pitch_npu`` when deployed,
     else the cpu model, and say which in ``emulation``). Frames quieter than ``silence_db``
     are not sent to the network (they are unvoiced anyway);
  3. pitch_decode: CREPE local weighted average (default) or Viterbi over the 360 bins, voicing
     from periodicity (the salience at the decoded bin) >= ``voicing_threshold``;
  4. analysis: WORLD CheapTrick envelope + D4C aperiodicity on the CREPE F0 (pyworld, CPU);
  5. conversion: F0 x 2^(semitones/12) and the envelope warped by ``formant_factor``; with
     ``target_ref`` (a reference clip of the target voice) the F0 ratio and warp factor that move
     the source's mean log-F0 and mean envelope onto the target's come first
     (``device_agent.vc.profile``);
  6. synthesis: WORLD. The neural ``vocoder`` slot (a HiFi-GAN ONNX, manifest role ``vocoder``)
     and the ``separation`` slot (role ``separation``) are reported absent when no artifact is
     deployed; an artifact there is reported present but unused (no such model has been built
     and verified yet, so none is run);
  7. write: the converted audio as 16-bit WAV under ``fleet_root/outputs/vc/`` (option
     ``output``), written to a temp file and renamed (never half-written).
Then, outside the timed chain (``metrics`` ms, not in ``total_ms``/``rtf``): WORLD Harvest F0 of
the input (reference for CREPE's raw pitch accuracy and voicing) and of the output (achieved vs
requested F0: RMSE in cents over voiced frames, voicing decision error), and for an identity
conversion (0 semitones, factor 1.0, no target) the mel-cepstral distortion input vs output.

Bad input: unreadable/NaN audio (``load_audio``), shorter than one CREPE frame (1024 samples,
64 ms), or silent (peak below ``silence_db``) -> BadInput. Clipped input (>= 0.1 % of samples at
full scale) is converted and carries a warning and ``input.clipped_ratio``; input with no voiced
frame (noise, whisper) is resynthesised aperiodic-only with ``voiced_frames: 0`` and null F0
metrics, and a warning.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import manifest as mf
from ..audio import load_audio
from ..backends.base import Backend, LoadedModel
from ..protocol import BadInput, ModelError
from ..vc import crepe, metrics, profile, world
from . import npu_stage
from .base import Option, Pipeline

# Roles of the pitch network on an NPU, in order of preference: the NPU build's graph
# (``fleet models build crepe-tiny --target T``: role ``pitch_npu``) or the plain ``pitch``.
PITCH_NPU_ROLES = ("pitch_npu", "pitch")
SR = crepe.SAMPLE_RATE
CLIP_LEVEL = 0.999          # |x| at or above this is full scale
CLIP_WARN_RATIO = 0.001     # warn when >= 0.1 % of samples sit at full scale
OUTPUT_DIR = "outputs/vc"


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def to_grid(f0: np.ndarray, voiced: np.ndarray, hop_ms: float, n_out: int,
            frame_period_ms: float = world.FRAME_PERIOD_MS) -> np.ndarray:
    """Move a CREPE track (hop ``hop_ms``) onto WORLD's grid (``frame_period_ms``): ln F0
    interpolated linearly between voiced frames, voicing from the nearest CREPE frame.

    Returns:
        f64 [n_out] Hz, 0 = unvoiced.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    v = np.asarray(voiced, dtype=bool)
    if hop_ms == frame_period_ms and len(f0) >= n_out:
        return np.where(v[:n_out], f0[:n_out], 0.0)
    t_out = np.arange(n_out) * frame_period_ms
    t_in = np.arange(len(f0)) * hop_ms
    near = np.clip(np.rint(t_out / hop_ms).astype(np.int64), 0, len(f0) - 1)
    out = np.zeros(n_out)
    if v.any():
        lf = np.interp(t_out, t_in[v], np.log(f0[v]))
        out = np.where(v[near], np.exp(lf), 0.0)
    return out


def _mean_f0(f0: np.ndarray, other: np.ndarray) -> float | None:
    """exp(mean ln F0) (Hz) over frames voiced in both ``f0`` and ``other``; None when none is."""
    k = min(len(f0), len(other))
    f, o = np.asarray(f0[:k]), np.asarray(other[:k])
    v = f[(f > 0) & (o > 0)]
    return round(float(np.exp(np.mean(np.log(v)))), 2) if len(v) else None


class VcPitchShift(Pipeline):
    """Pitch shift / voice conversion (see module docstring). Result keys: docs in the README of
    suites/voice_conversion and ``run``."""

    name = "vc.pitch_shift"
    default_model = "crepe-tiny"
    NPU_ROLES = PITCH_NPU_ROLES
    NPU_STAGE = "pitch"  # the info key of the NPU stage parity compares
    PARITY_REFERENCE_ROLE = "pitch"  # its cpu fp32 reference in the manifest
    OPTIONS = (
        Option("precision", str, None, "CREPE ONNX variant: fp32 or int8 (static QDQ); default int8 on NPU "
               "boards (what the NPU runs), fp32 on cpu boards", choices=("fp32", "int8"), load=True),
        Option("pitch_backend", str, "auto", "CREPE backend: auto (NPU if a .hef/.rknn pitch artifact "
               "is deployed, else onnx), onnx, hailo or rknn", choices=("auto", "onnx", "hailo", "rknn"),
               load=True),
        Option("threads", int, 0, "onnxruntime intra-op threads (0 = one per physical core)", load=True),
        Option("semitones", float, 0.0, "F0 transposition in semitones (added on top of a target's shift)"),
        Option("formant_factor", float, 1.0, "spectral envelope warp factor (>1 raises formants; "
               "multiplied with a target's factor)"),
        Option("target_ref", str, "", "reference clip of the target voice (path relative to fleet_root): "
               "F0 and formants move toward its mean log-F0 and mean envelope"),
        Option("decoder", str, "weighted", "CREPE decoding: weighted (local average around the argmax) "
               "or viterbi", choices=("weighted", "viterbi")),
        Option("voicing_threshold", float, crepe.DEFAULT_VOICING_THRESHOLD,
               "periodicity at or above this is voiced (0.21: torchcrepe README)"),
        Option("silence_db", float, crepe.DEFAULT_SILENCE_DB, "frames below this RMS (dBFS) are silence"),
        Option("fmin", float, 50.0, "lowest F0 CREPE may decode (Hz)"),
        Option("fmax", float, 1000.0, "highest F0 CREPE may decode (Hz)"),
        Option("median_frames", int, 3, "median filter width (frames) over periodicity and, within voiced "
               "runs, ln F0 (3: torchcrepe README's win_length; 1 = off)"),
        Option("crepe_hop_ms", int, 10, "CREPE hop (ms): 10 (CREPE's own) or 20 (half the network "
               "work; F0 interpolated onto WORLD's 10 ms grid)", choices=(10, 20)),
        Option("metrics", bool, True, "re-analyse with WORLD Harvest: CREPE RPA/voicing on the input, "
               "achieved vs requested F0 on the output, MCD for identity conversions (not in total_ms)"),
        Option("f0_reference", str, "harvest", "reference F0 estimator for the metrics: harvest or dio",
               choices=("harvest", "dio")),
        Option("write_output", bool, True, "write the converted audio under fleet_root"),
        Option("output", str, "", "output WAV path relative to fleet_root (default "
               "outputs/vc/<input>.<conversion>.wav)"),
        Option("return_f0", bool, False, "include the input's CREPE F0, periodicity and voicing per frame"),
        Option("max_audio_s", float, 600.0, "refuse longer inputs (s)"),
    )

    def default_options(self) -> dict:
        opts = super().default_options()
        opts["precision"] = "fp32" if self.config.npu is None else "int8"
        return opts

    def __init__(self, config):
        super().__init__(config)
        self.model: LoadedModel | None = None
        self.batch = 0
        self.emulation: str | None = None  # what stands in for the NPU (device_agent.emulation)
        self._ref_cache: dict = {}
        self._profiles: dict = {}

    # -- load --------------------------------------------------------------------------------
    def _choose(self, arts: list[mf.Artifact], want: str, precision: str,
                backends: dict[str, Backend]) -> tuple[str, mf.Artifact, str]:
        cfg = self.config
        self.emulation = None

        choice = npu_stage.choose_npu_stage(arts, cfg, backends, want=want, precision=precision,
                                            roles=PITCH_NPU_ROLES, stage="CREPE", option="pitch_backend")
        if choice is not None:
            self.emulation = choice.emulation
            return choice.backend, choice.artifact, choice.reason
        a = mf.find(arts, role="pitch", format="onnx", variant=precision)
        if a is None:
            raise ModelError(f"no {precision} ONNX pitch artifact in the model folder (have: "
                             f"{sorted(str(x.get('role')) + '/' + str(x.get('variant')) for x in arts)})",
                             "build and deploy it: fleet models build crepe-tiny; fleet deploy")
        # the cpu INT8 CREPE is static QDQ too (calibrated on speech), but not this target's build
        fb = npu_stage.cpu_fallback(a, cfg, want=want, precision=precision, stage="CREPE", option="pitch_backend",
                                    model=self.default_model,
                                    fallback_quantization=a.get("quantization") if precision == "int8" else None)
        self.emulation = fb.emulation
        return "onnx", a, fb.reason

    def load(self, model_dir: Path, backends: dict[str, Backend], options: dict) -> dict:
        self.unload()
        world.import_pyworld()  # fail at load, with the fix, when WORLD is missing
        arts = mf.read_manifest(model_dir)
        backend, art, reason = self._choose(arts, options["pitch_backend"], options["precision"], backends)
        sha = mf.verify(art)
        ins = art.get("inputs") or []
        shape = ins[0].get("shape") if ins else None
        if not (isinstance(shape, list) and len(shape) == 2 and isinstance(shape[0], int)
                and shape[1] == crepe.WINDOW):
            raise ModelError(f"{art.file}: manifest input shape {shape}, expected a static [N, {crepe.WINDOW}]",
                             "rebuild the artifact (fleet models build crepe-tiny)")
        load_opts = ({"intra_op_threads": options["threads"]} if backend == "onnx"
                     else {"inputs": art.get("inputs"), "outputs": art.get("outputs")})
        self.model = backends[backend].load(art.path, **load_opts)
        self.batch = int(shape[0])
        slots = {}
        for role in ("vocoder", "separation"):
            a = mf.find(arts, role=role)
            slots[role] = ({"present": False, "absent": True,
                            "reason": f"no {role} artifact (manifest role {role}) in {model_dir}"}
                           if a is None else
                           {"present": True, "absent": False, "artifact": a.file, "used": False,
                            "reason": f"{a.file} is deployed but this agent has no verified {role} "
                                      "recipe for it yet: not run"})
        self.info = {
            "pipeline": self.name, "model_dir": str(model_dir),
            "precision": options["precision"],
            "pitch": {"backend": backend, "artifact": art.file, "reason": reason, "batch": self.batch,
                      "emulated": bool(self.config.emulated and self.config.npu and backend == "onnx"),
                      "emulation": self.emulation, "quantization": art.get("quantization"),
                      "sha256": sha},
            "slots": slots, "models": {art.file: sha},
        }
        return self.info

    def parity(self, config, backends: dict, inputs: list, options: dict) -> dict:
        """CREPE salience parity + pitch difference (cents) per clip, on the loud frames the
        pipeline would infer (same framing, hop, silence gate and decoder as ``run``).

        Returns the parity op's stage part (device_agent.parity): output, reference, per_input,
        summary. Raises BadInput (a bad input), ModelError (the fp32 reference is missing)."""
        from .. import parity as par

        ref_model, ref_art, ref_sha = par.reference_model(self, self.PARITY_REFERENCE_ROLE, backends)

        def ref_infer(frames):
            t = ref_model.inputs[0]
            x = np.ascontiguousarray(frames, np.float32).reshape([d if isinstance(d, int) else -1 for d in t.shape])
            y = ref_model.run({t.name: x})[ref_model.outputs[0].name]
            return np.asarray(y, np.float32).reshape(len(frames), crepe.PITCH_BINS)

        hop = 16000 * options["crepe_hop_ms"] // 1000
        dec = crepe.decode_viterbi if options["decoder"] == "viterbi" else crepe.decode_weighted
        rows, all_cents = [], []
        for inp in inputs:
            if not isinstance(inp, str) or not inp:
                raise BadInput(f"parity input {inp!r} is not an audio path", "pass paths like data/speech/jfk.flac")
            audio = load_audio(config.resolve(inp, "input"), max_seconds=options["max_audio_s"])
            frames, rms_db = crepe.frame_audio(audio, hop)
            loud = rms_db >= options["silence_db"]
            if not loud.any():
                raise BadInput(f"{inp}: every frame is below silence_db={options['silence_db']} dBFS",
                               "pass speech or music, or lower silence_db")
            ref = crepe.run_batched(frames[loud], self.batch, ref_infer)
            cand = crepe.run_batched(frames[loud], self.batch, self._infer)
            f_ref, b_ref = dec(ref, options["fmin"], options["fmax"])
            f_cand, _ = dec(cand, options["fmin"], options["fmax"])
            voiced = crepe.periodicity(ref, b_ref) >= options["voicing_threshold"]
            cents = np.abs(crepe.hz_to_cents(f_cand[voiced]) - crepe.hz_to_cents(f_ref[voiced]))
            all_cents.append(cents)
            rows.append({"input": inp, "frames": int(loud.sum()), "voiced_frames": int(voiced.sum()),
                         "median_abs_cents": round(float(np.median(cents)), 3) if cents.size else None,
                         "mean_abs_cents": round(float(cents.mean()), 3) if cents.size else None,
                         **par.compare(ref, cand)})
        c = np.concatenate(all_cents) if all_cents else np.zeros(0)
        pitch = {"voiced_frames": int(c.size),
                 "median_abs_cents": round(float(np.median(c)), 3) if c.size else None,
                 "mean_abs_cents": round(float(c.mean()), 3) if c.size else None,
                 "p95_abs_cents": round(float(np.percentile(c, 95)), 3) if c.size else None,
                 "over_50_cents": round(float((c > 50).mean()), 5) if c.size else None}
        return {"output": "salience", "stage": "pitch",
                "reference": {"backend": "onnx", "artifact": ref_art.file, "precision": "fp32", "sha256": ref_sha},
                "per_input": rows, "summary": par.summarize(rows), "pitch": pitch}

    def unload(self) -> None:
        if self.model is not None:
            self.model.close()
        self.model = None
        self._ref_cache = {}
        self._profiles = {}

    # -- pieces ------------------------------------------------------------------------------
    def _infer(self, frames: np.ndarray) -> np.ndarray:
        t = self.model.inputs[0]
        x = frames
        shp = list(t.shape)
        if all(isinstance(d, int) and d > 0 for d in shp) and int(np.prod(shp)) == x.size:
            x = x.reshape(shp)
        out = self.model.run({t.name: np.ascontiguousarray(x, dtype=np.float32)})
        y = np.asarray(out[self.model.outputs[0].name], dtype=np.float32)
        return y.reshape(len(frames), crepe.PITCH_BINS)

    def pitch(self, audio: np.ndarray, options: dict) -> dict:
        """CREPE on 16 kHz audio: {f0 (Hz, CREPE hop), voiced, periodicity, rms_db, ms_infer,
        ms_decode, frames, inferred}."""
        hop = SR * options["crepe_hop_ms"] // 1000
        t0 = time.perf_counter()
        frames, rms_db = crepe.frame_audio(audio, hop)
        loud = rms_db >= options["silence_db"]
        sal = np.zeros((len(frames), crepe.PITCH_BINS), dtype=np.float32)
        if loud.any():
            sal[loud] = crepe.run_batched(frames[loud], self.batch, self._infer)
        ms_infer = _ms(t0)
        t0 = time.perf_counter()
        dec = crepe.decode_viterbi if options["decoder"] == "viterbi" else crepe.decode_weighted
        f0, bins = dec(sal, options["fmin"], options["fmax"])
        per = np.where(loud, crepe.periodicity(sal, bins), 0.0)
        w = options["median_frames"]
        voiced = crepe.voicing(crepe.median_filter(per, w), rms_db, options["voicing_threshold"], options["silence_db"])
        f0 = crepe.smooth_f0(f0, voiced, w)
        return {"f0": f0, "voiced": voiced, "periodicity": per, "rms_db": rms_db, "ms_infer": ms_infer,
                "ms_decode": _ms(t0), "frames": len(frames), "inferred": int(loud.sum()),
                "batches": -(-int(loud.sum()) // self.batch)}

    def _reference_f0(self, key: tuple, x: np.ndarray, method: str) -> np.ndarray:
        if key not in self._ref_cache:
            if len(self._ref_cache) >= 64:
                self._ref_cache.pop(next(iter(self._ref_cache)))
            self._ref_cache[key] = world.reference_f0(x, SR, method)
        return self._ref_cache[key]

    def _target_profile(self, options: dict) -> tuple[profile.Profile, float, bool]:
        path = self.config.resolve(options["target_ref"], "target_ref")
        st = path.stat() if path.is_file() else None
        key = (str(path), st.st_mtime_ns if st else 0, st.st_size if st else 0, options["decoder"],
               options["voicing_threshold"], options["silence_db"], options["crepe_hop_ms"])
        if key in self._profiles:
            return self._profiles[key], 0.0, True
        t0 = time.perf_counter()
        ref = load_audio(path, max_seconds=options["max_audio_s"])
        if len(ref) < crepe.WINDOW:
            raise BadInput(f"target_ref {path} is {len(ref)} samples, shorter than one CREPE frame "
                           f"({crepe.WINDOW} samples at 16 kHz)", "give a reference clip of a few seconds of speech")
        p = self.pitch(ref, options)
        n_w = 1 + int(len(ref) / SR * 1000.0 / world.FRAME_PERIOD_MS)
        f0 = to_grid(p["f0"], p["voiced"], options["crepe_hop_ms"], n_w)
        sp, _ = world.analyse(ref.astype(np.float64), f0, SR)
        prof = profile.make_profile(f0, sp, source=options["target_ref"])
        if prof is None:
            raise BadInput(f"target_ref {path} has no voiced frame", "give a reference clip of voiced speech")
        self._profiles = {key: prof}
        return prof, _ms(t0), False

    def _output_path(self, input_path: Path, options: dict, tag: str) -> Path:
        rel = options["output"] or f"{OUTPUT_DIR}/{input_path.stem}.{tag}.wav"
        out = self.config.resolve(rel, "output")
        if out.suffix.lower() != ".wav":
            raise BadInput(f"output {rel!r} must end in .wav", "e.g. outputs/vc/clip.shifted.wav")
        return out

    @staticmethod
    def _write_wav(path: Path, y: np.ndarray) -> None:
        import soundfile as sf

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".vc-", suffix=".wav", dir=path.parent)
        os.close(fd)
        try:
            sf.write(tmp, y, SR, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _check(self, options: dict) -> None:
        if self.model is None:
            raise ModelError(f"{self.name} is not loaded", "load it first")
        if not -24.0 <= options["semitones"] <= 24.0:
            raise BadInput(f"semitones={options['semitones']} is outside [-24, 24]", "shift by at most two octaves")
        if not 0.5 <= options["formant_factor"] <= 2.0:
            raise BadInput(f"formant_factor={options['formant_factor']} is outside [0.5, 2.0]", "e.g. 1.1 or 0.9")
        if not 0.0 <= options["voicing_threshold"] <= 1.0:
            raise BadInput("voicing_threshold must be in [0, 1]", "0.21 is torchcrepe's example value")
        if options["median_frames"] < 1 or options["median_frames"] % 2 == 0:
            raise BadInput(f"median_frames={options['median_frames']} must be an odd number >= 1", "e.g. 3 (1 = off)")
        if not 0 < options["fmin"] < options["fmax"]:
            raise BadInput(f"fmin={options['fmin']} / fmax={options['fmax']}: need 0 < fmin < fmax",
                           "e.g. fmin=50 fmax=1000")

    # -- run ---------------------------------------------------------------------------------
    def run(self, input_path: Path, options: dict) -> dict:
        self._check(options)
        ms: dict[str, float] = {}
        warnings: list[str] = []
        t_all = time.perf_counter()

        t0 = time.perf_counter()
        audio = load_audio(input_path, max_seconds=options["max_audio_s"])
        ms["load"] = _ms(t0)
        n = len(audio)
        if n < crepe.WINDOW:
            raise BadInput(f"{input_path} is {n} samples ({n / SR * 1e3:.0f} ms) at 16 kHz, shorter than one "
                           f"CREPE frame ({crepe.WINDOW} samples, {crepe.WINDOW / SR * 1e3:.0f} ms)",
                           "give at least 64 ms of audio (a clip of speech, typically seconds)")
        peak = float(np.max(np.abs(audio)))
        peak_db = 20.0 * np.log10(peak) if peak > 0 else float("-inf")
        if peak_db < options["silence_db"]:
            raise BadInput(f"{input_path} is silent: peak {peak_db:.1f} dBFS is below silence_db "
                           f"{options['silence_db']:g} dBFS, there is no voice to convert",
                           "give a recording of speech, or lower the option silence_db")
        clipped = float(np.mean(np.abs(audio) >= CLIP_LEVEL))
        if clipped >= CLIP_WARN_RATIO:
            warnings.append(f"input is clipped: {clipped:.2%} of samples at full scale; F0 and envelope "
                            "estimates near those samples are less reliable")

        # pitch (NPU stage) + decode
        p = self.pitch(audio, options)
        ms["pitch"], ms["pitch_decode"] = p["ms_infer"], p["ms_decode"]

        # analysis (WORLD, CPU)
        t0 = time.perf_counter()
        n_w = 1 + int(n / SR * 1000.0 / world.FRAME_PERIOD_MS)
        f0 = to_grid(p["f0"], p["voiced"], options["crepe_hop_ms"], n_w)
        x64 = audio.astype(np.float64)
        sp, ap = world.analyse(x64, f0, SR)
        ms["analysis"] = _ms(t0)
        voiced_frames = int((f0 > 0).sum())
        if voiced_frames == 0:
            warnings.append("no voiced frame in the input (CREPE periodicity below voicing_threshold "
                            "everywhere): resynthesised aperiodic only, F0 metrics are null")

        # target profile (computed once per reference clip, outside the per-clip chain)
        target, prof_ms, prof_cached = None, 0.0, False
        st, alpha = options["semitones"], options["formant_factor"]
        if options["target_ref"]:
            target, prof_ms, prof_cached = self._target_profile(options)

        # conversion
        t0 = time.perf_counter()
        src_prof = None
        if target is not None:
            src_prof = profile.make_profile(f0, sp, source=str(input_path.name))
            if src_prof is not None:
                st = st + profile.semitones_toward(src_prof, target)
                alpha = alpha * profile.alpha_toward(src_prof, target, SR)
        f0_req = world.shift_f0(f0, st)
        sp_conv = world.warp_envelope(sp, alpha)
        ms["conversion"] = _ms(t0)

        # synthesis (WORLD; the neural vocoder slot is reported, never faked)
        t0 = time.perf_counter()
        y = world.synthesize(f0_req, sp_conv, ap, SR)[:n]
        if len(y) < n:
            y = np.pad(y, (0, n - len(y)))
        y_peak = float(np.max(np.abs(y))) if len(y) else 0.0
        limited = y_peak > 1.0
        if limited:  # WORLD can overshoot full scale: scale down rather than wrap in 16-bit
            y = y / y_peak * 0.999
        ms["synthesis"] = _ms(t0)

        out_info = None
        if options["write_output"]:
            t0 = time.perf_counter()
            tag = (f"target-{Path(options['target_ref']).stem}" if target is not None else "shift") + \
                  f".st{st:+.2f}.a{alpha:.2f}"
            out = self._output_path(input_path, options, tag)
            self._write_wav(out, y.astype(np.float32))
            ms["write"] = _ms(t0)
            out_info = {"path": str(out.relative_to(self.config.root)), "samples": len(y),
                        "sample_rate": SR, "format": "WAV/PCM_16", "peak_limited": limited,
                        "sha256": mf.sha256_file(out)}
        total_ms = _ms(t_all)
        audio_s = n / SR

        result_metrics = None
        if options["metrics"]:
            result_metrics = self._metrics(input_path, x64, y, p, f0_req, st, alpha, target, options)

        pi = self.info["pitch"]
        rtf = (lambda v: round(v / 1e3 / audio_s, 5))
        stages = {
            "load": {"ms": round(ms["load"], 2), "rtf": rtf(ms["load"]), "backend": "soundfile+soxr"},
            "pitch": {"ms": round(ms["pitch"], 2), "rtf": rtf(ms["pitch"]), "backend": pi["backend"],
                      "emulated": pi["emulated"], "emulation": pi["emulation"], "artifact": pi["artifact"],
                      "reason": pi["reason"],
                      "frames": p["frames"], "inferred_frames": p["inferred"], "batch": self.batch,
                      "batches": p["batches"], "hop_ms": options["crepe_hop_ms"]},
            "pitch_decode": {"ms": round(ms["pitch_decode"], 2), "rtf": rtf(ms["pitch_decode"]),
                             "backend": "numpy", "decoder": options["decoder"]},
            "analysis": {"ms": round(ms["analysis"], 2), "rtf": rtf(ms["analysis"]), "backend": "pyworld",
                         "method": "cheaptrick+d4c"},
            "conversion": {"ms": round(ms["conversion"], 2), "rtf": rtf(ms["conversion"]), "backend": "numpy"},
            "synthesis": {"ms": round(ms["synthesis"], 2), "rtf": rtf(ms["synthesis"]), "backend": "pyworld"},
            "vocoder": {"ms": None, "rtf": None, "backend": None, **self.info["slots"]["vocoder"]},
            "separation": {"ms": None, "rtf": None, "backend": None, **self.info["slots"]["separation"]},
        }
        if "write" in ms:
            stages["write"] = {"ms": round(ms["write"], 2), "rtf": rtf(ms["write"]), "backend": "soundfile"}
        res = {
            "pipeline": self.name, "input": str(input_path), "audio_s": round(audio_s, 3),
            "conversion": {"semitones_requested": options["semitones"],
                           "formant_factor_requested": options["formant_factor"],
                           "semitones": round(st, 3), "formant_factor": round(alpha, 3),
                           "identity": bool(st == 0.0 and alpha == 1.0 and target is None),
                           "target": None if target is None else {
                               **target.to_dict(), "profile_ms": round(prof_ms, 2), "cached": prof_cached,
                               "source_mean_f0_hz": round(src_prof.mean_f0_hz, 2) if src_prof else None}},
            "input_check": {"peak_dbfs": round(peak_db, 2), "clipped_ratio": round(clipped, 5)},
            "frames": n_w, "voiced_frames": voiced_frames,
            "stages": stages, "total_ms": round(total_ms, 2), "rtf": rtf(total_ms),
            "metrics": result_metrics, "output": out_info, "warnings": warnings,
            "emulated": pi["emulated"], "models": dict(self.info["models"]),
        }
        if options["return_f0"]:
            res["f0"] = {"hop_ms": options["crepe_hop_ms"], "hz": [round(float(v), 3) for v in p["f0"]],
                         "periodicity": [round(float(v), 4) for v in p["periodicity"]],
                         "voiced": [bool(v) for v in p["voiced"]]}
        return res

    def _metrics(self, input_path: Path, x64: np.ndarray, y: np.ndarray, p: dict, f0_req: np.ndarray,
                 st: float, alpha: float, target, options: dict) -> dict:
        t0 = time.perf_counter()
        method = options["f0_reference"]
        s = input_path.stat()
        ref_in = self._reference_f0((str(input_path), s.st_mtime_ns, s.st_size, method), x64, method)
        # CREPE on the input vs the reference, on CREPE's own grid (every 10 or 20 ms)
        step = options["crepe_hop_ms"] // int(world.FRAME_PERIOD_MS)
        ref_c = ref_in[::step]
        crepe_pitch = p["f0"]                       # pitch regardless of voicing (mir_eval RPA)
        crepe_voiced = np.where(p["voiced"], p["f0"], 0.0)
        out_ref = world.reference_f0(np.asarray(y, np.float64), SR, method)
        rmse, n_f0 = metrics.f0_rmse_cents(f0_req, out_ref)
        m = {
            "f0_reference": method,
            "crepe_rpa": metrics.raw_pitch_accuracy(ref_c, crepe_pitch),
            "crepe_voicing_error": metrics.voicing_error(ref_c, crepe_voiced),
            "reference_voiced_frames": int((ref_in > 0).sum()),
            "f0_rmse_cents": None if rmse is None else round(rmse, 2),
            "f0_frames": n_f0,
            "f0_median_abs_cents": metrics.median_abs_cents(f0_req, out_ref),
            "f0_gross_error_ratio": metrics.gross_error_ratio(f0_req, out_ref),
            "voicing_error": metrics.voicing_error(f0_req, out_ref),
            # over frames voiced in both, so voicing disagreements do not move the means
            "requested_mean_f0_hz": _mean_f0(f0_req, out_ref),
            "achieved_mean_f0_hz": _mean_f0(out_ref, f0_req),
            "mcd_db": None,
        }
        if st == 0.0 and alpha == 1.0 and target is None:
            # round trip: mel-cepstra of input and output, each analysed on its own reference F0,
            # over the input's non-silent frames
            sp_in, _ = world.analyse(x64, ref_in, SR)
            sp_out, _ = world.analyse(np.asarray(y, np.float64), out_ref, SR)
            k = min(len(sp_in), len(sp_out))
            near = np.clip(np.rint(np.arange(k) / step).astype(np.int64), 0, len(p["rms_db"]) - 1)
            loud = p["rms_db"][near] >= options["silence_db"]
            mc_in, mc_out = world.mel_cepstrum(sp_in[:k][loud]), world.mel_cepstrum(sp_out[:k][loud])
            m["mcd_db"] = round(world.mcd_db(mc_in, mc_out), 3) if loud.any() else None
            m["mcd_frames"] = int(loud.sum())
        m["ms"] = round(_ms(t0), 2)
        return m
