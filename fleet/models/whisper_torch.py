"""Explicit-tensor wrappers around HF Whisper submodules, for ONNX export.

No SDPA, no HF Cache objects, no attention-mask helpers: attention is matmul + softmax written
out, and the decoder's key/value cache is plain tensors in and out (docs/reference/models.md §5). Imports torch
at module level: import this module only inside build functions.

Shapes (batch 1, d_model 384, 4 layers, 6 heads of 64):
- Encoder10s:  mel f32 [1, 80, 1000] -> encoder_out f32 [1, 500, 384]
- CrossKV:     encoder_out f32 [1, S, 384] -> cross_k, cross_v f32 [4, 1, S, 384]
- DecoderStep: tokens i64 [1, T], self_k/self_v f32 [4, 1, P, 384] (P >= 0),
               cross_k/cross_v f32 [4, 1, S, 384]
               -> logits f32 [1, 51864] (last position), new_self_k/new_self_v [4, 1, P+T, 384]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fleet.models.whisper import D_MODEL, N_HEADS

HEAD_DIM = D_MODEL // N_HEADS  # 64
SCALE = HEAD_DIM ** -0.5  # 1/8, applied to q at run time (HF and CT2 both do; docs/reference/models.md §4)


def _split(x: torch.Tensor) -> torch.Tensor:
    """[1, L, 384] -> [1, 6, L, 64]."""
    return x.reshape(1, -1, N_HEADS, HEAD_DIM).transpose(1, 2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention on merged heads.

    Args:
        q: [1, Lq, 384], already multiplied by SCALE.
        k, v: [1, Lk, 384].
        mask: additive [Lq, Lk] (0 or a large negative), or None.

    Returns:
        [1, Lq, 384] (before out_proj).
    """
    scores = _split(q) @ _split(k).transpose(-1, -2)  # [1, 6, Lq, Lk]
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    return (probs @ _split(v)).transpose(1, 2).reshape(1, -1, D_MODEL)


def _self_attention(layer, h: torch.Tensor) -> torch.Tensor:
    a = layer.self_attn
    return a.out_proj(attend(a.q_proj(h) * SCALE, a.k_proj(h), a.v_proj(h)))


def _ffn(layer, x: torch.Tensor) -> torch.Tensor:
    return layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))


class Encoder10s(nn.Module):
    """Whisper encoder on a 10 s window: mel f32 [1, 80, 1000] -> encoder_out f32 [1, 500, 384].

    Uses the first 500 of the 1500 learned positions (HF's own encoder insists on 3000 frames).
    """

    def __init__(self, hf_model, frames: int = 1000):
        super().__init__()
        self.enc = hf_model.model.encoder
        self.n_pos = frames // 2

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        e = self.enc
        x = F.gelu(e.conv1(mel))
        x = F.gelu(e.conv2(x))  # [1, 384, 500]
        x = x.transpose(1, 2) + e.embed_positions.weight[: self.n_pos]
        for layer in e.layers:
            x = x + _self_attention(layer, layer.self_attn_layer_norm(x))
            x = x + _ffn(layer, x)
        return e.layer_norm(x)


class CrossKV(nn.Module):
    """Cross-attention keys/values of all decoder layers, computed once per window.

    encoder_out f32 [1, S, 384] -> cross_k, cross_v f32 [4, 1, S, 384] (heads merged).
    """

    def __init__(self, hf_model):
        super().__init__()
        self.layers = hf_model.model.decoder.layers

    def forward(self, encoder_out: torch.Tensor):
        ks = [layer.encoder_attn.k_proj(encoder_out) for layer in self.layers]
        vs = [layer.encoder_attn.v_proj(encoder_out) for layer in self.layers]
        return torch.stack(ks), torch.stack(vs)


class DecoderStep(nn.Module):
    """One decoder call over T new tokens with a P-long self-attention cache.

    Inputs: tokens i64 [1, T]; self_k, self_v f32 [4, 1, P, 384] (P may be 0); cross_k,
    cross_v f32 [4, 1, S, 384]. Outputs: logits f32 [1, 51864] of the last new position (raw,
    nothing suppressed); new_self_k, new_self_v f32 [4, 1, P+T, 384]. Token j sits at position
    P + j and attends to cache positions 0..P+j (causal).

    Args:
        hf_model: the loaded WhisperForConditionalGeneration.
        untied: give the output projection its own copy of the embedding matrix. Needed before
            INT8 quantization of the dynamo export (docs/reference/models.md §5); the fp32 export keeps it tied
            so Gather and MatMul share one initializer (114 MB instead of 193 MB).
    """

    def __init__(self, hf_model, untied: bool = False):
        super().__init__()
        self.dec = hf_model.model.decoder
        w = self.dec.embed_tokens.weight
        self.proj = nn.Parameter(w.detach().clone()) if untied else w

    def forward(self, tokens, self_k, self_v, cross_k, cross_v):
        d = self.dec
        t = tokens.shape[1]
        p = self_k.shape[2]
        q_pos = torch.arange(t, device=tokens.device) + p  # [T]
        k_pos = torch.arange(p + t, device=tokens.device)  # [P+T]
        mask = torch.where(k_pos[None, :] <= q_pos[:, None], 0.0,
                           torch.finfo(torch.float32).min)  # [T, P+T]
        x = d.embed_tokens(tokens) + d.embed_positions.weight[q_pos]  # [1, T, 384]
        new_k, new_v = [], []
        for i, layer in enumerate(d.layers):
            a = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k = torch.cat([self_k[i], a.k_proj(h)], dim=1)  # [1, P+T, 384]
            v = torch.cat([self_v[i], a.v_proj(h)], dim=1)
            new_k.append(k)
            new_v.append(v)
            x = x + a.out_proj(attend(a.q_proj(h) * SCALE, k, v, mask))
            c = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            x = x + c.out_proj(attend(c.q_proj(h) * SCALE, cross_k[i], cross_v[i]))
            x = x + _ffn(layer, x)
        last = d.layer_norm(x[:, -1, :])  # [1, 384]
        logits = last @ self.proj.t()  # [1, 51864]
        return logits, torch.stack(new_k), torch.stack(new_v)
