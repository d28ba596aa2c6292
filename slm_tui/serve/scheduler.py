"""The server's engine loop: one thread owns the model and decodes every active request row
as one batch (continuous batching).

- A request becomes one `Row` per choice (a prompt × `n`), each with its own settings, seed
  and generator. `submit` queues rows (refused with `QueueFull` past `max_queue`).
- Each turn of the loop: waiting rows join (prefilled together, at the step boundary, up to
  `max_batch` active rows), then one step of the row driver (`generation/rows.py`, the
  per-token policy shared with `generate` and `generate_batch`: cancelled rows leave, one
  token for every row, EOS / stop / length end rows); each row's `Event`s ("token", then
  one "done") go to its sink, and `on_step` runs once the step's events are out (the
  server hands them to its event loop in one wake-up, before the next decode step runs);
  rows that ended leave at once, so the next waiting row can take the place at the next
  step.
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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slm_tui.generation import rows as row_driver
from slm_tui.generation.events import Event
from slm_tui.generation.guide import make_guide

if TYPE_CHECKING:
    from slm_tui.generation.settings import SamplingSettings
    from slm_tui.model import GPT
    from slm_tui.tokenizers.base import Tokenizer


class QueueFull(Exception):
    """More rows are waiting than the server queues."""


@dataclass(eq=False)
class Row(row_driver.Row):
    """One choice of one request (the row driver's `Row`), and where its events go: `sink`,
    called on the engine thread. Its settings carry no seed (the row's seed is its own) and
    no brief, so rows of one request share one sampler call; `guided` are the settings with
    the brief, which the engine makes the row's brief guide from (`guide.make_guide`)."""

    sink: Callable[[Event], None] = lambda event: None
    guided: SamplingSettings | None = None


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
        model: GPT,
        tokenizer: Tokenizer,
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
        self._rows = row_driver.Rows[Row](model, tokenizer, capacity=max_batch)  # loop's only
        self._stopping = False
        self._cancel_all = False
        self.stats = Stats()
        self._thread = threading.Thread(target=self._loop, name="slm-serve-engine", daemon=True)
        self._thread.start()

    # --- the public side (any thread) -------------------------------------------------------
    def submit(self, rows: list[Row]) -> None:
        """Queue rows; QueueFull when they do not fit, RuntimeError once stopping."""
        for row in rows:
            if row.guide is None and row.guided is not None:
                row.guide = make_guide(row.guided, self.tokenizer)
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
                    for row in (*self._waiting, *self._rows.active):
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
        self._rows.join(joining)
        self.stats.prompt_tokens += sum(len(r.ids) for r in joining if not r.cancelled.is_set())
        events = self._rows.step()
        self.stats.active_rows = len(self._rows)
        for row, event in events:
            row.sink(event)
            if event.kind == "token":
                self.stats.tokens_generated += 1
            else:
                self.stats.rows_finished += 1
        if any(event.kind == "token" for _, event in events):
            self.stats.steps += 1

    def _fail_all(self, joining: list[Row], exc: Exception) -> None:
        """A step raised: end every row it held with an error, start a fresh decoder."""
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        message = f"{type(exc).__name__}: {first}"
        for row in self._rows.fail(joining):
            try:
                row.sink(Event.failed(message, seed=row.seed, index=row.index))
            except Exception:  # a sink whose client is gone
                row.cancelled.set()
        self.stats.errors += 1
        self.stats.active_rows = 0
