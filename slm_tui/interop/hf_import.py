"""`slm-train import --from hf DIR`: a Hugging Face Llama, GPT-2 or GPT-Neo folder as a checkpoint
of ours.

The output is an ordinary checkpoint (config.yaml, model.safetensors, tokenizer/, meta.json)
that `load_checkpoint` opens, so `slm-tui` and `slm-generate` use it with no other change.
Nothing is approximated: a config or tensor our model cannot hold exactly is refused with
one line naming it.

Notable:
- Config: `LlamaForCausalLM` (model_type llama) maps to the default blocks, `GPT2LMHeadModel`
  (gpt2) to the GPT-2 switches, `GPTNeoForCausalLM` (gpt_neo: the TinyStories paper's
  models) to GPT-2's blocks with `scale_attention: false` and its local layers as
  `attention_windows`. GELU is the exact one (`gelu`) or the tanh approximation (`gelu_new`,
  `mlp: gelu_tanh`). Refused: another model_type, an activation other than SiLU
  (Llama) or those two GELUs (GPT-2, GPT-Neo), a norm epsilon
  other than our 1e-5, RoPE scaling or partial rotary, a head size other than width/heads,
  attention biases without MLP biases (or the reverse), GPT-2 attention-scaling variants.
  transformers' own defaults are used for keys the file leaves out (LlamaConfig's
  `rms_norm_eps` 1e-6 and untied head, GPT2Config's `gelu_new`), so a sparse config is
  judged as transformers would read it.
- Weights: `model.safetensors` or shards listed in `model.safetensors.index.json` (a missing
  shard is refused); pickle files (`pytorch_model.bin`) are never loaded. Every tensor is
  checked by name and shape; buffers (`attn.bias` masks, `rotary_emb.inv_freq`) are
  ignored; a tied head stored anyway must equal the embedding. q/k/v and gate/up are fused
  back (hf_layout.py). Biases that are all zero (what GPT-2 export writes for a bias-free
  model) come back as `bias: false`. The weights keep their stored dtype.
- Tokenizer: hf_tokenizer_import.py (a SentencePiece model or a byte-level BPE, GPT-2's
  included, checked against AutoTokenizer).
- Written with `save_checkpoint` (a temporary sibling renamed into place): a refusal or a
  crash leaves nothing behind, and an existing output is replaced only with `force`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from slm_tui.checkpoint.io import is_checkpoint, save_checkpoint
from slm_tui.config import Config, ModelConfig, TokenizerConfig
from slm_tui.errors import SlmError
from slm_tui.interop.common import (
    HF_CLASSES,
    InteropError,
    check_apart,
    check_destination,
    read_json,
)
from slm_tui.interop.hf_layout import expected_hf_shapes, from_hf
from slm_tui.interop.hf_tokenizer_import import import_tokenizer
from slm_tui.model import GPT, mlp_hidden_size

CONFIG_LIMIT = 4 << 20
RMS_EPS = 1e-5  # our RMSNorm's and LayerNorm's epsilon
BUFFERS: tuple[str, ...] = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
BUFFERS += (".attn.attention.bias", ".attn.attention.masked_bias")  # GPT-Neo's masks


@dataclass
class ImportResult:
    path: Path
    architecture: str  # llama | gpt2
    tokenizer_kind: str
    params: int
    weights_dtype: str


# ---- config.json ---------------------------------------------------------------------------
def read_hf_config(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise InteropError(f"{folder} not found")
    if not folder.is_dir():
        raise InteropError(f"{folder} is a file; a Hugging Face model is a folder")
    path = folder / "config.json"
    if not path.is_file():
        raise InteropError(f"{folder} has no config.json; it is not a Hugging Face model folder")
    config = read_json(path, CONFIG_LIMIT)
    if not isinstance(config, dict):
        raise InteropError(f"{path} is corrupt (not a JSON object)")
    return config


def _int(c: dict[str, Any], key: str, default: Any = None) -> int:
    value = c.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InteropError(f"config.json: {key} must be a positive integer, got {value!r}")
    return value


def _float(c: dict[str, Any], key: str, default: float) -> float:
    value = c.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InteropError(f"config.json: {key} must be a number, got {value!r}")
    return float(value)


def _eps(c: dict[str, Any], key: str, default: float) -> None:
    eps = _float(c, key, default)
    if eps != RMS_EPS:
        raise InteropError(f"{key} {eps:g} is not supported: our norms use {RMS_EPS:g}")


def model_config(c: dict[str, Any]) -> tuple[ModelConfig, str]:
    """Our ModelConfig for an HF config, and the architecture; InteropError if not exact."""
    model_type = c.get("model_type")
    if model_type == "llama":
        return _llama(c), "llama"
    if model_type == "gpt2":
        return _gpt2(c), "gpt2"
    if model_type == "gpt_neo":
        return gpt_neo_model_config(c), "gpt_neo"
    raise InteropError(
        f"model_type {model_type!r} is not supported; slm-train import reads llama "
        "(LlamaForCausalLM), gpt2 (GPT2LMHeadModel) and gpt_neo (GPTNeoForCausalLM) models"
    )


def _rope_theta(c: dict[str, Any]) -> float:
    params = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise InteropError("config.json: rope_parameters / rope_scaling must be objects")
    for spec in (params, scaling):
        kind = spec.get("rope_type", spec.get("type", "default"))
        if kind != "default":
            raise InteropError(f"RoPE scaling {kind!r} is not supported (plain rotary only)")
    if _float(params, "partial_rotary_factor", _float(c, "partial_rotary_factor", 1.0)) != 1.0:
        raise InteropError("partial rotary embeddings are not supported (rotary on every dim)")
    return _float(params, "rope_theta", _float(c, "rope_theta", 10000.0))


def _llama(c: dict[str, Any]) -> ModelConfig:
    if c.get("hidden_act", "silu") != "silu":
        raise InteropError(f"activation {c.get('hidden_act')!r} is not supported (SwiGLU: silu)")
    _eps(c, "rms_norm_eps", 1e-6)  # LlamaConfig's default
    d, heads = _int(c, "hidden_size"), _int(c, "num_attention_heads")
    kv = heads if c.get("num_key_value_heads") is None else _int(c, "num_key_value_heads")
    head_dim = d // heads if c.get("head_dim") is None else _int(c, "head_dim")
    if head_dim * heads != d:
        raise InteropError(
            f"head_dim {head_dim} with {heads} heads of width {d} is not supported: "
            "our heads are width / heads wide"
        )
    attention_bias, mlp_bias = bool(c.get("attention_bias")), bool(c.get("mlp_bias"))
    if attention_bias != mlp_bias:
        raise InteropError(
            f"attention_bias={attention_bias} with mlp_bias={mlp_bias} is not supported: "
            "our blocks have biases everywhere or nowhere"
        )
    dropout = _float(c, "attention_dropout", 0.0)
    cfg = ModelConfig(
        vocab_size=_int(c, "vocab_size"),
        context_length=_int(c, "max_position_embeddings", 2048),
        n_layer=_int(c, "num_hidden_layers"),
        n_head=heads,
        n_kv_head=None if kv == heads else kv,
        d_model=d,
        rope_theta=_rope_theta(c),
        bias=attention_bias,
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        dropout=dropout if 0.0 <= dropout < 1.0 else 0.0,
    )
    return _with_mlp(cfg, _int(c, "intermediate_size"))


def _gpt2(c: dict[str, Any]) -> ModelConfig:
    mlp = _gelu(c.get("activation_function", "gelu_new"))
    _eps(c, "layer_norm_epsilon", 1e-5)
    if not c.get("scale_attn_weights", True) or c.get("scale_attn_by_inverse_layer_idx"):
        raise InteropError("GPT-2 attention-scaling variants are not supported")
    if c.get("add_cross_attention"):
        raise InteropError("cross-attention is not supported")
    d = _int(c, "n_embd", 768)
    dropout = _float(c, "resid_pdrop", 0.1)
    cfg = ModelConfig(
        vocab_size=_int(c, "vocab_size", 50257),
        context_length=_int(c, "n_positions", 1024),
        n_layer=_int(c, "n_layer", 12),
        n_head=_int(c, "n_head", 12),
        d_model=d,
        mlp=mlp,
        norm="layernorm",
        positions="learned",
        bias=True,
        tie_embeddings=bool(c.get("tie_word_embeddings", True)),
        dropout=dropout if 0.0 <= dropout < 1.0 else 0.0,
    )
    return _with_mlp(cfg, c["n_inner"] if c.get("n_inner") is not None else 4 * d)


def _gelu(act: Any) -> Literal["gelu", "gelu_tanh"]:
    """Our MLP for GPT-2's and GPT-Neo's `activation_function`: exact or tanh GELU."""
    if act == "gelu":
        return "gelu"
    if act in ("gelu_new", "gelu_pytorch_tanh"):  # the tanh approximation, two names
        return "gelu_tanh"
    raise InteropError(
        f"activation_function {act!r} is not supported: our GELUs are the exact one ('gelu') "
        "and the tanh approximation ('gelu_new')"
    )


def gpt_neo_model_config(c: dict[str, Any]) -> ModelConfig:
    """GPTNeoConfig -> ours: GPT-2's blocks, unscaled attention, local layers as windows."""
    mlp = _gelu(c.get("activation_function", "gelu_new"))
    _eps(c, "layer_norm_epsilon", 1e-5)
    layers = _int(c, "num_layers", 24)
    kinds = _attention_layers(c.get("attention_types", [[["global", "local"], 12]]))
    if len(kinds) != layers:
        raise InteropError(
            f"config.json: attention_types gives {len(kinds)} layers but num_layers is {layers}"
        )
    window = _int(c, "window_size", 256)
    windows = [window if kind == "local" else 0 for kind in kinds]
    d = _int(c, "hidden_size", 2048)
    dropout = _float(c, "resid_dropout", 0.0)
    cfg = ModelConfig(
        vocab_size=_int(c, "vocab_size", 50257),
        context_length=_int(c, "max_position_embeddings", 2048),
        n_layer=layers,
        n_head=_int(c, "num_heads", 16),
        d_model=d,
        mlp=mlp,
        norm="layernorm",
        positions="learned",
        bias=True,
        tie_embeddings=bool(c.get("tie_word_embeddings", True)),
        dropout=dropout if 0.0 <= dropout < 1.0 else 0.0,
        scale_attention=False,
        attention_windows=windows if any(windows) else [],
    )
    hidden = c.get("intermediate_size")
    return _with_mlp(cfg, hidden if hidden is not None else 4 * d)


