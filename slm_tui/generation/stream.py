"""`generate()`: one story as a stream of events, for the TUI and `slm-generate --stream`.

Each sampled token gives a "token" `Event` (id, display piece, whole-character text delta,
its probability and the top alternatives under the model's raw softmax, running timings,
the settings version it was sampled with); the story ends with one "done" event carrying
the finish reason: "eos" | "stop" | "length" | "cancelled" and any text that was held back.

Settings are read before every token (`LiveSettings.snapshot()`), so a change applies to the
next token. The seed is read once, at the start: it fixes the story's generator. The EOS
token is not emitted as a token: the "done" event names it (`token_id`, `prob`).

Work is lazy: nothing runs until the first event is asked for, and the next token is only
computed when the consumer asks for the next event, so cancelling takes effect at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from slm_tui.generation.engine import Decoder, fresh_seed, prepare_prompt, read_choices
from slm_tui.generation.events import Event, TokenAlt
from slm_tui.generation.settings import LiveSettings, SamplingSettings
from slm_tui.generation.text import TextStream

TOP_ALTERNATIVES = 5


def _reader(settings: SamplingSettings | LiveSettings, vocab_size: int):
    """A function returning (validated settings, version), cheap when nothing changed."""
    checked: list = [None]

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
    model,
    tokenizer,
    prompt: str,
    settings: SamplingSettings | LiveSettings,
    *,
    cancel: threading.Event | None = None,
    top_n: int = TOP_ALTERNATIVES,
) -> Iterator[Event]:
    """Stream one story. Raises `GenerationError` for invalid settings (on the first event)."""
    start = time.perf_counter()
    vocab = model.cfg.vocab_size
    read = _reader(settings, vocab)
    first, _ = read()
    seed = first.seed if first.seed is not None else fresh_seed()
    ids, _truncated = prepare_prompt(tokenizer, prompt, model.cfg.context_length)
    decoder = Decoder(model, [ids], [seed])
    text = TextStream()
    eos = tokenizer.eos_id
    top_n = max(0, min(top_n, vocab))
    index, ttft = 0, None

    def done(reason: str, version: int, token_id: int | None = None, prob=None) -> Event:
        now = time.perf_counter() - start
        return Event(
            kind="done",
            index=index,
            seed=seed,
            token_id=token_id,
            text=text.flush(),
            prob=prob,
            ttft=ttft,
            tokens_per_s=index / now if now > 0 else 0.0,
            elapsed=now,
            settings_version=version,
            finish_reason=reason,
        )

    while True:
        s, version = read()
        if cancel is not None and cancel.is_set():
            yield done("cancelled", version)
            return
        if index >= s.max_new_tokens:
            yield done("length", version)
            return
        next_ids = decoder.sample(s)  # (1,)
        ((tok, prob, top),) = read_choices(decoder.logits, next_ids, top_n)  # one host sync
        if tok == eos:
            yield done("eos", version, tok, prob)
            return
        delta = text.push(tokenizer.token_bytes(tok), s.stop)
        index += 1
        now = time.perf_counter() - start
        if ttft is None:
            ttft = now
        alts = tuple(TokenAlt(token_id=t, text=tokenizer.token_text(t), prob=p) for t, p in top)
        piece = next((a.text for a in alts if a.token_id == tok), None)
        yield Event(
            kind="token",
            index=index,
            seed=seed,
            token_id=tok,
            text=delta,
            piece=tokenizer.token_text(tok) if piece is None else piece,
            prob=prob,
            top=alts,
            ttft=ttft,
            tokens_per_s=index / now,
            elapsed=now,
            settings_version=version,
        )
        if text.stopped:
            yield done("stop", version)
            return
        decoder.advance(next_ids, [tok])
