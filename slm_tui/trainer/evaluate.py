"""Measuring a model: validation loss during training, whole-corpus evaluation, samples.

- `val_metrics`: mean nats per target token over the first `eval_batches` windows of the
  validation shard (`iter_eval_windows`, non-overlapping), and bits per byte from the
  shard's own token/byte ratio: nats/token x tokens/byte / ln 2.
- `evaluate`: a checkpoint on a whole corpus with the checkpoint's own tokenizer, streamed:
  stories are encoded BOS + text + EOS in chunks and cut into non-overlapping windows of
  `context_length` targets, the last partial window included, so every token after the first
  is predicted exactly once. bits per byte = sum of nats / ln 2 / UTF-8 bytes of the stories.
- `sample_continuations`: a few short continuations of fixed prompts (temperature 0.7,
  top-k 20) from a private generator seeded per call, so sampling never moves the global RNG
  that dropout draws from (resuming stays exact).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slm_tui.errors import ConfigError, DataError

LN2 = math.log(2.0)


def autocast_for(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (dtype auto/bfloat16) or when bfloat16 is asked for; else none."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def sum_nats(
    model: nn.Module, windows: Iterator[np.ndarray], device: torch.device, dtype: str = "auto"
) -> tuple[float, int]:
    """(sum of nats, number of targets) over (b, t+1) token windows."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for win in windows:
        batch = torch.from_numpy(np.ascontiguousarray(win, dtype=np.int64)).to(device)
        x, y = batch[:, :-1], batch[:, 1:].contiguous()  # (b, t)
        with autocast_for(device, dtype):
            _, loss = model(x, y, reduction="sum")
        total += loss.double()
        count += y.numel()
    return float(total.item()), count


def val_metrics(
    model: nn.Module,
    shard: Any,
    seq_len: int,
    batch_size: int,
    max_batches: int,
    device: torch.device,
    dtype: str = "auto",
) -> dict[str, float]:
    """Validation loss (nats/token) and bits per byte on the first windows of `shard`."""
    from slm_tui.data import iter_eval_windows

    was_training = model.training
    model.eval()
    try:
        nats, count = sum_nats(
            model, iter_eval_windows(shard, seq_len, batch_size, max_batches), device, dtype
        )
    finally:
        model.train(was_training)
    if count == 0:
        raise DataError(
            f"the validation shard {shard.path} has {shard.num_tokens} tokens, too few for "
            f"one window of {seq_len + 1}; use a larger corpus or a smaller model.context_length"
        )
    loss = nats / count
    bpb = loss * shard.num_tokens / max(1, shard.num_bytes) / LN2
    return {"val_loss": loss, "val_bpb": bpb, "val_tokens": count}


@torch.no_grad()
def sample_continuations(
    model: nn.Module,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    device: torch.device,
    seed: int = 0,
    dtype: str = "auto",
) -> list[dict[str, str]]:
    """Short continuations of `prompts` (temperature 0.7, top-k 20), for watching progress."""
    if max_new_tokens <= 0 or not prompts:
        return []
    ctx = model.cfg.context_length
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    try:
        for prompt in prompts:
            ids = [tokenizer.bos_id, *tokenizer.encode(prompt)][-ctx:]
            new: list[int] = []
            for _ in range(max_new_tokens):
                x = torch.tensor([(ids + new)[-ctx:]], dtype=torch.long, device=device)
                with autocast_for(device, dtype):
                    logits, _ = model(x, last_only=True)
                logits = logits[0, -1].float() / 0.7  # (V,)
                top = torch.topk(logits, min(20, logits.numel()))
                probs = torch.softmax(top.values, dim=-1)
                choice = int(top.indices[torch.multinomial(probs, 1, generator=gen)].item())
                if choice == tokenizer.eos_id:
                    break
                new.append(choice)
            # Decode with the prompt so a leading-space piece keeps its space ("▁lived").
            head = tokenizer.decode(ids[1:])
            full = tokenizer.decode(ids[1:] + new)
            text = full[len(head) :] if full.startswith(head) else tokenizer.decode(new)
            out.append({"prompt": prompt, "text": text})
    finally:
        model.train(was_training)
    return out


