"""Run one story at a time through the engine in a thread worker, without ever blocking either side.

The worker iterates `generation.generate(...)` and appends each event to a deque (append is
atomic and never waits), so the engine runs at full speed whatever the UI is doing. A timer
on the UI thread drains the deque ~30 times a second and hands the batch to the owner, so
the UI redraws at most 30 times a second whatever the token rate. Cancellation is a
`threading.Event` the engine checks every step: Esc stops the story within one token.

Sampling changes go through `LiveSettings.update`; the engine stamps each event with the
settings version it was sampled with, and the streamer reports the first token of each
new version (`on_applied`), which is how the status line can say "from token N".
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual.dom import DOMNode
from textual.timer import Timer

from slm_tui.generation import LiveSettings, SamplingSettings, generate
from slm_tui.tui.story import Story

FLUSH_INTERVAL = 1 / 30  # seconds between UI updates while streaming


@dataclass(frozen=True)
class FailedEvent:
    """Stands in for the engine's "done" event when the engine raised (shown, never a crash)."""

    message: str
    seed: int | None = None
    kind: str = "done"
    index: int = 0
    token_id: int | None = None
    text: str = ""
    prob: float | None = None
    top: tuple = ()
    ttft: float | None = None
    tokens_per_s: float = 0.0
    elapsed: float = 0.0
    settings_version: int = 0
    finish_reason: str = "error"


class Streamer:
    """Streams stories for one view (the main screen, or one side of the compare screen)."""

    def __init__(
        self,
        host: DOMNode,
        group: str,
        on_update: Callable[[Story, list[Any]], None],
        on_applied: Callable[[Story, int, int], None] | None = None,
    ) -> None:
        self.host = host
        self.group = group
        self.on_update = on_update  # (story, events) after each flush, on the UI thread
        self.on_applied = on_applied  # (story, settings_version, token index) on the UI thread
        self.story: Story | None = None
        self.live: LiveSettings | None = None
        self.applied: list[tuple[int, int]] = []  # (settings_version, first token index using it)
        self._queue: deque[tuple[Story, Any, str]] = deque()
        self._cancel: threading.Event | None = None
        self._timer: Timer | None = None

    @property
    def running(self) -> bool:
        return self.story is not None and self.story.streaming

    def start(self, loaded: Any, story: Story, prompt: str, settings: SamplingSettings) -> None:
        """Start streaming `prompt` into `story` (cancels a running story first)."""
        self.cancel()
        cancel = threading.Event()
        live = LiveSettings(settings)
        self._cancel, self.live, self.story = cancel, live, story
        self.applied = [(live.version, 1)]
        model, tokenizer = loaded.model, loaded.tokenizer
        queue = self._queue

        def run() -> None:
            seed = settings.seed
            try:
                for event in generate(model, tokenizer, prompt, live, cancel=cancel):
                    seed = event.seed
                    # The printable piece is looked up here, off the UI thread.
                    piece = "" if event.token_id is None else tokenizer.token_text(event.token_id)
                    queue.append((story, event, piece))
            except Exception as exc:  # shown in the status line; the app keeps working
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                queue.append((story, FailedEvent(f"{type(exc).__name__}: {first}", seed), ""))

        self.host.run_worker(
            run,
            thread=True,
            exclusive=True,
            group=self.group,
            exit_on_error=False,
            name=f"generate:{story.id}",
        )
        if self._timer is None:
            self._timer = self.host.set_interval(FLUSH_INTERVAL, self.flush, name="stream-flush")
        else:
            self._timer.resume()

    def cancel(self) -> bool:
        """Ask the running story to stop; True if one was running."""
        if self._cancel is not None and not self._cancel.is_set() and self.running:
            self._cancel.set()
            return True
        return False

    def update_settings(self, **changes: Any) -> int | None:
        """Apply changed sampling fields to the running story; returns the new version."""
        if not self.running or self.live is None:
            return None
        self.live.update(**changes)
        return self.live.version

    def flush(self) -> None:
        """Drain the queue on the UI thread and hand each story its batch."""
        if not self._queue:
            if not self.running and self._timer is not None:
                self._timer.pause()
            return
        batches: dict[str, tuple[Story, list[Any]]] = {}
        while self._queue:
            story, event, piece = self._queue.popleft()
            story.apply(event, piece)
            if event.kind == "token":
                self._note_version(story, event)
            elif isinstance(event, FailedEvent):
                story.error = event.message
            batches.setdefault(story.id, (story, []))[1].append(event)
        for story, events in batches.values():
            self.on_update(story, events)

    def _note_version(self, story: Story, event: Any) -> None:
        if story is not self.story:
            return
        if event.settings_version > self.applied[-1][0]:
            self.applied.append((event.settings_version, event.index))
            if self.on_applied is not None:
                self.on_applied(story, event.settings_version, event.index)
