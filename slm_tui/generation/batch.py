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

Settings: one for every prompt, or one per prompt (a sequence, e.g. each with its own
brief; the default seeds then come from the first's seed). A brief's block goes before its
prompt (`prepare_prompt`); rows whose settings differ only in their brief share one sampler
call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from slm_tui.errors import GenerationError
from slm_tui.generation.engine import prepare_prompt, row_seeds
from slm_tui.generation.events import GenerationResult
from slm_tui.generation.guide import make_guide
from slm_tui.generation.rows import Row, Rows
from slm_tui.generation.settings import SamplingSettings

if TYPE_CHECKING:
    from slm_tui.model import GPT
    from slm_tui.tokenizers.base import Tokenizer


def generate_batch(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    settings: SamplingSettings | Sequence[SamplingSettings],
    batch_size: int = 8,
    *,
    seeds: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[GenerationResult]:
    """Generate one story per prompt; results in the order of `prompts`.

    progress(done, total) is called as rows finish."""
    if batch_size < 1:
        raise GenerationError(f"batch size must be at least 1, got {batch_size}")
    n = len(prompts)
    if isinstance(settings, SamplingSettings):
        per_row = [settings] * n
    else:
        per_row = list(settings)
        if len(per_row) != n:
            raise GenerationError(
                f"got {len(per_row)} settings for {n} prompts; give one per prompt"
            )
    # The brief is spent on the prompt; the rows sample with one object per distinct rest.
    sampling: dict[SamplingSettings, SamplingSettings] = {}
    for s in per_row:
        if s not in sampling:
            plain = s.validate(model.vocab_size).replace(brief=None) if s.brief else s
            sampling[s] = sampling.setdefault(plain, plain)
    if seeds is None:
        seeds = row_seeds(n, per_row[0].seed if per_row else None)
    elif len(seeds) != n:
        raise GenerationError(f"got {len(seeds)} seeds for {n} prompts; give one per prompt")
    for s in sampling.values():
        s.validate(model.vocab_size)
    context = model.cfg.context_length
    prepared = [prepare_prompt(tokenizer, p, context, brief=s.brief)
                for p, s in zip(prompts, per_row, strict=True)]  # fmt: skip
    jobs = [Row(ids=ids, settings=sampling[r], seed=int(s), probs=False,
                guide=make_guide(r, tokenizer))
            for (ids, _), r, s in zip(prepared, per_row, seeds, strict=True)]  # fmt: skip
    index = {id(row): i for i, row in enumerate(jobs)}
    texts: list[list[str]] = [[] for _ in range(n)]
    waiting = deque(sorted(range(n), key=lambda i: len(prepared[i][0])))
    rows = Rows[Row](model, tokenizer, capacity=min(batch_size, n), tokens=False)
    finished = 0
    with torch.inference_mode():
        while waiting or len(rows):
            room = min(batch_size - len(rows), len(waiting))
            rows.join([jobs[waiting.popleft()] for _ in range(room)])
            for row, event in rows.step():
                texts[index[id(row)]].append(event.text)
                if event.kind == "done":
                    finished += 1
                    if progress is not None:
                        progress(finished, n)
    return [
        GenerationResult(
            prompt=prompts[i],
            text="".join(texts[i]),
            token_ids=row.token_ids,
            finish_reason=row.finish_reason or "length",
            seed=row.seed,
            num_tokens=len(row.token_ids),
            prompt_truncated=prepared[i][1],
        )
        for i, row in enumerate(jobs)
    ]
