"""Typed run configuration: four dataclass sections (model, tokenizer, data, train).

A config is plain data: dataclasses with defaults, choices typed as `Literal`, every value
type-checked when it is read (`_coerce`, used by `slm_tui.presets`, which reads presets,
YAML files and dotted overrides). Sizes are bounded (`LIMITS`) and every number finite
(`rope_theta` at least 1), so a config asking for a 1e11-token context or a NaN RoPE base
(a config may come from a stranger's checkpoint) is one `ConfigError` line, not an
allocation failure or a run that trains into NaN.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import yaml

from slm_tui.briefs import MAX_WORDS as MAX_BRIEF_WORDS
from slm_tui.errors import ConfigError, GenerationError
from slm_tui.generation.settings import SamplingSettings
from slm_tui.untrusted import (
    short_repr,
)

DEFAULT_DATASET = "roneneldan/TinyStories"
# The largest value each size may take: far beyond any small model (imports included: a
# 128k context is allowed), small enough that nothing is asked to allocate the impossible.
LIMITS = {
    "model.vocab_size": 1 << 24,
    "model.context_length": 1 << 17,
    "model.n_layer": 1024,
    "model.n_head": 1024,
    "model.d_model": 1 << 16,
    "model.mlp_hidden": 1 << 18,
    "tokenizer.vocab_size": 1 << 24,
    "train.batch_size": 1 << 16,
    "train.grad_accum": 1 << 16,
    "train.eval_batches": 1 << 20,
    "train.sample_tokens": 1 << 16,
    "train.threads": 4096,
}
MAX_MIN_LR_RATIO = 10.0  # above 1: a schedule that rises (seed-notebook); 10 bounds typos
MAX_PARAMS = 10_000_000_000  # 40 GB of float32 weights: not a small language model


def _finite(section: Any, prefix: str) -> None:
    """Every number of a section is finite: NaN or infinity in a config (YAML `.nan`, JSON
    `NaN`, `1e999`) only ever trains into NaN or breaks the model."""
    for f in fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name} must be a finite number, got {value}")


def _bounded(section: Any, prefix: str) -> None:
    for key, most in LIMITS.items():
        name = key.removeprefix(prefix)
        value = getattr(section, name, None) or 0
        if key.startswith(prefix) and value > most:
            got = f"{value:,}" if value < 1e15 else f"{value:.3g}"
            raise ConfigError(f"{key} must be at most {most:,}, got {got}")


@dataclass
class ModelConfig:
    """The transformer's shape. Defaults: rotary positions, RMSNorm, SwiGLU, tied head, no biases."""

    vocab_size: int | None = None  # None: taken from the tokenizer; if set, must match it
    context_length: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # grouped-query attention; None = n_head (plain MHA)
    d_model: int = 256
    mlp: Literal["swiglu", "gelu", "gelu_tanh"] = "swiglu"  # gelu_tanh: GPT-2's "gelu_new"
    mlp_hidden: int | None = None  # None: 4*d for gelu, 8/3*d rounded up to 32 for swiglu
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    positions: Literal["rope", "learned"] = "rope"
    rope_theta: float = 10000.0
    bias: bool = False
    tie_embeddings: bool = True
    dropout: float = 0.0
    # Dropout on the attention probabilities; None: model.dropout (GPT-2's attn_pdrop). On a
    # CPU it is the costly part: at the demo's shape, dropout 0.1 everywhere halved training
    # speed (2,750 vs 5,300 tok/s on 2 AMD EPYC cores); on the residuals alone the run
    # trained at ~4,500 tok/s (docs/demo-model.md).
    attention_dropout: float | None = None
    # Attention scores q.k / sqrt(head_dim); false: q.k unscaled (GPT-Neo's attention).
    scale_attention: bool = True
    # Empty: every layer attends to every earlier position. Else one entry per layer: 0 for
    # that, w > 0 for a local layer whose queries see themselves and the w - 1 positions
    # before them (GPT-Neo's alternating global/local layers, window 256).
    attention_windows: list[int] = field(default_factory=list)

    @property
    def attn_dropout(self) -> float:
        """The dropout on attention probabilities in effect (attention_dropout or dropout)."""
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    def validate(self) -> None:
        _finite(self, "model.")
        _bounded(self, "model.")
        _choices(self, "model.")
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "d_model"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})"
            )
        head_dim = self.d_model // self.n_head
        if self.positions == "rope" and head_dim % 2:
            raise ConfigError(f"rotary positions need an even head size, got {head_dim}")
        kv = self.n_kv_head or self.n_head
        if kv < 1 or self.n_head % kv:
            raise ConfigError(f"model.n_kv_head ({kv}) must divide model.n_head ({self.n_head})")
        if not self.rope_theta >= 1.0:  # the RoPE base: frequencies theta^(-2i/d) must fall
            raise ConfigError(f"model.rope_theta must be at least 1, got {self.rope_theta}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(
                f"model.attention_dropout must be in [0, 1), got {self.attention_dropout}"
            )
        if self.attention_windows and len(self.attention_windows) != self.n_layer:
            raise ConfigError(
                f"model.attention_windows has {len(self.attention_windows)} entries for "
                f"{self.n_layer} layers; give one per layer (0: global) or none"
            )
        if any(not 0 <= w <= LIMITS["model.context_length"] for w in self.attention_windows):
            raise ConfigError(
                f"model.attention_windows must be 0 (global) or a window of at most "
                f"{LIMITS['model.context_length']:,} positions, got {short_repr(self.attention_windows)}"
            )
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            raise ConfigError(f"model.mlp_hidden must be at least 1, got {self.mlp_hidden}")
        # Embeddings (input and head) plus per block attention (4 d^2) and the MLP (3 d h).
        hidden = self.mlp_hidden or 4 * self.d_model
        params = 2 * (self.vocab_size or 0) * self.d_model + self.n_layer * (
            4 * self.d_model**2 + 3 * self.d_model * hidden
        )
        if params > MAX_PARAMS:
            raise ConfigError(
                f"this model shape has about {params / 1e9:,.0f}B parameters, more than the "
                f"{MAX_PARAMS / 1e9:.0f}B this program builds; lower model.d_model or model.n_layer"
            )


