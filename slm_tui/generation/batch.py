"""`generate_batch()`: many prompts decoded together, for scripts and `slm-generate`.

Up to `batch_size` rows decode at once through one `Decoder`; prompts join in order of
length (less padding), and as soon as a row ends (EOS, stop string, max tokens) it leaves
and the next prompt is prefilled into its place (continuous batching), so no row waits for
the slowest of its group.

Seeds: row i of the job (the i-th prompt in `prompts`) uses `seeds[i]` when given, else
`settings.seed + i` when the settings have a seed, else a fresh random seed; every result
reports its seed. So `generate_batch(prompts, s)[i]` is the same story as
`generate(prompts[i], s.replace(seed=s.seed + i))`, whatever the batch size or the order
rows joined in: each row has its own generator and sees only its own tokens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from slm_tui.errors import GenerationError
from slm_tui.generation.engine import Decoder, prepare_prompt, row_seeds
from slm_tui.generation.settings import SamplingSettings
from slm_tui.generation.text import TextStream


@dataclass
class GenerationResult:
    prompt: str
    text: str
    token_ids: list[int]  # generated ids (EOS not included)
    finish_reason: str  # "eos" | "stop" | "length"
    seed: int
    num_tokens: int
    prompt_truncated: bool = False


@dataclass
class _Row:
    """A row's output so far."""

    stream: TextStream = field(default_factory=TextStream)
    texts: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


def generate_batch(
    model,
    tokenizer,
    prompts: Sequence[str],
    settings: SamplingSettings,
    batch_size: int = 8,
    *,
    seeds: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[GenerationResult]:
    """Generate one story per prompt; results in the order of `prompts`.

    progress(done, total) is called as rows finish."""
    if batch_size < 1:
        raise GenerationError(f"batch size must be at least 1, got {batch_size}")
    settings.validate(model.cfg.vocab_size)
    n = len(prompts)
    if seeds is None:
        seeds = row_seeds(n, settings.seed)
    elif len(seeds) != n:
        raise GenerationError(f"got {len(seeds)} seeds for {n} prompts; give one per prompt")
    prepared = [prepare_prompt(tokenizer, p, model.cfg.context_length) for p in prompts]
    waiting = deque(sorted(range(n), key=lambda i: len(prepared[i][0])))
    results: list[GenerationResult | None] = [None] * n
    rows: dict[int, _Row] = {}
    eos, stops = tokenizer.eos_id, settings.stop
    decoder = Decoder(model, capacity=min(batch_size, n))
    with torch.inference_mode():
        while waiting or rows:
            joining = [waiting.popleft() for _ in range(min(batch_size - len(rows), len(waiting)))]
            if joining:
                decoder.add(
                    [prepared[i][0] for i in joining],
                    [int(seeds[i]) for i in joining],
                    tags=joining,
                )
                rows.update((i, _Row()) for i in joining)
            next_ids = decoder.sample(settings)  # (B,)
            toks = next_ids.tolist()  # the one host sync per step
            ended: dict[int, str] = {}
            for i, tok in zip(decoder.tags, toks, strict=True):
                row = rows[i]
                if tok == eos:
                    ended[i] = "eos"
                    continue
                row.ids.append(tok)
                row.texts.append(row.stream.push(tokenizer.token_bytes(tok), stops))
                if row.stream.stopped:
                    ended[i] = "stop"
                elif len(row.ids) == settings.max_new_tokens:
                    ended[i] = "length"  # no forward for a token nobody will read
            for i, reason in ended.items():
                row = rows.pop(i)
                row.texts.append(row.stream.flush())
                results[i] = GenerationResult(
                    prompt=prompts[i],
                    text="".join(row.texts),
                    token_ids=row.ids,
                    finish_reason=reason,
                    seed=int(seeds[i]),
                    num_tokens=len(row.ids),
                    prompt_truncated=prepared[i][1],
                )
                if progress is not None:
                    progress(n - len(waiting) - len(rows), n)
            if ended:
                by_tag = dict(zip(decoder.tags, toks, strict=True))
                decoder.finish(list(ended))
                toks = [by_tag[i] for i in decoder.tags]
                next_ids = torch.tensor(toks, dtype=torch.long, device=decoder.device)
            if rows:
                decoder.advance(next_ids, toks)
    return results  # type: ignore[return-value]
