"""The transformer, written by hand: a llama-style decoder with GPT-2 and GPT-Neo switches, plus a
KV cache.

Defaults (`ModelConfig()`): rotary position embeddings (no position table), RMSNorm before
each sub-layer, causal self-attention through `F.scaled_dot_product_attention`, optional
grouped-query attention (`n_kv_head` < `n_head`), SwiGLU MLP, no biases, output head tied to
the token embedding. The `seed-gpt` and `seed-notebook` presets flip the switches to the
seed notebook's GPT-2 blocks: learned absolute positions, LayerNorm with bias, GELU MLP (4x),
biases, dropout. GPT-Neo (the TinyStories paper's models, `slm-train import`) adds three:
`mlp: gelu_tanh` (GPT-2's and GPT-Neo's "gelu_new"), `scale_attention: false` (its scores
are q·k with no 1/sqrt(head_dim)) and `attention_windows` (local layers whose queries see
only the last w positions, alternating with global ones).

Notable:
- Fused projections: one matmul for Q, K and V, one for SwiGLU's gate and up halves. Fewer,
  larger matmuls are measurably faster on CPU, where tiny models are launch-bound.
- Init: normal(0, 0.02) everywhere, residual output projections scaled by 1/sqrt(2·n_layer)
  (GPT-2 paper) so the residual stream's variance does not grow with depth.
- KV cache: preallocated (n_layer, B, n_kv_head, max_len, head_dim) tensors and a `length`
  counter. A forward writes its chunk at slots [length, length+T) and attends to [0,
  length+T), so prefill, chunked prefill and one-token decode are one code path. Decoding a
  token without padding needs no mask at all (it sees every slot); the causal fast path
  (`is_causal=True`) is used whenever the chunk starts at slot 0 and nothing is masked.
- Left-padded batches: pass `positions` (B, T) (e.g. `cumsum(mask) - 1`) and `key_mask`
  (B, S). Every query may always see its own slot, so a padding row never has all keys
  masked (which makes SDPA return NaN, and NaN in a value row poisons every later layer).
- `model.fused_decoder()` (slm_tui/decode.py): the same function as `forward` for one new
  token per row with about half the ops (and for one row, one C call: slm_tui/native),
  sharing `attend`, the mask rule and the rotary tables with the blocks here; the
  generation engine decodes through it. tests/test_model.py and tests/test_native.py check
  it against `forward` for every `ModelConfig` switch.
- Local layers (`attention_windows`): the layer's mask is the usual one (causal, key
  padding) and'ed with "key slot > query slot - w", built once per forward for each window.
  Slots and positions differ only by left padding, which comes before a row's real tokens,
  so the window counts real tokens as GPT-Neo does. The KV cache keeps every slot.
- Logits are float32 whatever the autocast dtype; the loss ignores targets equal to -1.

One file, read top to bottom like nanoGPT's: the cache, the blocks, the model. The decode
step that mirrors the blocks is slm_tui/decode.py, guarded by tests against `forward`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slm_tui.config import ModelConfig

if TYPE_CHECKING:
    from slm_tui.decode import FusedDecoder

# `enable_gqa` lets SDPA broadcast K/V heads itself (no repeat copy); torch >= 2.5.
_SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def mlp_hidden_size(cfg: ModelConfig) -> int:
    """The MLP width: `mlp_hidden` if set, else 4·d (GELU) or 8/3·d rounded up to 32 (SwiGLU,
    which has three matrices instead of two, so the same parameter budget)."""
    if cfg.mlp_hidden:
        return cfg.mlp_hidden
    if cfg.mlp in ("gelu", "gelu_tanh"):
        return 4 * cfg.d_model
    return 32 * math.ceil(8 * cfg.d_model / 3 / 32)


class KVCache:
    """Keys and values of every layer for `batch_size` rows, preallocated up to `max_len` slots.

    `length` is how many slots hold valid entries; the next forward writes after them.
    `reset()` starts over without freeing memory (a new story reuses the same tensors).
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, Hkv, S, hd)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    @classmethod
    def over(cls, k: Tensor, v: Tensor, length: int = 0) -> KVCache:
        """A cache over existing (L, B, Hkv, S, hd) tensors, without copying them."""
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.max_len, cache.length = k, v, k.size(3), length
        return cache

    def rows(self, n: int) -> KVCache:
        """The first `n` rows as a cache of their own: views of the same memory (each layer's
        slice stays contiguous), with this cache's length."""
        return KVCache.over(self.k[:, :n], self.v[:, :n], self.length)

    def reset(self) -> None:
        self.length = 0


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