def _attention_layers(types: Any) -> list[str]:
    """GPT-Neo's `attention_types` ([[["global", "local"], 12]]) as one kind per layer."""
    kinds: list[str] = []
    try:
        for pattern, repeat in types:
            if isinstance(repeat, bool) or not isinstance(repeat, int) or not 0 < repeat <= 4096:
                raise ValueError
            if not isinstance(pattern, list):
                raise ValueError
            for kind in list(pattern) * repeat:
                if kind not in ("global", "local"):
                    raise InteropError(f"attention type {kind!r} is not supported (global, local)")
                kinds.append(kind)
                if len(kinds) > 4096:
                    raise ValueError
    except (TypeError, ValueError):
        raise InteropError(
            "config.json: attention_types must be a list of [[kinds...], count] pairs"
        ) from None
    return kinds


def _with_mlp(cfg: ModelConfig, hidden: Any) -> ModelConfig:
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise InteropError(f"config.json: the MLP width must be a positive integer, got {hidden!r}")
    if hidden != mlp_hidden_size(cfg):
        cfg = dataclasses.replace(cfg, mlp_hidden=hidden)
    try:
        cfg.validate()
    except SlmError as exc:
        raise InteropError(f"config.json describes a model ours cannot be: {exc}") from None
    return cfg


