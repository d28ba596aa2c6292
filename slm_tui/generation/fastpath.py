"""A one-token decode step with fewer, fused ops, for the default llama-style model on CPU.

Why: at batch 1 a tiny model's decode step is bound by per-op overhead, not arithmetic:
`GPT.forward` runs ~35 small ops and ~12 module calls per layer for one token (4 layers:
~1 ms on one CPU core, where the matmuls need a tenth of that). This step computes the same
function with about half the ops and no module calls:
- rotary positions as one (hd x hd) rotation matmul on q and k together (precomputed per
  position), instead of chunk / 4 multiplies / 2 adds / cat for each of q and k;
- residual adds fused into the output projections (`addmm`);
- weights read once into a flat list, no `nn.Module.__call__` per layer.
Measured for the `tiny` shape on one core: the forward step ~1.8x faster (0.9 vs 1.7 ms
under load), ~1.4x more tokens/s end to end (bench/generate.py, row "fused step").

Scope: only configurations it knows exactly (rotary positions, RMSNorm, SwiGLU, no biases,
any tie, grouped-query attention allowed) and only on CPU; for anything else `build()`
returns None and the engine calls `GPT.forward`. It writes the model's own `KVCache`, so
prefill (always `GPT.forward`) and decode steps mix freely. tests/test_generation.py checks
its logits and cache entries against `GPT.forward`, for one row and for left-padded rows.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from slm_tui.model import _SDPA_GQA

# ModelConfig fields this step understands, with the values it supports (None: any value).
_SUPPORTED = {
    "vocab_size": None,
    "context_length": None,
    "n_layer": None,
    "n_head": None,
    "n_kv_head": None,
    "d_model": None,
    "mlp": ("swiglu",),
    "mlp_hidden": None,
    "norm": ("rmsnorm",),
    "positions": ("rope",),
    "rope_theta": None,
    "bias": (False,),
    "tie_embeddings": None,
    "dropout": None,  # eval only: the engine never decodes in training mode
}


class FastDecode:
    """`step(ids, cache, positions=None, key_mask=None)` -> logits (B, V), like
    `model(ids, cache=cache, positions=..., key_mask=..., last_only=True)[0][:, -1]`."""

    def __init__(self, model) -> None:
        cfg = model.cfg
        self.model = model
        self.n_head, self.n_kv = cfg.n_head, model.n_kv_head
        self.hd, self.d = model.head_dim, cfg.d_model
        half = self.hd // 2
        cos, sin = model.rope_cos, model.rope_sin  # (C, hd/2)
        # x @ R[pos] == apply_rotary(x, cos[pos], sin[pos]) for the rotate-half layout.
        rot = torch.zeros(cos.size(0), self.hd, self.hd, dtype=cos.dtype, device=cos.device)
        i = torch.arange(half, device=cos.device)
        rot[:, i, i] = cos
        rot[:, i + half, i] = -sin
        rot[:, i + half, i + half] = cos
        rot[:, i, i + half] = sin
        self.rot = rot  # (C, hd, hd)
        self.layers = [
            (
                b.norm1.weight,
                b.norm1.eps,
                b.attn.qkv.weight,
                b.attn.proj.weight.t(),
                b.norm2.weight,
                b.norm2.eps,
                b.mlp.fc.weight,
                b.mlp.proj.weight.t(),
            )
            for b in model.blocks
        ]

    def step(
        self,
        ids: Tensor,
        cache,
        positions: Tensor | None = None,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        """ids (B, 1); positions (B, 1) (default: the cache length); key_mask (B, S)."""
        m, B = self.model, ids.size(0)
        H, Hkv, hd, D = self.n_head, self.n_kv, self.hd, self.d
        slot = cache.length
        S = slot + 1
        if cache.length >= cache.max_len:
            raise ValueError(f"{S} positions do not fit the KV cache of {cache.max_len}")
        x = F.embedding(ids.view(B), m.tok_emb.weight)  # (B, D)
        if positions is None:
            rot = self.rot[slot]  # (hd, hd), shared by every row
        else:
            rot = self.rot[positions.view(B)].unsqueeze(1)  # (B, 1, hd, hd)
        mask = None
        if key_mask is not None:
            mask = key_mask.clone()
            mask[:, -1] = True  # a row always sees its own slot (as GPT.forward does)
            mask = mask.view(B, 1, 1, S)
        gqa = {"enable_gqa": True} if Hkv != H else {}
        for i, (n1, e1, wqkv, wo_t, n2, e2, wfc, wp_t) in enumerate(self.layers):
            h = F.rms_norm(x, (D,), n1, e1)
            qkv = F.linear(h, wqkv).view(B, H + 2 * Hkv, 1, hd)
            qk = torch.matmul(qkv[:, : H + Hkv], rot)  # (B, H+Hkv, 1, hd) rotated
            ck, cv = cache.k[i], cache.v[i]  # (B, Hkv, max_len, hd)
            ck[:, :, slot : slot + 1] = qk[:, H:]
            cv[:, :, slot : slot + 1] = qkv[:, H + Hkv :]
            y = F.scaled_dot_product_attention(
                qk[:, :H], ck[:, :, :S], cv[:, :, :S], attn_mask=mask, **gqa
            )  # (B, H, 1, hd)
            x = torch.addmm(x, y.view(B, D), wo_t)
            gate, up = F.linear(F.rms_norm(x, (D,), n2, e2), wfc).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate).mul_(up), wp_t)
        cache.length = S
        x = F.rms_norm(x, (D,), m.norm_f.weight, m.norm_f.eps)
        return F.linear(x, m.lm_head.weight)  # (B, V) float32 (the model is float32 on CPU)


def build(model) -> FastDecode | None:
    """The fast step for `model`, or None when it is not a configuration this step knows."""
    cfg = model.cfg
    if model.training or model.tok_emb.weight.device.type != "cpu":
        return None
    if model.tok_emb.weight.dtype != torch.float32:
        return None
    for f in dataclasses.fields(cfg):
        allowed = _SUPPORTED.get(f.name, ())
        if allowed is not None and getattr(cfg, f.name) not in allowed:
            return None  # an unknown field (allowed == ()) or an unsupported value
    if getattr(model, "rope_cos", None) is None:
        return None
    if model.n_kv_head != cfg.n_head and not _SDPA_GQA:
        return None
    return FastDecode(model)
