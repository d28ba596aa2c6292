"""Our weights <-> Hugging Face `LlamaForCausalLM` / `GPT2LMHeadModel` / `GPTNeoForCausalLM`
weights, both ways.

One table per architecture, used by the exporter and the importer alike, so the two stay
mirror images (tests/test_interop.py checks export -> import gives the same tensors back).

Notable:
- Llama: our fused `qkv` rows are [q heads | k heads | v heads] and SwiGLU's `fc` rows are
  [gate | up]; they are split into q/k/v_proj and gate/up_proj and fused back on import.
  Our rotary layout is already transformers' "rotate half" (pairs i and i + head_dim/2), so
  q and k rows need no permutation (llama.cpp's layout does: see gguf_export.py).
- GPT-2: transformers' `Conv1D` stores weights as (in, out), so every projection is
  transposed; GPT-2 always has biases and LayerNorm biases, so zeros stand in where ours
  has none (exact), and on import all-zero biases map back to `bias: false`.
- GPT-Neo: `nn.Linear` layers (no transpose), q/k/v projections apart and without biases
  (zeros on import; an export refuses a model whose q/k/v biases are not zero), biases on
  the output projection, the MLP and the norms.
- A tied head is not written (`tie_word_embeddings` ties it on load); an untied one is
  `lm_head.weight`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from slm_tui.config import ModelConfig
from slm_tui.interop.common import InteropError
from slm_tui.model import mlp_hidden_size


def _heads(cfg: ModelConfig) -> tuple[int, int, int]:
    return cfg.n_head, cfg.n_kv_head or cfg.n_head, cfg.d_model // cfg.n_head


# ---- ours -> Hugging Face ------------------------------------------------------------------
def to_hf(state: dict[str, Tensor], cfg: ModelConfig, arch: str) -> dict[str, Tensor]:
    """Our state dict (`GPT.state_dict()`, tied head included or not) -> HF tensor names."""
    if arch == "gpt_neo":
        return _gpt_neo_out(state, cfg)
    return _llama_out(state, cfg) if arch == "llama" else _gpt2_out(state, cfg)


def _llama_out(state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    H, Hkv, hd = _heads(cfg)
    hidden = mlp_hidden_size(cfg)
    out = {"model.embed_tokens.weight": state["tok_emb.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        out[theirs + "input_layernorm.weight"] = state[ours + "norm1.weight"]
        out[theirs + "post_attention_layernorm.weight"] = state[ours + "norm2.weight"]
        for suffix in ("weight", "bias") if cfg.bias else ("weight",):
            q, k, v = state[ours + f"attn.qkv.{suffix}"].split([H * hd, Hkv * hd, Hkv * hd])
            out[theirs + f"self_attn.q_proj.{suffix}"] = q
            out[theirs + f"self_attn.k_proj.{suffix}"] = k
            out[theirs + f"self_attn.v_proj.{suffix}"] = v
            out[theirs + f"self_attn.o_proj.{suffix}"] = state[ours + f"attn.proj.{suffix}"]
            gate, up = state[ours + f"mlp.fc.{suffix}"].split([hidden, hidden])
            out[theirs + f"mlp.gate_proj.{suffix}"] = gate
            out[theirs + f"mlp.up_proj.{suffix}"] = up
            out[theirs + f"mlp.down_proj.{suffix}"] = state[ours + f"mlp.proj.{suffix}"]
    out["model.norm.weight"] = state["norm_f.weight"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return out


def _bias(state: dict[str, Tensor], name: str, size: int, like: Tensor) -> Tensor:
    if name in state:
        return state[name]
    return torch.zeros(size, dtype=like.dtype)


def _gpt2_out(state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    H, Hkv, _hd = _heads(cfg)
    if Hkv != H:
        raise InteropError(
            f"GPT-2 has no grouped-query attention; this model has n_kv_head={Hkv} for n_head={H}"
        )
    d, hidden = cfg.d_model, mlp_hidden_size(cfg)
    w = state["tok_emb.weight"]
    out = {"transformer.wte.weight": w, "transformer.wpe.weight": state["pos_emb.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for our_norm, their_norm in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[theirs + f"{their_norm}.weight"] = state[ours + f"{our_norm}.weight"]
            out[theirs + f"{their_norm}.bias"] = _bias(state, ours + f"{our_norm}.bias", d, w)
        for our_lin, their_lin, n_out in (
            ("attn.qkv", "attn.c_attn", 3 * d),
            ("attn.proj", "attn.c_proj", d),
            ("mlp.fc", "mlp.c_fc", hidden),
            ("mlp.proj", "mlp.c_proj", d),
        ):
            out[theirs + f"{their_lin}.weight"] = state[ours + f"{our_lin}.weight"].t()
            out[theirs + f"{their_lin}.bias"] = _bias(state, ours + f"{our_lin}.bias", n_out, w)
    out["transformer.ln_f.weight"] = state["norm_f.weight"]
    out["transformer.ln_f.bias"] = _bias(state, "norm_f.bias", d, w)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return out


def _gpt_neo_out(state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """GPT-Neo: nn.Linear layers (no transpose), q/k/v apart and without biases (ours must be
    zero: checked here on real tensors), biases everywhere else (zeros where ours has none)."""
    H, Hkv, _hd = _heads(cfg)
    if Hkv != H:
        raise InteropError(
            f"GPT-Neo has no grouped-query attention; this model has n_kv_head={Hkv} for n_head={H}"
        )
    d, hidden = cfg.d_model, mlp_hidden_size(cfg)
    w = state["tok_emb.weight"]
    out = {"transformer.wte.weight": w, "transformer.wpe.weight": state["pos_emb.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        qkv_bias = state.get(ours + "attn.qkv.bias")
        if qkv_bias is not None and not qkv_bias.is_meta and qkv_bias.any():
            raise InteropError(
                "GPT-Neo's q/k/v projections have no biases, and this model's are not zero "
                f"(blocks.{i}.attn.qkv.bias); export it as another architecture"
            )
        att = theirs + "attn.attention."
        q, k, v = state[ours + "attn.qkv.weight"].split([d, d, d])
        out.update({att + "q_proj.weight": q, att + "k_proj.weight": k, att + "v_proj.weight": v})
        out[att + "out_proj.weight"] = state[ours + "attn.proj.weight"]
        out[att + "out_proj.bias"] = _bias(state, ours + "attn.proj.bias", d, w)
        for our_norm, their_norm in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[theirs + f"{their_norm}.weight"] = state[ours + f"{our_norm}.weight"]
            out[theirs + f"{their_norm}.bias"] = _bias(state, ours + f"{our_norm}.bias", d, w)
        for our_lin, their_lin, n_out in (("mlp.fc", "mlp.c_fc", hidden),
                                          ("mlp.proj", "mlp.c_proj", d)):  # fmt: skip
            out[theirs + f"{their_lin}.weight"] = state[ours + f"{our_lin}.weight"]
            out[theirs + f"{their_lin}.bias"] = _bias(state, ours + f"{our_lin}.bias", n_out, w)
    out["transformer.ln_f.weight"] = state["norm_f.weight"]
    out["transformer.ln_f.bias"] = _bias(state, "norm_f.bias", d, w)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return out


# ---- Hugging Face -> ours ------------------------------------------------------------------
def expected_hf_shapes(cfg: ModelConfig, arch: str) -> dict[str, tuple[int, ...]]:
    """Every tensor name (and shape) an HF checkpoint of this shape holds, tied head left out.
    GPT-2 always has biases, so its table is built as if `bias` were on."""
    from slm_tui.model import GPT

    if arch in ("gpt2", "gpt_neo"):
        cfg = dataclasses.replace(cfg, bias=True)
    with torch.device("meta"):
        state = GPT(cfg).state_dict()
    return {k: tuple(v.shape) for k, v in to_hf(state, cfg, arch).items()}


def from_hf(tensors: dict[str, Tensor], cfg: ModelConfig, arch: str) -> dict[str, Tensor]:
    """HF tensors (names already checked against `expected_hf_shapes`) -> our state dict
    (without a tied `lm_head.weight`)."""
    if arch == "gpt_neo":
        return _gpt_neo_in(tensors, cfg)
    return _llama_in(tensors, cfg) if arch == "llama" else _gpt2_in(tensors, cfg)


def _llama_in(t: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    out = {"tok_emb.weight": t["model.embed_tokens.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        out[ours + "norm1.weight"] = t[theirs + "input_layernorm.weight"]
        out[ours + "norm2.weight"] = t[theirs + "post_attention_layernorm.weight"]
        for suffix in ("weight", "bias") if cfg.bias else ("weight",):
            att = theirs + "self_attn."
            out[ours + f"attn.qkv.{suffix}"] = torch.cat(
                [t[att + f"{p}_proj.{suffix}"] for p in ("q", "k", "v")]
            )
            out[ours + f"attn.proj.{suffix}"] = t[att + f"o_proj.{suffix}"]
            mlp = theirs + "mlp."
            out[ours + f"mlp.fc.{suffix}"] = torch.cat(
                [t[mlp + f"gate_proj.{suffix}"], t[mlp + f"up_proj.{suffix}"]]
            )
            out[ours + f"mlp.proj.{suffix}"] = t[mlp + f"down_proj.{suffix}"]
    out["norm_f.weight"] = t["model.norm.weight"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = t["lm_head.weight"]
    return out


def _gpt2_in(t: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    out = {
        "tok_emb.weight": t["transformer.wte.weight"],
        "pos_emb.weight": t["transformer.wpe.weight"],
    }
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        pairs = [("norm1", "ln_1", False), ("norm2", "ln_2", False),
                 ("attn.qkv", "attn.c_attn", True),
                 ("attn.proj", "attn.c_proj", True), ("mlp.fc", "mlp.c_fc", True),
                 ("mlp.proj", "mlp.c_proj", True)]  # fmt: skip
        for our, their, conv1d in pairs:
            weight = t[theirs + f"{their}.weight"]
            out[ours + f"{our}.weight"] = weight.t().contiguous() if conv1d else weight
            if cfg.bias:
                out[ours + f"{our}.bias"] = t[theirs + f"{their}.bias"]
    out["norm_f.weight"] = t["transformer.ln_f.weight"]
    if cfg.bias:
        out["norm_f.bias"] = t["transformer.ln_f.bias"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = t["lm_head.weight"]
    return out


def _gpt_neo_in(t: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """GPT-Neo -> ours: q/k/v fused, their missing biases as zeros (exact) when ours has them."""
    out = {
        "tok_emb.weight": t["transformer.wte.weight"],
        "pos_emb.weight": t["transformer.wpe.weight"],
    }
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        att = theirs + "attn.attention."
        q = t[att + "q_proj.weight"]
        out[ours + "attn.qkv.weight"] = torch.cat(
            [q, t[att + "k_proj.weight"], t[att + "v_proj.weight"]]
        )
        if cfg.bias:
            out[ours + "attn.qkv.bias"] = torch.zeros(3 * cfg.d_model, dtype=q.dtype)
        pairs = [("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.proj", "attn.attention.out_proj"),
                 ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")]  # fmt: skip
        for our, their in pairs:
            out[ours + f"{our}.weight"] = t[theirs + f"{their}.weight"]
            if cfg.bias:
                out[ours + f"{our}.bias"] = t[theirs + f"{their}.bias"]
    out["norm_f.weight"] = t["transformer.ln_f.weight"]
    if cfg.bias:
        out["norm_f.bias"] = t["transformer.ln_f.bias"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = t["lm_head.weight"]
    return out
