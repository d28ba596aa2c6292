"""`slm-train export --format hf`: a checkpoint as a Hugging Face transformers model folder.

The folder loads with `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained`, no custom code: `LlamaForCausalLM` for the default blocks,
`GPT2LMHeadModel` for the GPT-2 switches (`seed-gpt`, `seed-notebook`), `GPTNeoForCausalLM`
for the GPT-Neo ones (an imported TinyStories model). It holds `config.json`,
`generation_config.json` (our sampling defaults), `model.safetensors`, the tokenizer files
(hf_tokenizer.py) and a short README.md.

Notable (tests/test_interop.py checks logits within 1e-4 in float32 against transformers):
- LlamaConfig's defaults differ from our model and are all written out: `rms_norm_eps`
  1e-5 (not 1e-6), `tie_word_embeddings`, `head_dim`, bos/eos/pad ids from the tokenizer,
  and the RoPE base both as `rope_theta` (transformers 4.x) and `rope_parameters` (5.x).
- GPT-2: `activation_function` is exact `gelu` for `mlp: gelu`, `gelu_new` (the tanh
  approximation, GPT-2's own) for `mlp: gelu_tanh`; `layer_norm_epsilon` 1e-5, `n_inner` our
  MLP width. GPT-Neo: `attention_types` one entry per layer, `window_size` the local
  layers' window.
- generation_config.json carries our defaults (temperature, top-p, min-p, repetition
  penalty). transformers applies its penalty over the whole context, not our last 64
  tokens, and its temperature before the top-p/min-p cuts (ours and llama.cpp's after), so
  at temperature 0.9 its cuts keep slightly fewer tokens.
- Weights in float32 (default), float16 or bfloat16; a tied head is stored once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from slm_tui.checkpoint.io import LoadedCheckpoint
from slm_tui.config import ModelConfig
from slm_tui.fileio import as_ordinary_file
from slm_tui.generation.settings import DEFAULTS
from slm_tui.interop.common import HF_CLASSES, InteropError, architecture
from slm_tui.interop.hf_layout import to_hf
from slm_tui.interop.hf_tokenizer import hf_tokenizer_files
from slm_tui.model import mlp_hidden_size
from slm_tui.tokenizers import Tokenizer

HF_DTYPES = ("float32", "float16", "bfloat16")


def _ids(tok: Tokenizer) -> dict[str, int]:
    return {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}


def hf_config(cfg: ModelConfig, tok: Tokenizer, dtype: str) -> dict[str, Any]:
    """config.json for `cfg`: every field our model depends on, none left to a default."""
    arch = architecture(cfg)
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings,
              "initializer_range": 0.02, "use_cache": True, "torch_dtype": dtype,
              "dtype": dtype, **_ids(tok)}  # fmt: skip
    if arch == "llama":
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": cfg.d_model,
            "intermediate_size": mlp_hidden_size(cfg),
            "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_kv_head or cfg.n_head,
            "head_dim": cfg.d_model // cfg.n_head,
            "hidden_act": "silu",
            "max_position_embeddings": cfg.context_length,
            "rms_norm_eps": 1e-5,
            "rope_theta": cfg.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "rope_scaling": None,
            "attention_bias": cfg.bias,
            "mlp_bias": cfg.bias,
            "attention_dropout": cfg.attn_dropout,
            "pretraining_tp": 1,
            **common,
        }
    act = "gelu_new" if cfg.mlp == "gelu_tanh" else "gelu"
    if arch == "gpt_neo":
        return gpt_neo_config(cfg, act, common)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_positions": cfg.context_length,
        "n_inner": mlp_hidden_size(cfg),
        "activation_function": act,
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.attn_dropout,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        **common,
    }


def gpt_neo_config(cfg: ModelConfig, act: str, common: dict[str, Any]) -> dict[str, Any]:
    """GPTNeoConfig: one `attention_types` entry per layer, local where ours has a window."""
    windows = cfg.attention_windows or [0] * cfg.n_layer
    window = max(windows) or cfg.context_length  # unused when every layer is global
    return {
        "architectures": ["GPTNeoForCausalLM"],
        "model_type": "gpt_neo",
        "hidden_size": cfg.d_model,
        "num_layers": cfg.n_layer,
        "num_heads": cfg.n_head,
        "max_position_embeddings": cfg.context_length,
        "intermediate_size": mlp_hidden_size(cfg),
        "attention_types": [[["local" if w else "global"], 1] for w in windows],
        "window_size": window,
        "activation_function": act,
        "layer_norm_epsilon": 1e-5,
        "resid_dropout": cfg.dropout,
        "embed_dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "classifier_dropout": 0.1,
        **common,
    }


def generation_config(cfg: ModelConfig, tok: Tokenizer) -> dict[str, Any]:
    """generation_config.json: our sampling defaults, in transformers' names. `max_length`
    is the context: transformers does not slide the window as our engine does (and GPT-2
    has no position past it)."""
    return {
        **_ids(tok),
        "do_sample": True,
        "temperature": DEFAULTS.temperature,
        "top_k": DEFAULTS.top_k,
        "top_p": DEFAULTS.top_p,
        "min_p": DEFAULTS.min_p,
        "repetition_penalty": DEFAULTS.repetition_penalty,
        "max_length": cfg.context_length,
    }


def hf_files(loaded: LoadedCheckpoint, dtype: str) -> dict[str, bytes]:
    """Everything but the weights, as file name -> bytes (refusals happen here, early)."""
    if dtype not in HF_DTYPES:
        raise InteropError(
            f"--dtype {dtype} is not a Hugging Face weights type; use one of {', '.join(HF_DTYPES)}"
        )
    cfg, tok = loaded.model.cfg, loaded.tokenizer
    files = dict(hf_tokenizer_files(tok, cfg.context_length))
    files["config.json"] = _dump(hf_config(cfg, tok, dtype))
    files["generation_config.json"] = _dump(generation_config(cfg, tok))
    files["README.md"] = _readme(loaded, dtype).encode("utf-8")
    return files


def hf_state(loaded: LoadedCheckpoint, dtype: str) -> dict[str, torch.Tensor]:
    """The HF tensors, contiguous CPU copies in `dtype`."""
    cfg = loaded.model.cfg
    state = {k: v.detach().to("cpu") for k, v in loaded.model.state_dict().items()}
    out = to_hf(state, cfg, architecture(cfg))
    return {k: v.to(getattr(torch, dtype)).contiguous() for k, v in out.items()}


def write_hf(loaded: LoadedCheckpoint, folder: Path, dtype: str = "float32") -> None:
    """Write the HF files into `folder` (an empty temporary directory of the caller's)."""
    files = hf_files(loaded, dtype)
    state = hf_state(loaded, dtype)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    as_ordinary_file(folder / "model.safetensors")
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def _readme(loaded: LoadedCheckpoint, dtype: str) -> str:
    info, cfg = loaded.info, loaded.model.cfg
    arch = HF_CLASSES[architecture(cfg)]
    bpb = f"{info.val_bpb:.3f}" if info.val_bpb is not None else "not measured"
    return (
        f"# {info.name}\n\n"
        f"A {info.params / 1e6:.2f}M-parameter `{arch}` exported by slm-tui "
        f"(`slm-train export --format hf`) from step {info.step} "
        f"({info.tokens_seen:,} tokens seen; validation bits per byte: {bpb}); "
        f"{cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.d_model}, context "
        f"{cfg.context_length}, {dtype} weights, tokenizer `{loaded.tokenizer.kind}` "
        f"({loaded.tokenizer.vocab_size} ids).\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        'tok = AutoTokenizer.from_pretrained("PATH")\n'
        'model = AutoModelForCausalLM.from_pretrained("PATH")\n'
        'ids = tok("Once upon a time", return_tensors="pt").input_ids  # BOS is added\n'
        "print(tok.decode(model.generate(ids)[0], skip_special_tokens=True))\n"
        "```\n\n"
        "Prompts start with BOS, as in training (the tokenizer adds it). "
        "`slm-train import --from hf PATH --output DIR` turns this folder back into an "
        "slm-tui checkpoint.\n"
    )
