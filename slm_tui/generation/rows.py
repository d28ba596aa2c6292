"""The row driver: the one place that decides, token by token, what happens to each row.

Every decode loop of the project drives this: `generate()` (one row, live settings, events),
`generate_batch()` (many rows, results) and the server's `Scheduler` (many rows, events to
sinks). A `Row` is one story in flight (nano-vllm's `Sequence`, nanochat's row state): its
prompt ids, settings, seed, text stream, counters and finish reason. `Rows.step()` is the
per-token policy, written once:

    feed the tokens chosen last step (one decode step for every row still running)
    -> end rows that were cancelled, or that reached max_new_tokens (a live change)
    -> sample every row (per-row settings; rows with equal settings share a sampler call)
    -> read the chosen ids, with probabilities and alternatives when a row wants them
       (one host transfer)
    -> per row: EOS ends it (unless `ignore_eos`); else the token's bytes go through its
       `TextStream` and a "token" event is emitted; a completed stop string or
       max_new_tokens ends it ("stop" / "length", with no decode step for a token nobody
       reads)
    -> rows that ended leave the decoder at once (their places can be refilled before
       the next step)

A batch job that reads only each story's end (`generate_batch`) drives `Rows(...,
tokens=False)`: the same policy without the per-token events.

The chosen tokens are fed at the start of the *next* step, not at the end of this one, so a
step's events reach their reader before the next decode step runs (the TUI shows a token
one decode step sooner; the server flushes its events before decoding on), and a row that
is cancelled between steps costs nothing more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import torch

from slm_tui.generation.engine import Decoder, read_choices
from slm_tui.generation.events import Event, TokenAlt
from slm_tui.generation.guide import BriefGuide
from slm_tui.generation.settings import SamplingSettings
from slm_tui.generation.text import TextStream

if TYPE_CHECKING:
    from slm_tui.model import GPT
    from slm_tui.tokenizers.base import Tokenizer


@dataclass(eq=False)
class Row:
    """One story in flight. The caller fills the first block; the driver the rest."""

    ids: list[int]  # the prompt's ids, BOS included
    settings: SamplingSettings  # read at every step: a driver may replace it between steps
    seed: int  # the row's own generator's seed
    top_n: int = 0  # alternatives reported with each token (0: none)
    probs: bool = True  # report each token's probability (False: ids only, the cheapest read)
    cancelled: threading.Event = field(default_factory=threading.Event)
    settings_version: int = 0  # stamped on its events (LiveSettings.version)
    started: float = field(default_factory=time.perf_counter)
    guide: BriefGuide | None = None  # nudges sampling toward the brief's words (guide.py)
    # Filled in by the driver.
    stream: TextStream = field(default_factory=TextStream)
    token_ids: list[int] = field(default_factory=list)  # generated ids (EOS not included)
    held: list[str] = field(default_factory=list)  # text a tokens=False driver kept (stops)
    index: int = 0  # tokens generated so far
    ttft: float | None = None
    finish_reason: str | None = None  # set when the row ends

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


R = TypeVar("R", bound=Row)


class Rows(Generic[R]):
    """Rows decoding together through one `Decoder`: `join` between steps, `step` per token."""

    def __init__(
        self, model: GPT, tokenizer: Tokenizer, *, capacity: int = 0, tokens: bool = True
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        # tokens=False (a batch job that reads only each story's end): no "token" events;
        # a row's text is decoded from its ids when it ends, and only a row with stop
        # strings runs its TextStream per token (the per-row work of a step stays a few
        # comparisons: 256 rows on a GPU decode faster than Python makes 256 events).
        self.tokens = tokens
        self.decoder = Decoder(model, capacity=capacity)
        self.eos = tokenizer.eos_id
        self._rows: dict[Hashable, R] = {}  # by decoder tag (ints from _next_tag)
        self._next_tag = 0
        self._pending: tuple[torch.Tensor, list[int]] | None = None  # chosen, not yet fed

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def active(self) -> list[R]:
        """The running rows, in the decoder's order."""
        return [self._rows[tag] for tag in self.decoder.tags]

    def join(self, rows: Sequence[R]) -> None:
        """Prefill new rows into the batch (cancelled ones are skipped)."""
        rows = [r for r in rows if not r.cancelled.is_set()]
        if not rows:
            return
        self._feed()
        tags = list(range(self._next_tag, self._next_tag + len(rows)))
        self._next_tag += len(rows)
        self.decoder.add([r.ids for r in rows], [r.seed for r in rows], tags=tags)
        self._rows.update(zip(tags, rows, strict=True))

    def step(self) -> list[tuple[R, Event]]:
        """One token for every running row: each row's event, in the decoder's order (rows
        that ended are out of the batch when this returns)."""
        events: list[tuple[R, Event]] = []
        now = time.perf_counter()
        early = [
            (tag, row, "cancelled" if row.cancelled.is_set() else "length")
            for tag, row in self._rows.items()
            if row.cancelled.is_set() or row.index >= row.settings.max_new_tokens
        ]
        for _tag, row, reason in early:
            events.append((row, self._done(row, reason, now)))
        if early:
            self._leave([tag for tag, _, _ in early])  # before feeding: no step for them
        self._feed()
        if not self._rows:
            return events
        decoder, tokenizer = self.decoder, self.tokenizer
        rows = self.active
        self._guide(rows)
        first = rows[0].settings
        same = all(r.settings is first for r in rows)  # one job's rows: one sampler call
        next_ids = decoder.sample(first if same else [r.settings for r in rows])  # (B,)
        # each row's (id, probability or None, top alternatives)
        choices: Sequence[tuple[int, float | None, Sequence[tuple[int, float]]]]
        if any(r.probs for r in rows):
            top_n = max(r.top_n for r in rows)
            choices = read_choices(decoder.logits, next_ids, top_n)  # the one host sync
        else:
            choices = [(tok, None, ()) for tok in next_ids.tolist()]  # the one host sync
        now = time.perf_counter()
        ended: list[Hashable] = []
        for tag, row, (tok, prob, top) in zip(decoder.tags, rows, choices, strict=True):
            if tok == self.eos and not row.settings.ignore_eos:
                events.append((row, self._done(row, "eos", now, token_id=tok, prob=prob)))
                ended.append(tag)
                continue
            row.token_ids.append(tok)
            row.index += 1
            if row.guide is not None:
                row.guide.wrote(tok, tokenizer.token_bytes(tok))
            if row.ttft is None:
                row.ttft = now - row.started
            if self.tokens:
                events.append((row, self._token_event(row, tok, prob, top, now)))
            elif row.settings.stop:  # no events, but stop strings are still watched for
                row.held.append(row.stream.push(tokenizer.token_bytes(tok), row.settings.stop))
            if row.stream.stopped:
                events.append((row, self._done(row, "stop", now)))
                ended.append(tag)
            elif row.index >= row.settings.max_new_tokens:
                events.append((row, self._done(row, "length", now)))
                ended.append(tag)
        self._pending = (next_ids, [c[0] for c in choices])
        if ended:
            self._leave(ended)
        return events

    def _guide(self, rows: list[R]) -> None:
        """Add each guided row's bonuses to its logits before sampling (guide.py)."""
        guided = [(i, row.guide) for i, row in enumerate(rows) if row.guide is not None]
        if not guided:
            return
        logits = self.decoder.logits
        with torch.inference_mode():
            for i, guide in guided:
                bias = guide.bias()
                if bias:
                    ids = torch.tensor(list(bias), dtype=torch.long, device=logits.device)
                    values = torch.tensor(list(bias.values()), dtype=logits.dtype)
                    logits[i, ids] += values.to(logits.device)

    def _token_event(
        self, row: R, tok: int, prob: float | None, top: Sequence[tuple[int, float]], now: float
    ) -> Event:
        """A row's "token" event (its text delta through the row's TextStream)."""
        tokenizer = self.tokenizer
        delta = row.stream.push(tokenizer.token_bytes(tok), row.settings.stop)
        elapsed = max(now - row.started, 1e-9)
        alts = tuple(
            TokenAlt(token_id=t, text=tokenizer.token_text(t), prob=p) for t, p in top[: row.top_n]
        )
        return Event(
            kind="token",
            index=row.index,
            seed=row.seed,
            token_id=tok,
            text=delta,
            piece=tokenizer.token_text(tok),
            prob=prob,
            top=alts,
            ttft=row.ttft,
            tokens_per_s=row.index / elapsed,
            elapsed=elapsed,
            settings_version=row.settings_version,
        )

    def fail(self, extra: Iterable[R] = ()) -> list[R]:
        """A step raised: every row (and `extra`, rows that were joining) ends with "error";
        the decoder starts afresh. Returns the rows, for the caller to tell."""
        rows = list({id(r): r for r in (*extra, *self._rows.values())}.values())
        for row in rows:
            row.finish_reason = "error"
        self._rows.clear()
        self._pending = None
        self.decoder = Decoder(self.model, capacity=self.decoder.cache.k.size(1))
        return rows

    def _feed(self) -> None:
        """Feed last step's chosen tokens: one decode step for the rows still running."""
        if self._pending is not None:
            next_ids, toks = self._pending
            self._pending = None
            self.decoder.advance(next_ids, toks)

    def _leave(self, tags: Sequence[Hashable]) -> None:
        """Take rows out of the decoder (and out of the tokens waiting to be fed)."""
        pending = self._pending
        by_tag = dict(zip(self.decoder.tags, pending[1], strict=True)) if pending else {}
        self.decoder.finish(tags)
        for tag in tags:
            self._rows.pop(tag, None)
        if pending is not None:
            toks = [by_tag[tag] for tag in self.decoder.tags]
            ids = torch.tensor(toks, dtype=torch.long, device=self.decoder.device)
            self._pending = (ids, toks) if toks else None

    def _done(
        self,
        row: R,
        reason: str,
        now: float,
        *,
        token_id: int | None = None,
        prob: float | None = None,
    ) -> Event:
        row.finish_reason = reason
        elapsed = max(now - row.started, 1e-9)
        if self.tokens:
            text = row.stream.flush()  # what the token events held back
        elif row.settings.stop:
            text = "".join(row.held) + row.stream.flush()
        else:  # the whole story at once: what the token events' deltas would have joined to
            data = b"".join(map(self.tokenizer.token_bytes, row.token_ids))
            text = data.decode("utf-8", errors="replace")
        return Event(
            kind="done",
            index=row.index,
            seed=row.seed,
            text=text,
            ttft=row.ttft,
            tokens_per_s=row.index / elapsed,
            elapsed=elapsed,
            settings_version=row.settings_version,
            finish_reason=reason,
            token_id=token_id,
            prob=prob,
        )
