"""The one-token decode step: `FusedDecoder`, `GPT.forward` for one new token per row with
about half the ops, and for one row the whole step in C where it can run (`slm_tui.native`).

At batch 1 a small model's decode step is bound by per-op overhead, not arithmetic (~35
small ops and ~12 module calls per layer for one token). `FusedDecoder` reads the weights
once, rotates q and k with one small matmul (`rotary_matrices`), fuses residual adds into
the output projections (`addmm`) and shares the mask rule and `attend` with `GPT.forward`;
a one-row step goes to the C step (one call, no per-op dispatch) where a compiler built it.
Several rows on one CPU thread attend in C too (`native.batch_attention`), each over its
own slots: a masked SDPA reads every slot the rows share, and rows that joined at other
steps (a server's continuous batching) share many more slots than each one holds.
tests/test_model.py checks the torch path and tests/test_native.py the C path against
`forward` for every `ModelConfig` switch. A `torch.compile`d static-shape step was measured
instead and is slower at batch 1 and 16 (bench/decode_step.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slm_tui.model import GPT, KVCache, RMSNorm, attend
from slm_tui.native import batch_attention

if TYPE_CHECKING:
    from slm_tui.native import NativeStep


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


def _norm_fn(norm: RMSNorm | nn.LayerNorm, dim: int) -> Callable[[Tensor], Tensor]:
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
        # One row: the whole step in C where it can run (slm_tui/native), looked up on first use.
        self._native: NativeStep | None = None
        self._look_native = native
        # Several rows: attention in C over each row's own slots (`_own_slots`), where the
        # library is here (None: not looked up yet; `native=False` never).
        self._batch_c: bool | None = None if native else False
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, model.n_kv_head, model.head_dim
        self.swiglu = cfg.mlp == "swiglu"
        self.approximate = "tanh" if cfg.mlp == "gelu_tanh" else "none"
        self.scale = None if cfg.scale_attention else 1.0
        self.windows = list(cfg.attention_windows) or [0] * cfg.n_layer
        weight = model.tok_emb.weight
        self.rot: Tensor | None = None  # (context, hd, hd) rotations, for rotary models
        if model.rope_cos is not None and model.rope_sin is not None:
            self.rot = rotary_matrices(model.rope_cos, model.rope_sin).to(weight.dtype)
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
            for b in model.layers
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
        if B == 1 and (self._native is not None or self._look_native):
            if self._look_native:
                from slm_tui.native import native_step

                self._native, self._look_native = native_step(self.model), False
            if self._native is not None:
                return self._native(idx, cache, positions, key_mask)
        if slot >= cache.max_len:
            raise ValueError(f"{slot + 1} positions do not fit the KV cache of {cache.max_len}")
        x = F.embedding(idx.view(B), self.tok_emb)  # (B, C)
        pos = None if positions is None else positions.view(B)
        rot = None
        if self.pos_emb is not None:
            x = x + (self.pos_emb[slot] if pos is None else self.pos_emb[pos])
        elif pos is None:
            assert self.rot is not None
            rot = self.rot[slot]  # (hd, hd), shared by every row
        else:
            assert self.rot is not None
            rot = self.rot[pos].unsqueeze(1)  # (B, 1, hd, hd)
        first = self._own_slots(idx, cache, key_mask, slot)
        if first is None:
            mask, _ = GPT._attn_mask(B, 1, slot, key_mask, idx.device)
            masks = {w: GPT._window_mask(mask, False, 1, slot, w, idx.device)[0]
                     for w in set(self.windows)}  # fmt: skip
        else:
            masks = {}  # (the C attention reads each row's own slots: no mask)

        def write(t: Tensor, new: Tensor) -> None:  # (B, Hkv, max_len, hd) <- (B, Hkv, 1, hd)
            t[:, :, slot : slot + 1] = new

        logits = self._blocks(x, rot, cache.k, cache.v, write, lambda t: t[:, :, : slot + 1], masks,
                              first=first, slot=slot)  # fmt: skip
        cache.length = slot + 1
        return logits

    def static(
        self, idx: Tensor, k: Tensor, v: Tensor, slot: Tensor, positions: Tensor, key_mask: Tensor
    ) -> Tensor:
        """The same step with every shape fixed, so a CUDA graph can capture it: `k`, `v`
        (L, b, Hkv, S, hd) the first b rows of a cache, `slot` a (1,) tensor (the slot every
        row writes), `positions` (b,), `key_mask` (b, S) True = a real token. Attention runs
        over all S slots, those after `slot` masked out; k/v are written with `index_copy_`.
        Returns (b, V) logits; the caller advances the cache length."""
        b, S = idx.size(0), k.size(3)
        x = F.embedding(idx.view(b), self.tok_emb)  # (b, C)
        rot = None
        if self.pos_emb is not None:
            x = x + self.pos_emb[positions]
        else:
            assert self.rot is not None
            rot = self.rot[positions].unsqueeze(1)  # (b, 1, hd, hd)
        slots = torch.arange(S, device=idx.device)
        allowed = (key_mask & (slots <= slot)) | (slots == slot)  # (b, S): its own slot always
        masks: dict[int, Tensor | None] = {
            w: (allowed if w == 0 else allowed & (slots > slot - w)).view(b, 1, 1, S)
            for w in set(self.windows)
        }

        def write(t: Tensor, new: Tensor) -> None:
            t.index_copy_(2, slot, new)

        return self._blocks(x, rot, k, v, write, lambda t: t, masks)

    def _own_slots(
        self, idx: Tensor, cache: KVCache, key_mask: Tensor | None, slot: int
    ) -> Tensor | None:
        """Each row's first visible slot (B,) int32, where the batched step's attention can
        run in C over each row's own slots (`native.batch_attention`): several rows on a CPU,
        float32, one torch thread (the C loop is single-threaded; with more threads the
        torch attention runs on all of them), and every row's visible slots one contiguous
        run ending at `slot` (as the engine's `Decoder` keeps them). Else None: the masked
        torch attention."""
        B = idx.size(0)
        k = cache.k
        if (B < 2 or idx.device.type != "cpu" or k.dtype != torch.float32
                or torch.get_num_threads() != 1 or k.stride() != cache.v.stride()
                or k.stride(-1) != 1 or k.stride(-2) != self.head_dim):  # fmt: skip
            return None
        if self._batch_c is None:  # looked up once: the library is built on first use
            from slm_tui.native import library

            self._batch_c = library() is not None and os.environ.get("SLM_TUI_BATCH_C") != "0"
        if not self._batch_c:
            return None
        if key_mask is None:
            return torch.zeros(B, dtype=torch.int32)
        visible = key_mask[:, : slot + 1]
        first = visible.int().argmax(1).int()
        if not bool((visible.sum(1) == slot + 1 - first).all()):
            return None  # a row with holes in its slots: the mask says which
        return first.contiguous()

    def _blocks(
        self,
        x: Tensor,
        rot: Tensor | None,
        cache_k: Tensor,
        cache_v: Tensor,
        write: Callable[[Tensor, Tensor], None],
        keys: Callable[[Tensor], Tensor],
        masks: dict[int, Tensor | None],
        *,
        first: Tensor | None = None,
        slot: int = 0,
    ) -> Tensor:
        """The blocks and the head for x (B, C): each layer's new key and value go in with
        `write`, attention reads `keys(cache slice)` under `masks[window]`, or, with `first`
        (each row's first visible slot), each row's slots `first` .. `slot` in C."""
        B = x.size(0)
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        for i, (norm1, wqkv, bqkv, wo_t, bo, norm2, wfc, bfc, wp_t, bp) in enumerate(self.layers):
            qkv = F.linear(norm1(x), wqkv, bqkv).view(B, H + 2 * Hkv, 1, hd)
            qk = qkv[:, : H + Hkv] if rot is None else torch.matmul(qkv[:, : H + Hkv], rot)
            ck, cv = cache_k[i], cache_v[i]  # (B, Hkv, max_len, hd)
            write(ck, qk[:, H:])
            write(cv, qkv[:, H + Hkv :])
            if first is not None:
                y = batch_attention(qk[:, :H], ck, cv, first, slot, self.windows[i],
                                    self.scale or hd**-0.5)  # fmt: skip
                if y is None:  # (`_own_slots` checked what it reads)
                    raise RuntimeError("the C batch attention refused its inputs")
            else:
                y = attend(qk[:, :H], keys(ck), keys(cv), masks[self.windows[i]],
                           scale=self.scale)  # fmt: skip  # (B, H, 1, hd)
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
        return F.linear(self.norm_f(x), self.head).float()  # (B, V)


BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # rows a captured step is made for


def bucket(rows: int) -> int:
    """The smallest bucket holding `rows` (rows past the last bucket: the rows themselves)."""
    return next((b for b in BUCKETS if b >= rows), rows)


@dataclass
class _Captured:
    """One bucket's fixed inputs and outputs (and its graph, where one was captured)."""

    idx: Tensor  # (b, 1)
    slot: Tensor  # (1,)
    positions: Tensor  # (b,)
    key_mask: Tensor  # (b, S)
    cache_ptr: int  # the cache it was made for (a grown cache needs new ones)
    logits: Tensor | None = None  # (b, V), written by each replay
    graph: Any = None  # torch.cuda.CUDAGraph


class GraphedSteps:
    """The decode step of a GPU as CUDA graphs, one per batch bucket (1, 2, 4, ... rows): a
    step is one graph replay (a few dozen kernels launched as one) instead of a Python call
    per op. A batch of B rows runs in the bucket b >= B: the inputs are copied into the
    bucket's fixed tensors (rows past B hold what they held: their cache rows are free and
    their own slot is always visible, so they compute garbage, never NaN), the graph
    replays `FusedDecoder.static` over the cache's first b rows, and the first B rows of
    its logits come back. The first step of a bucket captures it (after two warm-up runs
    on a side stream, all writing what the step writes); a cache that grew (more rows
    joined) gets new graphs.

    `capture=False` runs the same fixed-shape step without graphs (the eager path on a GPU
    with `SLM_TUI_CUDA_GRAPHS=0`, and tests on a CPU): the same kernels, so the same
    numbers, as the replay."""

    def __init__(self, fused: FusedDecoder, *, capture: bool = True) -> None:
        self.fused = fused
        self.capture = capture
        self._buckets: dict[int, _Captured] = {}
        self._pool: Any = None

    def __call__(
        self, idx: Tensor, cache: KVCache, rows: int, slot: int, positions: Tensor,
        key_mask: Tensor,
    ) -> Tensor:  # fmt: skip
        """Logits (rows, V) after `idx` (rows, 1), the tokens of the first `rows` rows of
        `cache` (its full tensors, preallocated rows included) at `slot`; `positions`
        (rows,), `key_mask` (rows, S) as the decoder keeps them. The caller advances the
        cache length."""
        if slot >= cache.max_len:
            raise ValueError(f"{slot + 1} positions do not fit the KV cache of {cache.max_len}")
        b = bucket(rows)
        if b > cache.k.size(1):  # the cache has fewer rows than the bucket: exact shapes
            b = rows
        entry = self._buckets.get(b)
        if entry is None or entry.cache_ptr != cache.k.data_ptr():
            if entry is not None:  # the cache grew: its graphs point at freed memory
                self._buckets.clear()
            entry = self._make(cache, b, idx.device)
        entry.idx[:rows].copy_(idx)
        entry.positions[:rows].copy_(positions)
        entry.key_mask[:rows].copy_(key_mask)
        entry.slot.fill_(slot)
        if entry.graph is None and self.capture:
            entry.graph = self._capture(entry, cache.k[:, :b], cache.v[:, :b])
        if entry.graph is not None:
            entry.graph.replay()
        else:
            entry.logits = self.fused.static(entry.idx, cache.k[:, :b], cache.v[:, :b],
                                             entry.slot, entry.positions, entry.key_mask)  # fmt: skip
        assert entry.logits is not None
        return entry.logits[:rows].clone()

    def _make(self, cache: KVCache, b: int, device: torch.device) -> _Captured:
        entry = _Captured(
            idx=torch.zeros(b, 1, dtype=torch.long, device=device),
            slot=torch.zeros(1, dtype=torch.long, device=device),
            positions=torch.zeros(b, dtype=torch.long, device=device),
            key_mask=torch.zeros(b, cache.max_len, dtype=torch.bool, device=device),
            cache_ptr=cache.k.data_ptr(),
        )
        self._buckets[b] = entry
        return entry

    def _capture(self, entry: _Captured, k: Tensor, v: Tensor) -> Any:
        """Warm up on a side stream, then capture the step into a graph (the inputs already
        hold this step's values, so every run writes what the step writes)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.fused.static(entry.idx, k, v, entry.slot, entry.positions, entry.key_mask)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            entry.logits = self.fused.static(entry.idx, k, v, entry.slot, entry.positions,
                                             entry.key_mask)  # fmt: skip
        return graph