def _stream_windows(
    tokens: Iterator[np.ndarray], seq_len: int, batch_size: int
) -> Iterator[np.ndarray]:
    """Cut a stream of token chunks into (b, seq_len+1) windows with stride seq_len.

    Consecutive windows share one token (the last input of one is the first of the next),
    so each token after the very first is a target exactly once; the tail comes last as a
    shorter (1, n+1) window."""
    need = batch_size * seq_len + 1
    buf = np.zeros(0, dtype=np.int64)
    for chunk in tokens:
        buf = np.concatenate([buf, chunk.astype(np.int64, copy=False)])
        while buf.size >= need:
            idx = np.arange(batch_size)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
            yield buf[idx]  # (b, seq_len+1)
            buf = buf[batch_size * seq_len :]
    while buf.size > 1:
        n = min(seq_len, buf.size - 1)
        yield buf[None, : n + 1]
        buf = buf[n:]


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
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Loss (nats/token) and bits per byte of a checkpoint on a corpus, with its own tokenizer.

    No corpus given: the checkpoint's own validation shard (its config must name a corpus).
    `max_tokens` stops reading stories once that many tokens are collected (whole stories,
    so bits per byte stays exact for what was read)."""
    from slm_tui.checkpoints import load_checkpoint, resolve_checkpoint
    from slm_tui.trainer.distributed import pick_device

    dev = pick_device(device)
    path = resolve_checkpoint(checkpoint)
    loaded = load_checkpoint(path, device=dev)
    model, tok, cfg = loaded.model, loaded.tokenizer, loaded.config
    supported = model.cfg.context_length
    seq_len = context_length or supported
    if seq_len > supported:
        raise ConfigError(
            f"context length {seq_len} is larger than the checkpoint supports ({supported})"
        )
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 2:
        raise ConfigError(f"--max-tokens must be at least 2, got {max_tokens}")
    model.eval()
    started = time.perf_counter()
    stats = {"stories": 0, "bytes": 0, "read_tokens": 0}
    if dataset or data_files:
        from slm_tui.data import corpus_source, iter_stories

        source = corpus_source(dataset, data_files, split=split or "validation")
        corpus = ", ".join(source.data_files) if source.data_files else source.dataset

        def chunks() -> Iterator[np.ndarray]:
            batch: list[str] = []

            def flush() -> np.ndarray:
                parts = []
                for story, ids in zip(batch, tok.encode_batch(batch), strict=True):
                    parts.append(np.asarray([tok.bos_id, *ids, tok.eos_id], dtype=np.int64))
                    stats["stories"] += 1
                    stats["bytes"] += len(story.encode("utf-8"))
                    stats["read_tokens"] += parts[-1].size
                    if max_tokens and stats["read_tokens"] >= max_tokens:
                        break  # whole stories only, so the byte count stays exact
                batch.clear()
                return np.concatenate(parts)

            for story in iter_stories(source):
                batch.append(story)
                if len(batch) >= 256:
                    yield flush()
                    if max_tokens and stats["read_tokens"] >= max_tokens:
                        return
            if batch:
                yield flush()

        token_stream: Iterator[np.ndarray] = chunks()
    else:
        shard = _own_val_shard(cfg, tok)
        corpus = f"validation shard {shard.path}"
        stats["stories"] = int(shard.meta.get("stories", 0))
        stats["bytes"] = shard.num_bytes
        arr = shard.tokens
        if max_tokens and max_tokens < arr.shape[0]:
            # A prefix of the shard: its bytes are unknown, scale by the shard's ratio below.
            arr = arr[:max_tokens]
        stats["read_tokens"] = int(arr.shape[0])
        token_stream = iter([np.asarray(arr)])

    total = 0.0
    count = 0
    with torch.no_grad():
        for win in _stream_windows(token_stream, seq_len, batch_size):
            nats, n = sum_nats(model, iter([win]), dev, cfg.train.dtype)
            total += nats
            count += n
            if progress is not None:
                progress({"tokens": count, "loss": total / max(1, count)})
    if count == 0:
        raise DataError(f"{corpus} holds no text to evaluate")
    loss = total / count
    nbytes = stats["bytes"]
    if not (dataset or data_files) and stats["read_tokens"] < shard.num_tokens:
        nbytes = shard.num_bytes * stats["read_tokens"] / shard.num_tokens
    return {
        "loss": loss,
        "bpb": total / LN2 / max(1, nbytes),
        "tokens": count,
        "bytes": int(nbytes),
        "stories": stats["stories"],
        "perplexity": math.exp(min(loss, 700.0)),
        "checkpoint": str(path),
        "corpus": corpus,
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "context_length": seq_len,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _own_val_shard(cfg: Any, tok: Any) -> Any:
    """The validation shard of the corpus the checkpoint's config names (built if missing)."""
    from slm_tui.trainer.prepare import corpus_sources, shards_for

    if not cfg.data.data_files and not cfg.data.dataset:
        raise ConfigError(
            "the checkpoint's config names no corpus; pass --data-files F or --dataset ID"
        )
    source, val_source = corpus_sources(cfg)
    return shards_for(cfg, source, val_source, tok).val