@dataclass
class TokenizerConfig:
    """Which tokenizer a run uses: an existing directory (`path`) or one trained from the corpus."""

    kind: str = "sentencepiece-bpe"
    vocab_size: int = 4096
    path: str | None = None  # an existing tokenizer directory; else train one into the run
    max_sentences: int = 2_000_000  # sentencepiece samples at most this many sentences
    # gpt2 (pretrained) only: GPT-2's encoder.json, to build it offline (else tiktoken's)
    vocab_file: str | None = None

    def validate(self) -> None:
        _finite(self, "tokenizer.")
        _bounded(self, "tokenizer.")
        if self.vocab_size < 1:
            raise ConfigError(f"tokenizer.vocab_size must be positive, got {self.vocab_size}")


# The most shard-writing processes (`data.workers`, `slm-train data --workers`): a typo such
# as 2000 must not start thousands of processes.
MAX_SHARD_WORKERS = 256


@dataclass
class DataConfig:
    """Where stories come from and where token shards go."""

    dataset: str | None = DEFAULT_DATASET  # Hugging Face id, used when data_files is empty
    data_files: list[str] = field(default_factory=list)  # local files or globs
    train_split: str = "train"
    val_split: str = "validation"
    val_fraction: float = 0.005  # held out when the source has no validation split
    # Local files (or globs) to validate on instead: in-run validation, best/ and the loss
    # plot use them; a story that is also in the training text is refused.
    val_files: list[str] = field(default_factory=list)
    shards_dir: str | None = None  # None: the user cache folder
    workers: int = 0  # processes encoding the shards: 0 one per CPU core, 1 the trainer's own
    # Story briefs (slm_tui/briefing.py): the fraction of training stories written after
    # their brief ("Words: ...\nName: ...\nFeatures: ...\nStory:\n"), and the words a
    # whole brief names. Validation text stays plain. 0: no briefs.
    briefs: float = 0.0
    brief_words: int = 3
    # The fraction of training stories written with a blank line between paragraphs (each
    # single line break doubled), so a model knows both layouts TinyStories comes in: the V1
    # validation split separates paragraphs with blank lines, the train-split dumps with one
    # line break. Validation text stays as written. 0: stories as written.
    blank_lines: float = 0.0

    def validate(self) -> None:
        _finite(self, "data.")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if not 0 <= self.workers <= MAX_SHARD_WORKERS:
            raise ConfigError(
                "data.workers must be 0 (one per CPU core) or a number of processes up to "
                f"{MAX_SHARD_WORKERS}, got {self.workers}"
            )
        if not 0.0 <= self.briefs <= 1.0:
            raise ConfigError(f"data.briefs must be a fraction in [0, 1], got {self.briefs}")
        if not 0.0 <= self.blank_lines <= 1.0:
            raise ConfigError(
                f"data.blank_lines must be a fraction in [0, 1], got {self.blank_lines}"
            )
        if not 0 <= self.brief_words <= MAX_BRIEF_WORDS:
            raise ConfigError(
                f"data.brief_words must be from 0 to {MAX_BRIEF_WORDS}, got {self.brief_words}"
            )


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation and checkpoint cadence, device."""

    max_steps: int = 2000
    batch_size: int = 32  # global, in sequences per optimizer step (before grad_accum split)
    grad_accum: int = 1
    optimizer: Literal["adamw", "muon"] = "adamw"  # muon: Muon for matrices, AdamW the rest
    lr: float = 1e-3
    muon_lr: float = 0.02
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak
    warmup_steps: int = 100
    schedule: Literal["cosine", "wsd"] = "cosine"  # wsd: warmup-stable-decay
    decay_fraction: float = 0.2  # wsd: the share of steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables
    eval_every: int = 250
    eval_batches: int = 20
    save_every: int = 250
    log_every: int = 10
    sample_tokens: int = 48  # tokens of each sample continuation written at evaluation; 0: none
    sample_prompts: list[str] = field(
        default_factory=lambda: ["Once upon a time", "The little dog", "Lily wanted to"]
    )
    # How those samples are drawn (the engine's sampler; row i uses seed train.seed + i).
    sample_temperature: float = 0.7
    sample_top_k: int = 20
    sample_top_p: float = 1.0
    sample_min_p: float = 0.0
    sample_repetition_penalty: float = 1.0
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # auto: decided from the machine (trainer/speed.py; the run's first lines say why)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # bfloat16: autocast
    compile: bool | Literal["auto"] = "auto"
    threads: int = 0  # CPU intra-op threads; 0 = one per physical core
    # Also keep a checkpoint at every evaluation, evals/step-NNNNNN/ (weights, config,
    # tokenizer; no optimizer state): two points of one run side by side in slm-tui.
    keep_every_eval: bool = False
    # Also write TensorBoard event files into <output>/tensorboard (metrics.jsonl stays
    # the source of truth); needs pip install 'slm-tui[tensorboard]'.
    tensorboard: bool = False

    def validate(self) -> None:
        _finite(self, "train.")
        _bounded(self, "train.")
        _choices(self, "train.")
        for name in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "eval_every",
            "eval_batches",
            "save_every",
            "log_every",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        # Above 1 the cosine rises instead of decaying: the seed notebook's min_lr (5e-4) over
        # its peak (1e-4), which the seed-notebook preset reproduces.
        if not 0.0 <= self.min_lr_ratio <= MAX_MIN_LR_RATIO:
            raise ConfigError(
                f"train.min_lr_ratio must be in [0, {MAX_MIN_LR_RATIO:g}], got {self.min_lr_ratio}"
            )
        if self.sample_tokens < 0:
            raise ConfigError(f"train.sample_tokens must be >= 0, got {self.sample_tokens}")
        self.sample_settings()
        self.micro_batch_size(world_size=1)

    def micro_batch_size(self, world_size: int) -> int:
        """Rows per micro-step on each of `world_size` processes; ConfigError when the global
        batch does not split evenly into grad_accum micro-batches on every process."""
        parts = self.grad_accum * world_size
        if self.batch_size % parts:
            processes = f" x processes ({world_size}) = {parts}" if world_size > 1 else ""
            raise ConfigError(
                f"train.batch_size ({self.batch_size}) must be divisible by "
                f"train.grad_accum ({self.grad_accum}){processes}"
            )
        return self.batch_size // parts

    def sample_settings(self) -> SamplingSettings:
        """The sampling settings of the continuations written at each evaluation."""
        try:
            return SamplingSettings(
                temperature=self.sample_temperature,
                top_k=self.sample_top_k,
                top_p=self.sample_top_p,
                min_p=self.sample_min_p,
                repetition_penalty=self.sample_repetition_penalty,
                max_new_tokens=max(1, self.sample_tokens),
            )
        except GenerationError as exc:  # its message starts with the field's name
            raise ConfigError(f"train.sample_{exc}") from None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        self.model.validate()
        self.tokenizer.validate()
        self.data.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "tokenizer": TokenizerConfig,
    "data": DataConfig,
    "train": TrainConfig,
}


def _choices(section: Any, prefix: str) -> None:
    """Every field typed with a `Literal` holds one of its values (a config built in Python
    is not checked by `_coerce` on the way in)."""
    for name, tp in _field_types(type(section)).items():
        if typing.Literal in (typing.get_origin(tp), *map(typing.get_origin, typing.get_args(tp))):
            _coerce(prefix + name, getattr(section, name), tp)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; convert the harmless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, str) and value in allowed:
            return value
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {short_repr(value)}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        words = [w for a in args for w in _type_words(a)]
        names = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
        raise ConfigError(f"{key} must be {names}, got {short_repr(value)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str) and item is str:
            return [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {short_repr(value)}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {short_repr(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {short_repr(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {short_repr(value)}")
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover


def _type_words(tp: Any) -> list[str]:
    """How an error names a type: each value a Literal or bool allows, else the type."""
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    if tp is bool:
        return ["true", "false"]
    return ["null" if tp is type(None) else _type_name(tp)]


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def copy_config(cfg: Config) -> Config:
    """A copy that shares nothing with `cfg` (lists included)."""
    return copy.deepcopy(cfg)
