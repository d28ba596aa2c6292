"""`generate()`: one story as a stream of events, for the TUI and `slm-generate --stream`.

Each sampled token gives a "token" `Event` (id, display piece, whole-character text delta,
its probability and the top alternatives under the model's raw softmax, running timings,
the settings version it was sampled with); the story ends with one "done" event carrying
the finish reason: "eos" | "stop" | "length" | "cancelled" and any text that was held back.

Settings are read before every token (`LiveSettings.snapshot()`), so a change applies to the
next token. The seed and the brief are read once, at the start: the seed fixes the story's
generator, the brief's block goes before the prompt (the events carry the story only). The EOS
token is not emitted as a token: the "done" event names it (`token_id`, `prob`).

Work is lazy: nothing runs until the first event is asked for, and the next token is only
computed when the consumer asks for the next event, so cancelling takes effect at once.
The per-token policy (EOS, stop strings, length, cancellation) is the row driver's
(`generation/rows.py`), shared with `generate_batch` and the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from slm_tui.generation.engine import fresh_seed, prepare_prompt
from slm_tui.generation.events import Event
from slm_tui.generation.guide import make_guide
from slm_tui.generation.rows import Row, Rows
from slm_tui.generation.settings import LiveSettings, SamplingSettings

if TYPE_CHECKING:
    from slm_tui.model import GPT
    from slm_tui.tokenizers.base import Tokenizer

TOP_ALTERNATIVES = 5


def _reader(
    settings: SamplingSettings | LiveSettings, vocab_size: int
) -> Callable[[], tuple[SamplingSettings, int]]:
    """A function returning (validated settings, version), cheap when nothing changed."""
    checked: list[SamplingSettings | None] = [None]

    def read() -> tuple[SamplingSettings, int]:
        if isinstance(settings, LiveSettings):
            s, version = settings.snapshot()
        else:
            s, version = settings, 0
        if s is not checked[0]:
            s.validate(vocab_size)
            checked[0] = s
        return s, version

    return read


def generate(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    settings: SamplingSettings | LiveSettings,
    *,
    cancel: threading.Event | None = None,
    top_n: int = TOP_ALTERNATIVES,
) -> Iterator[Event]:
    """Stream one story. Raises `GenerationError` for invalid settings (on the first event)."""
    start = time.perf_counter()
    vocab = model.vocab_size
    read = _reader(settings, vocab)
    first, version = read()
    seed = first.seed if first.seed is not None else fresh_seed()
    ids, _truncated = prepare_prompt(tokenizer, prompt, model.cfg.context_length, brief=first.brief)
    row = Row(
        ids=ids,
        settings=first,
        seed=seed,
        top_n=max(0, min(top_n, vocab)),
        cancelled=cancel if cancel is not None else threading.Event(),
        settings_version=version,
        started=start,
        guide=make_guide(first, tokenizer),
    )
    rows = Rows[Row](model, tokenizer, capacity=1)
    rows.join([row])
    while not row.done:
        row.settings, row.settings_version = read()  # a change applies to the next token
        for _, event in rows.step():
            yield event