# ---- weights -------------------------------------------------------------------------------
def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    if index.is_file():
        spec = read_json(index, CONFIG_LIMIT)
        try:
            weight_map = spec["weight_map"]
            names = sorted(set(weight_map.values()))
        except (KeyError, TypeError, AttributeError):
            raise InteropError(f"{index} is corrupt (no weight_map)") from None
        for name in names:
            if not isinstance(name, str) or "/" in name or name.startswith("."):
                raise InteropError(f"{index} names a shard outside the folder: {name!r}")
            if not (folder / name).is_file():
                raise InteropError(f"shard {name} listed in {index.name} is missing")
        return [folder / n for n in names]
    if any((folder / n).exists() for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise InteropError(
            f"{folder} has only pickle weights (pytorch_model.bin), which slm-tui never loads; "
            "re-save the model with safe_serialization=True"
        )
    raise InteropError(f"{folder} has no model.safetensors")


def read_tensors(folder: Path, arch: str) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors files, names normalised (GPT-2 files saved
    without the `transformer.` prefix get it), buffers left out."""
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open has keys(), no iteration)
                    if name.endswith(BUFFERS):
                        continue
                    key = name
                    prefixed = arch in ("gpt2", "gpt_neo")
                    if prefixed and not name.startswith(("transformer.", "lm_head.")):
                        key = "transformer." + name
                    tensors[key] = f.get_tensor(name)
        except SlmError:
            raise
        except Exception as exc:  # safetensors' own error types for bad files
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InteropError(f"{path} is corrupt ({first[:200]})") from None
    return tensors


def check_tensors(tensors: dict[str, torch.Tensor], cfg: ModelConfig, arch: str) -> None:
    expected = expected_hf_shapes(cfg, arch)
    head = tensors.pop("lm_head.weight", None) if cfg.tie_embeddings else None
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    if missing:
        raise InteropError(f"the weights lack {', '.join(missing[:3])} (config.json needs them)")
    if unexpected:
        raise InteropError(
            f"the weights hold tensors our model has no place for: {', '.join(unexpected[:3])}"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise InteropError(
                f"{name} is {list(tensors[name].shape)} but config.json gives {list(shape)}"
            )
    if head is not None:
        embed = tensors[
            "model.embed_tokens.weight" if arch == "llama" else "transformer.wte.weight"
        ]
        if head.shape != embed.shape or not torch.equal(head.float(), embed.float()):
            raise InteropError(
                "config.json ties the head to the embedding, but lm_head.weight differs"
            )


def _dtype(tensors: dict[str, torch.Tensor]) -> torch.dtype:
    kinds = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(kinds) == 1 and next(iter(kinds)) in (torch.float32, torch.float16, torch.bfloat16):
        return next(iter(kinds))
    return torch.float32


# ---- the import ----------------------------------------------------------------------------
def import_hf(source: str | Path, output: str | Path, *, force: bool = False) -> ImportResult:
    """Import the HF folder `source` as a checkpoint at `output` (see the module docstring)."""
    src, dest = Path(source).expanduser(), Path(output).expanduser()
    config = read_hf_config(src)
    cfg, arch = model_config(config)
    check_apart(src, dest, "model folder")
    check_destination(dest, force, is_ours=is_checkpoint)
    tensors = read_tensors(src, arch)
    check_tensors(tensors, cfg, arch)
    biases = [t for name, t in tensors.items() if name.endswith(".bias")]
    if cfg.bias and biases and all(not t.any() for t in biases):
        cfg = dataclasses.replace(cfg, bias=False)
    dtype = _dtype(tensors)
    with tempfile.TemporaryDirectory(prefix="slm-import-") as work:
        tok = import_tokenizer(src, Path(work))
        if tok.vocab_size != cfg.vocab_size:
            raise InteropError(
                f"the tokenizer has {tok.vocab_size} ids but the model's vocab_size is "
                f"{cfg.vocab_size}; our checkpoints need them equal"
            )
        for key, ours in (("bos_token_id", tok.bos_id), ("eos_token_id", tok.eos_id)):
            theirs = config.get(key)
            if isinstance(theirs, int) and not isinstance(theirs, bool) and theirs != ours:
                raise InteropError(f"config.json's {key} is {theirs} but the tokenizer's is {ours}")
        state = from_hf(tensors, cfg, arch)
        model = GPT(cfg)
        if cfg.tie_embeddings:
            state["lm_head.weight"] = state["tok_emb.weight"]
        with torch.no_grad():
            model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        model.eval()
        run_config = Config(
            model=cfg, tokenizer=TokenizerConfig(kind=tok.kind, vocab_size=tok.vocab_size)
        )
        meta = {
            "step": 0,
            "tokens_seen": 0,
            "imported_from": str(src.resolve()),
            "source_format": "hf",
            "source_architecture": HF_CLASSES[arch],
        }
        path = save_checkpoint(dest, model, run_config, tok, meta, weights_dtype=dtype)
    return ImportResult(path, arch, tok.kind, model.num_params(), str(dtype).removeprefix("torch."))
