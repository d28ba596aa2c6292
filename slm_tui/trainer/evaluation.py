"""Measuring a model: validation loss and bits per byte, in the run and on a whole corpus;
sample continuations.

In-run validation (`validate`) and `slm-train eval` (`evaluate`) share the windows and the
definition of bits per byte, so the two agree on the same text:
- Windows come from `data.iter_windows`: `context_length` targets each, stride
  `context_length`, the tail shorter than a window included. Every token after the very
  first is a target exactly once, BOS and EOS included (a story's EOS, and the next story's
  BOS after it, are predictions the model makes; the very first BOS is only context; where
  BOS is the EOS token, GPT-2's <|endoftext|>, one stands between two stories, as in the
  shards).
- Loss is the mean of nats over those targets. Bits per byte (`Measure.bpb`) is the sum of
  nats / ln 2 / UTF-8 bytes of the story text the targets cover. A partial cover of a shard
  (the first `train.eval_batches` batches, `--max-tokens`) counts the shard's bytes scaled
  by the share of its targets covered, so a full cover counts exactly the shard's bytes; a
  corpus read with `--max-tokens` stops at a story boundary and counts its bytes exactly.
- Both compute alike: `evaluate` runs in the dtype the checkpoint's run recorded (on the
  same kind of device; `dtype` overrides) under training's matmul precision (TF32 on CUDA),
  through the same uncompiled model code as the in-run validation.
- `sample_continuations`: continuations of `train.sample_prompts` through the generation
  engine (`generate_batch`, KV cache, `TrainConfig.sample_settings()`), row i seeded with
  `train.seed + i` on its own generator, so sampling never moves the global RNG that
  dropout draws from (resuming stays exact).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from slm_tui.checkpoint.format import record_evaluation
from slm_tui.checkpoint.io import load_checkpoint, resolve_checkpoint
from slm_tui.checkpoint.records import RecordedEval
from slm_tui.config import Config, TrainConfig
from slm_tui.corpus import CorpusSource, source_fingerprint
from slm_tui.devices import resolve_device
from slm_tui.errors import ConfigError, DataError
from slm_tui.generation import generate_batch
from slm_tui.shards import TokenShard, corpus_source, iter_stories, iter_windows
from slm_tui.tokenizers import Tokenizer
from slm_tui.trainer.prepare import corpus_sources, shards_for
from slm_tui.trainer.report import Sample
from slm_tui.trainer.speed import eval_dtype, set_matmul_precision

LN2 = math.log(2.0)


def autocast_for(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (dtype auto/bfloat16) or when bfloat16 is asked for; else none."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Measure:
    """Nats summed over target tokens, and the UTF-8 bytes of the text they cover."""

    nats: float
    targets: int
    bytes: float

    @property
    def loss(self) -> float:
        """Mean nats per target token."""
        return self.nats / max(1, self.targets)

    @property
    def bpb(self) -> float:
        """Bits per byte: sum of nats / ln 2 / UTF-8 bytes."""
        return self.nats / LN2 / max(1.0, self.bytes)


def shard_bytes_covered(shard: TokenShard, targets: int) -> float:
    """UTF-8 bytes of `shard` that `targets` of its targets stand for (all of them: exactly
    the shard's bytes). A shard of N tokens has N - 1 targets."""
    return shard.num_bytes * targets / max(1, shard.num_tokens - 1)


@torch.no_grad()
def sum_nats(
    model: nn.Module,
    windows: Iterable[np.ndarray],
    device: torch.device,
    dtype: str = "auto",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[float, int]:
    """(sum of nats, number of targets) over (b, t+1) token windows.

    `progress(targets so far, mean loss so far)` after each window batch (a host sync)."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for win in windows:
        batch = torch.from_numpy(np.ascontiguousarray(win, dtype=np.int64)).to(device)
        x, y = batch[:, :-1], batch[:, 1:].contiguous()  # (b, t)
        with autocast_for(device, dtype):
            _, loss = model(x, y, reduction="sum")
        total += loss.double()
        count += y.numel()
        if progress is not None:
            progress(count, float(total.item()) / count)
    return float(total.item()), count


def validate(
    model: nn.Module,
    shard: TokenShard,
    seq_len: int,
    batch_size: int,
    max_batches: int,
    device: torch.device,
    dtype: str = "auto",
) -> Measure:
    """Loss and bits per byte on the first `max_batches` window batches of `shard`."""
    was_training = model.training
    model.eval()
    try:
        windows = iter_windows(shard.tokens, seq_len, batch_size, max_batches)
        nats, count = sum_nats(model, windows, device, dtype)
    finally:
        model.train(was_training)
    if count == 0:
        raise DataError(
            f"the validation shard {shard.path} has {shard.num_tokens} tokens, too few to "
            "evaluate; use a larger corpus"
        )
    return Measure(nats, count, shard_bytes_covered(shard, count))


def sample_continuations(model: nn.Module, tokenizer: Tokenizer, tc: TrainConfig) -> list[Sample]:
    """Continuations of `tc.sample_prompts` (`tc.sample_tokens` at most; none when 0).

    `model` is the raw model (not compiled, not DDP-wrapped); it is switched to eval mode
    (dropout off) while sampling and put back as it was."""
    prompts = list(tc.sample_prompts)
    if tc.sample_tokens <= 0 or not prompts:
        return []
    was_training = model.training
    model.eval()
    try:
        results = generate_batch(
            model,
            tokenizer,
            prompts,
            tc.sample_settings(),
            seeds=[tc.seed + i for i in range(len(prompts))],
        )
    finally:
        model.train(was_training)
    return [Sample(prompt=r.prompt, text=r.text) for r in results]


@dataclass
class EvalResult:
    """What `slm-train eval` reports (`--json` prints these fields in this order)."""

    loss: float  # nats per target token
    bpb: float  # bits per byte
    tokens: int  # targets
    bytes: int  # UTF-8 bytes of the text the targets cover
    stories: int
    perplexity: float
    checkpoint: str
    corpus: str
    tokenizer: str
    vocab_size: int
    context_length: int
    seconds: float
    # (added later, so after the rest:)
    dtype: str  # float32 | bfloat16: what the forward passes ran in (speed.choose)
    name: str  # the corpus in short ("valid.txt"), as --record keeps it
    fingerprint: str  # sha256 of the corpus's contents (or dataset id and split)
    weights_sha256: str | None  # of the weights scored (meta.json's; None: an older checkpoint)


class _StoryTokens:
    """A corpus as a stream of token chunks (BOS + ids + EOS per story, as shards.py writes
    shards), counting what it read.

    With `max_tokens`, stops after the story that reaches it (whole stories only, so the
    byte count stays exact)."""

    BATCH = 256  # stories per encode_batch call

    def __init__(self, stories: Iterable[str], tok: Tokenizer, max_tokens: int | None) -> None:
        self.source, self.tok, self.max_tokens = stories, tok, max_tokens
        self.stories = self.bytes = self.tokens = 0

    def _full(self) -> bool:
        if not self.max_tokens:
            return False
        return self.tokens >= self.max_tokens

    def _encode(self, batch: list[str]) -> np.ndarray:
        parts = []
        bos, eos = self.tok.bos_id, self.tok.eos_id
        for story, ids in zip(batch, self.tok.encode_batch(batch), strict=True):
            # As the shards are written (shards.py): a BOS that is the EOS token (GPT-2's
            # <|endoftext|>) only at the start; the previous story's EOS is it.
            head = [bos] if bos != eos or self.tokens == 0 else []
            parts.append(np.asarray([*head, *ids, eos], dtype=np.int64))
            self.stories += 1
            self.bytes += len(story.encode("utf-8"))
            self.tokens += parts[-1].size
            if self._full():
                break
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[np.ndarray]:
        batch: list[str] = []
        for story in self.source:
            batch.append(story)
            if len(batch) >= self.BATCH:
                yield self._encode(batch)
                batch = []
                if self._full():
                    return
        if batch:
            yield self._encode(batch)


TrainDtype = Literal["auto", "float32", "bfloat16"]
_DTYPES: tuple[TrainDtype, ...] = ("auto", "float32", "bfloat16")


def _dtype_choice(value: str | None) -> TrainDtype | None:
    """`--dtype` as `train.dtype` takes it (None: the checkpoint's own); ConfigError if not one."""
    if value is None:
        return None
    for choice in _DTYPES:
        if value == choice:
            return choice
    raise ConfigError(f"--dtype must be auto, float32 or bfloat16, got {value!r}")


def evaluate(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_files: list[str] | None = None,
    split: str | None = None,
    batch_size: int = 16,
    max_tokens: int | None = None,
    context_length: int | None = None,
    device: str = "auto",
    dtype: str | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> EvalResult:
    """Loss (nats/token) and bits per byte of a checkpoint on a corpus, with its own tokenizer.

    No corpus given: the checkpoint's own validation shard (its config must name a corpus).
    `max_tokens` stops reading once that many tokens are collected (whole stories from a
    corpus; a prefix of the shard). `dtype` (auto, float32, bfloat16) overrides the
    checkpoint's `train.dtype`. `progress(targets, mean loss)` as windows are scored."""
    chosen = _dtype_choice(dtype)
    dev = resolve_device(device)
    path = resolve_checkpoint(checkpoint)
    loaded = load_checkpoint(path, device=dev)
    model, tok, cfg = loaded.model, loaded.tokenizer, loaded.config
    supported = model.cfg.context_length
    seq_len = context_length or supported
    if seq_len > supported:
        raise ConfigError(
            f"context length {seq_len} is larger than the checkpoint supports ({supported})"
        )
    if not 1 <= batch_size <= 1 << 16:
        raise ConfigError(f"--batch-size must be from 1 to 65,536, got {batch_size}")
    if max_tokens is not None and max_tokens < 2:
        raise ConfigError(f"--max-tokens must be at least 2, got {max_tokens}")
    model.eval()
    if chosen is not None:
        cfg.train.dtype = chosen
    # What the in-run validation computed in: the run's recorded dtype (on this kind of
    # device) and training's matmul precision.
    dtype = eval_dtype(cfg.train, dev, model.cfg, batch_size, loaded.info.speed)
    set_matmul_precision(dev)
    started = time.perf_counter()
    if dataset or data_files:
        source = corpus_source(dataset, data_files, split=split or "validation")
        corpus = ", ".join(source.data_files) if source.data_files else str(source.dataset)
        name, fingerprint = _corpus_name(source), source_fingerprint(source)
        stream = _StoryTokens(iter_stories(source), tok, max_tokens)
        nats, count = sum_nats(
            model, iter_windows(stream, seq_len, batch_size), dev, dtype, progress
        )
        measure = Measure(nats, count, stream.bytes)
        stories = stream.stories
    else:
        shard = _own_val_shard(cfg, tok)
        corpus = f"validation shard {shard.path}"
        fingerprint = f"{shard.meta.get('source_fingerprint', '')}:val"
        if cfg.data.val_files:
            name = _corpus_name(corpus_source(None, cfg.data.val_files))
        else:
            name = f"stories held out of {_corpus_name(corpus_sources(cfg)[0])}"
        tokens = shard.tokens[:max_tokens] if max_tokens else shard.tokens
        nats, count = sum_nats(
            model, iter_windows(tokens, seq_len, batch_size), dev, dtype, progress
        )
        measure = Measure(nats, count, shard_bytes_covered(shard, count))
        stories = shard.num_stories
    if count == 0:
        raise DataError(f"{corpus} holds no text to evaluate")
    return EvalResult(
        loss=measure.loss,
        bpb=measure.bpb,
        tokens=count,
        bytes=int(measure.bytes),
        stories=stories,
        perplexity=math.exp(min(measure.loss, 700.0)),
        checkpoint=str(path),
        corpus=corpus,
        tokenizer=tok.kind,
        vocab_size=tok.vocab_size,
        context_length=seq_len,
        seconds=round(time.perf_counter() - started, 3),
        dtype=dtype,
        name=name,
        fingerprint=fingerprint,
        weights_sha256=loaded.info.weights_sha256,
    )


def _corpus_name(source: CorpusSource) -> str:
    """'valid.txt', 'a.txt, b.txt', 'roneneldan/TinyStories:validation'."""
    if source.data_files:
        return ", ".join(Path(f).name for f in source.data_files)
    return f"{source.dataset}:{source.split}"


def record(result: EvalResult) -> Path:
    """Keep `result` in its checkpoint's meta.json (`slm-train eval --record`); refused when a
    save has replaced the checkpoint since it was scored (its weights are gone)."""
    entry = RecordedEval(
        name=result.name,
        corpus=result.corpus,
        fingerprint=result.fingerprint,
        bpb=result.bpb,
        loss=result.loss,
        tokens=result.tokens,
        dtype=result.dtype,
        date=time.strftime("%Y-%m-%d"),
    )
    return record_evaluation(Path(result.checkpoint), entry, result.weights_sha256)


def _own_val_shard(cfg: Config, tok: Tokenizer) -> TokenShard:
    """The validation shard of the corpus the checkpoint's config names (built if missing)."""
    if not cfg.data.data_files and not cfg.data.dataset:
        raise ConfigError(
            "the checkpoint's config names no corpus; pass --data-files F or --dataset ID"
        )
    source, val_source = corpus_sources(cfg)
    return shards_for(cfg, source, val_source, tok).val


__all__ = [
    "EvalResult",
    "Measure",
    "autocast_for",
    "evaluate",
    "record",
    "sample_continuations",
    "shard_bytes_covered",
    "sum_nats",
    "validate",
]