class ResidualLinear(nn.Linear):
    """An output projection into the residual stream: initialised with a smaller std (see
    `GPT._init_weights`); otherwise an `nn.Linear` (the same parameters and state dict)."""


def _norm(cfg: ModelConfig) -> RMSNorm | nn.LayerNorm:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d_model, bias=cfg.bias)
    return RMSNorm(cfg.d_model)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[i], x[i + hd/2]) by position-dependent angles (the "rotate half" layout
    of GPT-NeoX/llama). x (B, H, T, hd); cos/sin (T, hd/2) or (B, 1, T, hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool = False,
    dropout: float = 0.0, scale: float | None = None,
) -> Tensor:  # fmt: skip
    """SDPA of q (B, H, T, hd) over k, v (B, Hkv, S, hd) -> (B, H, T, hd). Grouped-query
    heads (Hkv < H) are broadcast by SDPA itself where torch can (>= 2.5), else repeated.
    `scale`: None for 1/sqrt(hd), 1.0 for GPT-Neo's unscaled scores."""
    extra: dict[str, Any] = {} if scale is None else {"scale": scale}
    if k.size(1) != q.size(1):
        if _SDPA_GQA:
            extra["enable_gqa"] = True
        else:
            rep = q.size(1) // k.size(1)
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal, **extra
    )


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.n_kv_head = cfg.n_kv_head or cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.rope = cfg.positions == "rope"
        self.dropout = cfg.attn_dropout
        self.scale = None if cfg.scale_attention else 1.0
        qkv_out = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.qkv = nn.Linear(cfg.d_model, qkv_out, bias=cfg.bias)
        self.proj = ResidualLinear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        cos: Tensor | None,
        sin: Tensor | None,
        mask: Tensor | None,
        is_causal: bool,
        kv: tuple[Tensor, Tensor] | None,
        start: int,
    ) -> Tensor:
        B, T, C = x.shape
        H, Hkv = self.n_head, self.n_kv_head
        qkv = self.qkv(x).view(B, T, H + 2 * Hkv, self.head_dim).transpose(1, 2)
        qk = qkv[:, : H + Hkv]  # (B, H+Hkv, T, hd): q and k heads, rotated together
        if self.rope:
            assert cos is not None and sin is not None  # rotary models always pass the tables
            qk = apply_rotary(qk, cos, sin)
        q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + Hkv :]
        if kv is not None:
            # Write this chunk into the cache, then attend over every valid slot.
            ck, cv = kv  # (B, Hkv, max_len, hd)
            ck[:, :, start : start + T] = k
            cv[:, :, start : start + T] = v
            k = ck[:, :, : start + T]
            v = cv[:, :, : start + T]
            if k.dtype != q.dtype:  # a float32 cache read under bf16 autocast
                k, v = k.to(q.dtype), v.to(q.dtype)
        dropout = self.dropout if self.training else 0.0
        y = attend(q, k, v, mask, is_causal, dropout, self.scale)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = mlp_hidden_size(cfg)
        self.swiglu = cfg.mlp == "swiglu"
        self.approximate = "tanh" if cfg.mlp == "gelu_tanh" else "none"
        # SwiGLU: gate and up projections fused into one matmul, split afterwards.
        self.fc = nn.Linear(cfg.d_model, (2 if self.swiglu else 1) * hidden, bias=cfg.bias)
        self.proj = ResidualLinear(hidden, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def _activate(self, h: Tensor) -> Tensor:
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            return F.silu(gate) * up
        return F.gelu(h, approximate=self.approximate)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(self._activate(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = _norm(cfg)
        self.attn = Attention(cfg)
        self.norm2 = _norm(cfg)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: Tensor,
        cos: Tensor | None,
        sin: Tensor | None,
        mask: Tensor | None,
        is_causal: bool,
        kv: tuple[Tensor, Tensor] | None,
        start: int,
    ) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, mask, is_causal, kv, start)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Decoder-only transformer. `forward(idx, targets)` -> (float32 logits, loss or None)."""

    pos_emb: nn.Embedding | None  # learned positions
    rope_cos: Tensor | None  # (context, hd/2) rotary tables (buffers, not saved)
    rope_sin: Tensor | None

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be set (take it from the tokenizer)")
        cfg.validate()
        self.cfg = cfg
        self.vocab_size: int = cfg.vocab_size
        self.head_dim = cfg.d_model // cfg.n_head
        self.n_kv_head = cfg.n_kv_head or cfg.n_head
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = (
            nn.Embedding(cfg.context_length, cfg.d_model) if cfg.positions == "learned" else None
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = _norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if cfg.positions == "rope":
            cos, sin = self._rope_tables(cfg.context_length)
            # Not persistent: derived from the config, so never stored in a checkpoint.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        self.apply(self._init_weights)

    def _rope_tables(self, length: int) -> tuple[Tensor, Tensor]:
        half = self.head_dim // 2
        inv_freq = 1.0 / (self.cfg.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
        angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)  # (T, hd/2)
        return angles.cos().float(), angles.sin().float()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if isinstance(module, ResidualLinear):
                std /= math.sqrt(2 * self.cfg.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def layers(self) -> list[Block]:
        """The blocks, typed (`self.blocks` is an `nn.ModuleList` of them)."""
        return cast("list[Block]", list(self.blocks))

    # ---------------------------------------------------------------------------------------
    def new_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty cache for `batch_size` rows and up to `max_len` (default: context) slots."""
        max_len = max_len or self.cfg.context_length
        if max_len > self.cfg.context_length:
            raise ValueError(
                f"cache length {max_len} exceeds the model's context of {self.cfg.context_length}"
            )
        ref = self.tok_emb.weight
        return KVCache(
            self.cfg.n_layer,
            batch_size,
            self.n_kv_head,
            max_len,
            self.head_dim,
            device=device if device is not None else ref.device,
            dtype=dtype or ref.dtype,
        )

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        *,
        cache: KVCache | None = None,
        positions: Tensor | None = None,
        key_mask: Tensor | None = None,
        last_only: bool = False,
        reduction: str = "mean",
    ) -> tuple[Tensor, Tensor | None]:
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        end = start + T  # key slots [0, end) are visible to this chunk
        limit = cache.max_len if cache is not None else self.cfg.context_length
        if end > limit:
            what = "KV cache" if cache is not None else "model context"
            raise ValueError(f"{end} positions do not fit the {what} of {limit}")

        x = self.tok_emb(idx)  # (B, T, C)
        cos = sin = None
        if positions is not None:
            positions = positions.clamp(min=0)  # left padding may carry -1
        if self.pos_emb is not None:
            if positions is None:
                x = x + self.pos_emb.weight[start:end]
            else:
                x = x + self.pos_emb(positions)
        else:
            assert self.rope_cos is not None and self.rope_sin is not None
            if positions is None:
                cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]  # (T, hd/2)
            else:
                cos = self.rope_cos[positions].unsqueeze(1)  # (B, 1, T, hd/2)
                sin = self.rope_sin[positions].unsqueeze(1)
        x = self.drop(x)

        mask, is_causal = self._attn_mask(B, T, start, key_mask, idx.device)
        windows = self.cfg.attention_windows or [0] * len(self.blocks)
        masks = {w: self._window_mask(mask, is_causal, T, start, w, idx.device)
                 for w in set(windows)}  # fmt: skip
        for i, block in enumerate(self.blocks):
            kv = (cache.k[i], cache.v[i]) if cache is not None else None
            x = block(x, cos, sin, *masks[windows[i]], kv, start)
        if cache is not None:
            cache.length = end
        x = self.norm_f(x)

        if targets is None:
            if last_only:
                x = x[:, -1:, :]  # (B, 1, C): generation needs only the next-token logits
            return self.lm_head(x).float(), None
        logits = self.lm_head(x).float()  # (B, T, V)
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=-1,
            reduction=reduction,
        )
        if reduction == "none":
            loss = loss.view(B, T)
        if last_only:
            logits = logits[:, -1:, :]
        return logits, loss

    def fused_decoder(self, *, native: bool = True) -> FusedDecoder:
        """A one-token decode step for this model (`slm_tui.decode.FusedDecoder`), for one
        generation; `native=False` keeps one-row steps in torch too."""
        from slm_tui.decode import FusedDecoder

        return FusedDecoder(self, native=native)

    @staticmethod
    def _attn_mask(
        B: int, T: int, start: int, key_mask: Tensor | None, device: torch.device
    ) -> tuple[Tensor | None, bool]:
        """The attention mask for queries at slots [start, start+T) over keys [0, start+T).

        Returns (None, True) for the plain causal case, (None, False) for a single unmasked
        query (it sees everything), else a bool mask (B or 1, 1, T, S), True = may attend.
        Built once per forward and shared by all layers."""
        S = start + T
        if key_mask is None:
            if start == 0:
                return None, T > 1
            if T == 1:
                return None, False
            allowed = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=start)
            return allowed.view(1, 1, T, S), False
        if key_mask.shape != (B, S):
            raise ValueError(f"key_mask must have shape {(B, S)}, got {tuple(key_mask.shape)}")
        key_mask = key_mask.to(device=device, dtype=torch.bool)
        if T == 1:
            allowed = key_mask.clone()
            allowed[:, -1] = True  # the query's own slot
            return allowed.view(B, 1, 1, S), False
        causal = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=start)
        allowed = causal.unsqueeze(0) & key_mask.unsqueeze(1)  # (B, T, S)
        rows = torch.arange(T, device=device)
        allowed[:, rows, rows + start] = True  # never an all-masked row (padding queries)
        return allowed.unsqueeze(1), False

    @staticmethod
    def _window_mask(
        mask: Tensor | None, is_causal: bool, T: int, start: int, window: int,
        device: torch.device,
    ) -> tuple[Tensor | None, bool]:  # fmt: skip
        """`_attn_mask`'s result for a local layer of `window` positions (0: global, the
        mask unchanged): each query at slot q may also see only keys at slots > q - window."""
        S = start + T
        if window == 0 or window >= S:  # the window reaches every key: nothing to cut
            return mask, is_causal
        q = torch.arange(start, S, device=device).unsqueeze(1)  # (T, 1)
        k = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
        near = ((k > q - window) & (k <= q)).view(1, 1, T, S)  # causal and within the window
        return (near if mask is None else mask & near), False

    # ---------------------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once). `non_embedding` leaves out the token and
        position tables (Kaplan et al.'s N); an untied output head is counted, it is a matmul."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token: 6·N + 12·L·T·d.

        N counts every weight used in a matmul: the non-embedding parameters plus the output
        head (which is the tied embedding when tied); 6 = 2 (multiply-add) x 3 (forward and
        two backward matmuls). 12·L·T·d is attention's QK^T and AV over a window of T keys,
        counted in full rather than causal-halved: the convention of the PaLM paper
        (appendix B) and nanoGPT's MFU estimate, so MFU figures are comparable to theirs."""
        T = seq_len or self.cfg.context_length
        n = self.num_params(non_embedding=True)
        if self.cfg.tie_embeddings:
            n += self.lm_head.weight.numel()
        return 6.0 * n + 12.0 * self.cfg.n_layer * T * self.cfg.d_model
