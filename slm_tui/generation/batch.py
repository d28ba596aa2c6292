"""`generate_batch()`: many prompts decoded together, for scripts and `slm-generate`.

Prompts are grouped by length (less padding), decoded `batch_size` rows at a time through
one left-padded KV cache, and each row stops on its own (EOS, stop string, max tokens);
a finished row stays in the batch, its output ignored, until the whole group is done.

Seeds: row i of the job (the i-th prompt in `prompts`) uses `seeds[i]` when given, else
`settings.seed + i` when the settings have a seed, else a fresh random seed; every result
reports its seed. So `generate_batch(prompts, s)[i]` is the same story as
`generate(prompts[i], s.replace(seed=s.seed + i))`, whatever the batch size or grouping:
each row has its own generator and sees only its own tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    order = sorted(range(n), key=lambda i: len(prepared[i][0]))
    results: list[GenerationResult | None] = [None] * n
    finished = 0
    for at in range(0, n, batch_size):
        rows = order[at : at + batch_size]

        def row_done(j: int, result: GenerationResult, rows: list[int] = rows) -> None:
            nonlocal finished
            results[rows[j]] = result
            finished += 1
            if progress is not None:
                progress(finished, n)

        _decode_group(
            model,
            tokenizer,
            [prompts[i] for i in rows],
            [prepared[i] for i in rows],
            [int(seeds[i]) for i in rows],
            settings,
            row_done,
        )
    return results  # type: ignore[return-value]


def _decode_group(model, tokenizer, prompts, prepared, seeds, settings, row_done) -> None:
    """Decode one group of rows to the end; call row_done(j, result) as each row ends."""
    decoder = Decoder(model, [ids for ids, _ in prepared], seeds)
    B = len(prompts)
    streams = [TextStream() for _ in range(B)]
    texts: list[list[str]] = [[] for _ in range(B)]
    out: list[list[int]] = [[] for _ in range(B)]
    live = set(range(B))
    eos, stops = tokenizer.eos_id, settings.stop

    def finish(j: int, reason: str) -> None:
        texts[j].append(streams[j].flush())
        live.discard(j)
        decoder.finish(j)
        result = GenerationResult(
            prompt=prompts[j],
            text="".join(texts[j]),
            token_ids=out[j],
            finish_reason=reason,
            seed=seeds[j],
            num_tokens=len(out[j]),
            prompt_truncated=prepared[j][1],
        )
        row_done(j, result)

    for step in range(settings.max_new_tokens):
        next_ids = decoder.sample(settings)  # (B,)
        toks = next_ids.tolist()  # the one host sync per step
        for j in sorted(live):
            tok = toks[j]
            if tok == eos:
                finish(j, "eos")
                continue
            out[j].append(tok)
            texts[j].append(streams[j].push(tokenizer.token_bytes(tok), stops))
            if streams[j].stopped:
                finish(j, "stop")
        if not live:
            return
        if step == settings.max_new_tokens - 1:
            break  # no forward for a token nobody will read
        decoder.advance(next_ids, toks)
    for j in sorted(live):
        finish(j, "length")
