"""The one-token decode step: `FusedDecoder`, `GPT.forward` for one new token per row with
about half the ops, and for one row the whole step in C where it can run (`slm_tui.native`).

At batch 1 a small model's decode step is bound by per-op overhead, not arithmetic (~35
small ops and ~12 module calls per layer for one token). `FusedDecoder` reads the weights
once, rotates q and k with one small matmul (`rotary_matrices`), fuses residual adds into
the output projections (`addmm`) and shares the mask rule and `attend` with `GPT.forward`;
a one-row step goes to the C step (one call, no per-op dispatch) where a compiler built it.
tests/test_model.py checks the torch path and tests/test_native.py the C path against
`forward` for every `ModelConfig` switch. A `torch.compile`d static-shape step was measured
instead and is slower at batch 1 and 16 (bench/decode_step.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slm_tui.model import GPT, KVCache, RMSNorm, attend


def rotary_matrices(cos: Tensor, sin: Tensor) -> Tensor:
    """`apply_rotary` as matrices: (P, hd, hd) with x @ R[p] == apply_rotary(x, cos[p], sin[p])
    for x (..., hd). One small matmul rotates q and k together in `FusedDecoder`."""
    half = cos.size(-1)
    rot = torch.zeros(cos.size(0), 2 * half, 2 * half, dtype=cos.dtype, device=cos.device)
    i = torch.arange(half, device=cos.device)
    rot[:, i, i] = cos
    rot[:, i + half, i] = -sin
    rot[:, i + half, i + half] = cos
    rot[:, i, i + half] = sin
    return rot


def _norm_fn(norm: nn.Module, dim: int) -> Callable[[Tensor], Tensor]:
    """A norm module as a plain function over the same parameters (no module call)."""
    if isinstance(norm, RMSNorm):
        return partial(F.rms_norm, normalized_shape=(dim,), weight=norm.weight, eps=norm.eps)
    return partial(F.layer_norm, normalized_shape=(dim,), weight=norm.weight, bias=norm.bias,
                   eps=norm.eps)  # fmt: skip


class FusedDecoder:
    """`GPT.forward` for one new token per row, with about half the ops: the blocks above,
    step for step, on (B, C) rows. Rotary is one rotation matmul on q and k together (the
    model's own tables as `rotary_matrices`), residual adds are fused into the output
    projections (`addmm`), and the weights are read once, here, instead of through ~20
    module attribute lookups and calls per layer and token. Same mask rule (`GPT._attn_mask`)
    and attention (`attend`) as `forward`; every `ModelConfig` switch is handled, and
    tests/test_model.py checks the logits and cache entries against `forward` for each.

    Built by `GPT.fused_decoder()` for one generation, in eval mode (no dropout). It holds the
    model's parameters (and views of them): values copied into them later are seen, but
    build a new one after moving the model to another device or dtype."""

    def __init__(self, model: GPT, *, native: bool = True) -> None:
        if model.training and model.cfg.dropout > 0:
            raise ValueError("a fused decoder is for inference; call model.eval() first")
        cfg = model.cfg
        self.model = model
        # One row: the whole step in C where it can run (slm_tui/native), built on first use.
        self._native: Callable | bool | None = native  # True: not looked up yet
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, model.n_kv_head, model.head_dim
        self.swiglu = cfg.mlp == "swiglu"
        self.approximate = "tanh" if cfg.mlp == "gelu_tanh" else "none"
        self.scale = None if cfg.scale_attention else 1.0
        self.windows = list(cfg.attention_windows) or [0] * cfg.n_layer
        weight = model.tok_emb.weight
        self.rot = None if model.rope_cos is None else rotary_matrices(
            model.rope_cos, model.rope_sin).to(weight.dtype)  # fmt: skip  # (context, hd, hd)
        d = cfg.d_model
        self.layers = [
            (
                _norm_fn(b.norm1, d),
                b.attn.qkv.weight,
                b.attn.qkv.bias,
                b.attn.proj.weight.t(),
                b.attn.proj.bias,
                _norm_fn(b.norm2, d),
                b.mlp.fc.weight,
                b.mlp.fc.bias,
                b.mlp.proj.weight.t(),
                b.mlp.proj.bias,
            )
            for b in model.blocks
        ]
        self.norm_f = _norm_fn(model.norm_f, d)
        self.tok_emb, self.head = weight, model.lm_head.weight
        self.pos_emb = None if model.pos_emb is None else model.pos_emb.weight

    def __call__(
        self,
        idx: Tensor,
        cache: KVCache,
        positions: Tensor | None = None,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        """Next-token logits (B, V) after `idx` (B, 1), as
        `model(idx, cache=cache, positions=..., key_mask=..., last_only=True)[0][:, -1]`.
        positions (B, 1), default: the cache length for every row; key_mask
        (B, cache.length + 1), True = a real token, as `forward` takes it."""
        B, slot = idx.size(0), cache.length
        if B == 1 and self._native is not False:
            if self._native is True:
                from slm_tui.native import native_step

                self._native = native_step(self.model) or False
            if self._native:
                return self._native(idx, cache, positions, key_mask)
        if slot >= cache.max_len:
            raise ValueError(f"{slot + 1} positions do not fit the KV cache of {cache.max_len}")
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        x = F.embedding(idx.view(B), self.tok_emb)  # (B, C)
        pos = None if positions is None else positions.view(B)
        rot = None
        if self.pos_emb is not None:
            x = x + (self.pos_emb[slot] if pos is None else self.pos_emb[pos])
        elif pos is None:
            rot = self.rot[slot]  # (hd, hd), shared by every row
        else:
            rot = self.rot[pos].unsqueeze(1)  # (B, 1, hd, hd)
        mask, _ = GPT._attn_mask(B, 1, slot, key_mask, idx.device)
        masks = {w: GPT._window_mask(mask, False, 1, slot, w, idx.device)[0]
                 for w in set(self.windows)}  # fmt: skip
        for i, (norm1, wqkv, bqkv, wo_t, bo, norm2, wfc, bfc, wp_t, bp) in enumerate(self.layers):
            qkv = F.linear(norm1(x), wqkv, bqkv).view(B, H + 2 * Hkv, 1, hd)
            qk = qkv[:, : H + Hkv] if rot is None else torch.matmul(qkv[:, : H + Hkv], rot)
            ck, cv = cache.k[i], cache.v[i]  # (B, Hkv, max_len, hd)
            ck[:, :, slot : slot + 1] = qk[:, H:]
            cv[:, :, slot : slot + 1] = qkv[:, H + Hkv :]
            y = attend(qk[:, :H], ck[:, :, : slot + 1], cv[:, :, : slot + 1],
                       masks[self.windows[i]], scale=self.scale)  # fmt: skip  # (B, H, 1, hd)
            x = torch.addmm(x, y.view(B, -1), wo_t)  # x + proj(y)
            if bo is not None:
                x = x + bo
            h = F.linear(norm2(x), wfc, bfc)
            if self.swiglu:
                gate, up = h.chunk(2, dim=-1)
                h = F.silu(gate).mul_(up)
            else:
                h = F.gelu(h, approximate=self.approximate)
            x = torch.addmm(x, h, wp_t)  # x + mlp(...)
            if bp is not None:
                x = x + bp
        cache.length = slot + 1
        return F.linear(self.norm_f(x), self.head).float()  # (B, V)
