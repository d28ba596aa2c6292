"""The server's engine loop: one thread owns the model and decodes every active request row
as one batch (continuous batching).

- A request becomes one `Row` per choice (a prompt × `n`), each with its own settings, seed
  and generator. `submit` queues rows (refused with `QueueFull` past `max_queue`).
- Each turn of the loop: waiting rows join (prefilled together, at the step boundary, up to
  `max_batch` active rows); cancelled rows leave; one decode step for all rows (per-row
  settings: rows with equal settings share a sampler call); each row's `Event`s ("token",
  then one "done") go to its sink, and `on_step` runs once the step's events are out (the
  server hands them to its event loop in one wake-up); rows that ended leave at once, so
  the next waiting row can take the place at the next step.
- A row's tokens do not depend on the other rows (its own generator and uniforms, its own
  positions and masked padding): a seeded request writes the same text alone or in a
  crowd, up to floating-point differences of batched matmuls (tests/test_serve.py).
- A failure inside a step ends the rows of that step with an "error" done event and the loop
  goes on with a fresh decoder: the server keeps serving.
- `stop()`: no new rows; the loop ends when the rows it has are done (or at once with
  `cancel=True`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from slm_tui.generation.engine import Decoder, read_choices
from slm_tui.generation.events import Event, TokenAlt
from slm_tui.generation.settings import SamplingSettings
from slm_tui.generation.text import TextStream


class QueueFull(Exception):
    """More rows are waiting than the server queues."""


@dataclass
class Row:
    """One choice of one request: a prompt's ids (BOS included), how to sample it, and where
    its events go (`sink`, called on the engine thread)."""

    ids: list[int]
    settings: SamplingSettings  # without a seed: rows of one request share one sampler call
    seed: int  # the row's own generator's seed
    sink: Callable[[Event], None]
    top_n: int = 0  # alternatives to report with each token (0: none)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Filled in by the loop.
    stream: TextStream = field(default_factory=TextStream)
    index: int = 0  # tokens generated so far
    submitted: float = field(default_factory=time.perf_counter)
    ttft: float | None = None


@dataclass
class Stats:
    """What /metrics reports (counters since start, gauges now)."""

    rows_finished: int = 0
    tokens_generated: int = 0
    prompt_tokens: int = 0
    active_rows: int = 0
    queued_rows: int = 0
    steps: int = 0
    errors: int = 0


class Scheduler:
    """The engine loop of one model. Thread-safe `submit`, `stop`, `stats`."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.on_step = on_step  # called on the engine thread after each step's events
        self.max_batch, self.max_queue = max_batch, max_queue
        self._cond = threading.Condition()
        self._waiting: deque[Row] = deque()
        self._rows: dict[int, Row] = {}  # active rows by decoder tag (touched by the loop only)
        self._next_tag = 0
        self._stopping = False
        self._cancel_all = False
        self.stats = Stats()
        self._decoder = Decoder(model, capacity=max_batch)
        self._thread = threading.Thread(target=self._loop, name="slm-serve-engine", daemon=True)
        self._thread.start()

    # --- the public side (any thread) -------------------------------------------------------
    def submit(self, rows: list[Row]) -> None:
        """Queue rows; QueueFull when they do not fit, RuntimeError once stopping."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            if len(self._waiting) + len(rows) > self.max_queue:
                raise QueueFull(
                    f"{len(self._waiting)} rows already wait (at most {self.max_queue})"
                )
            self._waiting.extend(rows)
            self.stats.queued_rows = len(self._waiting)
            self._cond.notify()

    def room(self) -> int:
        """How many more rows `submit` takes now (the rows that wait count, not the active)."""
        with self._cond:
            return self.max_queue - len(self._waiting)

    def stop(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        """Take no new rows; end the loop when the rows it has are done (`cancel`: at once)."""
        with self._cond:
            self._stopping = True
            self._cancel_all = self._cancel_all or cancel
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # --- the loop (the engine thread) -------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._rows and not self._stopping:
                    self._cond.wait()
                if self._cancel_all:
                    for row in (*self._waiting, *self._rows.values()):
                        row.cancelled.set()
                if self._stopping and not self._waiting and not self._rows:
                    return
                room = self.max_batch - len(self._rows)
                joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                self.stats.queued_rows = len(self._waiting)
            try:
                self._step(joining)
            except Exception as exc:  # a failed step must not take the server down
                self._fail_all(joining, exc)
            if self.on_step is not None:
                self.on_step()

    def _step(self, joining: list[Row]) -> None:
        joining = [r for r in joining if not r.cancelled.is_set()]
        if joining:
            tags = list(range(self._next_tag, self._next_tag + len(joining)))
            self._next_tag += len(joining)
            self._decoder.add([r.ids for r in joining], [r.seed for r in joining], tags=tags)
            self._rows.update(zip(tags, joining, strict=True))
            self.stats.prompt_tokens += sum(len(r.ids) for r in joining)
        gone = [tag for tag, row in self._rows.items() if row.cancelled.is_set()]
        if gone:
            self._end(gone)
        self.stats.active_rows = len(self._rows)
        if not self._rows:
            return
        decoder, tokenizer = self._decoder, self.tokenizer
        rows = [self._rows[tag] for tag in decoder.tags]
        next_ids = decoder.sample([r.settings for r in rows])
        top_n = max(r.top_n for r in rows)
        choices = read_choices(decoder.logits, next_ids, top_n)  # the one host sync
        ended: list[int] = []
        now = time.perf_counter()
        for tag, row, (tok, prob, top) in zip(decoder.tags, rows, choices, strict=True):
            if tok == tokenizer.eos_id:
                self._done(row, "eos", now, token_id=tok, prob=prob)
                ended.append(tag)
                continue
            delta = row.stream.push(tokenizer.token_bytes(tok), row.settings.stop)
            row.index += 1
            self.stats.tokens_generated += 1
            row.ttft = row.ttft if row.ttft is not None else now - row.submitted
            alts = tuple(
                TokenAlt(token_id=t, text=tokenizer.token_text(t), prob=p)
                for t, p in top[: row.top_n]
            )
            row.sink(
                Event(
                    kind="token",
                    index=row.index,
                    seed=row.seed,
                    token_id=tok,
                    text=delta,
                    piece=tokenizer.token_text(tok),
                    prob=prob,
                    top=alts,
                    ttft=row.ttft,
                    tokens_per_s=row.index / max(now - row.submitted, 1e-9),
                    elapsed=now - row.submitted,
                )
            )
            if row.stream.stopped:
                self._done(row, "stop", now)
                ended.append(tag)
            elif row.index >= row.settings.max_new_tokens:
                self._done(row, "length", now)
                ended.append(tag)
        self.stats.steps += 1
        toks = [choice[0] for choice in choices]
        if ended:
            by_tag = dict(zip(decoder.tags, toks, strict=True))
            self._end(ended)
            toks = [by_tag[tag] for tag in decoder.tags]
            next_ids = next_ids.new_tensor(toks)
        if self._rows:
            decoder.advance(next_ids, toks)

    def _done(self, row: Row, reason: str, now: float, **extra) -> None:
        row.sink(
            Event(
                kind="done",
                index=row.index,
                seed=row.seed,
                text=row.stream.flush(),
                ttft=row.ttft,
                tokens_per_s=row.index / max(now - row.submitted, 1e-9),
                elapsed=now - row.submitted,
                finish_reason=reason,
                **extra,
            )
        )
        self.stats.rows_finished += 1

    def _end(self, tags: list[int]) -> None:
        self._decoder.finish(tags)
        for tag in tags:
            self._rows.pop(tag, None)
        # Now, not at the next step: an idle engine takes no next step, and /health would
        # report the rows that just ended as active.
        self.stats.active_rows = len(self._rows)

    def _fail_all(self, joining: list[Row], exc: Exception) -> None:
        """A step raised: end every row it held with an error, start a fresh decoder."""
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        message = f"{type(exc).__name__}: {first}"
        for row in {id(r): r for r in (*joining, *self._rows.values())}.values():
            try:
                row.sink(Event.failed(message, seed=row.seed, index=row.index))
            except Exception:  # a sink whose client is gone
                row.cancelled.set()
        self._rows.clear()
        self.stats.errors += 1
        self.stats.active_rows = 0
        self._decoder = Decoder(self.model, capacity=self.max_batch)
