"""`Streamer`: streams one story at a time from the engine into the UI, ~30 times a second.

The engine runs in a thread worker: it iterates the story's events (`generation.generate`,
`ModelHandle.stream`: the local engine or a server) and appends each `Event` to a
deque (append is atomic), so the engine runs at full speed whatever the UI is doing. A
timer on the UI thread drains the deque ~30 times a second, folds the events into their
`Story` and hands each story its batch, so the UI redraws at most 30 times a second
whatever the token rate. Both sides are bounded: a flush takes at most `FLUSH_EVENTS`
events or `FLUSH_SECONDS` of the UI thread (the rest waits for the next frame), and a
worker whose queue holds `QUEUE_LIMIT` events waits for room, so a source faster than the
UI (a server streaming without end) can neither freeze the UI nor grow memory.
Cancellation is a `threading.Event` the engine checks every step, and a server request
watches (closing its socket): Esc stops the story within one token, or within a moment on
a server that has stopped sending. An engine failure becomes the story's
`Event.failed(...)` "done" event: shown in place, never a crash.

Sampling changes go through `LiveSettings.update`; the engine stamps each event with the
settings version it was sampled with, and the streamer reports the first token of each
new version with the changes it carried: it records them in the story
(`Story.record_change`, so the export says from which token each change applied) and tells
`on_applied`, which is how the status line can say "temperature 0.9 from token N".
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from textual.dom import DOMNode
from textual.timer import Timer

from slm_tui.generation import Event, LiveSettings, SamplingSettings
from slm_tui.handle import ModelHandle
from slm_tui.tui.story import Story

FLUSH_INTERVAL = 1 / 30  # seconds between UI updates while streaming
FLUSH_EVENTS = 4096  # events one flush folds at most (the rest wait for the next frame)
FLUSH_SECONDS = 0.012  # UI-thread time one flush takes at most
QUEUE_LIMIT = 16384  # events a worker may queue before it waits for the UI to catch up


class Streamer:
    """Streams stories for one view (the main screen, or one side of the compare screen)."""

    def __init__(
        self,
        host: DOMNode,
        group: str,
        on_update: Callable[[Story, list[Event]], None],
        on_applied: Callable[[Story, int, int, dict[str, Any]], None] | None = None,
    ) -> None:
        self.host = host  # runs the worker and the flush timer
        self.group = group
        self.on_update = on_update  # (story, events) after each flush, on the UI thread
        # (story, settings version, first token index using it, the changes it brought)
        self.on_applied = on_applied
        self.story: Story | None = None
        self.live: LiveSettings | None = None
        self.applied: list[tuple[int, int]] = []  # (settings_version, first token index using it)
        self.offset = 0  # tokens the story held before this stream (continue)
        self.pending: dict[int, dict[str, Any]] = {}  # settings version -> changes not yet seen
        self._queue: deque[tuple[Story, Event]] = deque()
        self._cancel: threading.Event | None = None
        self._timer: Timer | None = None

    @property
    def running(self) -> bool:
        return self.story is not None and self.story.streaming

    def start(
        self, model: ModelHandle, story: Story, prompt: str, settings: SamplingSettings
    ) -> None:
        """Stream `prompt` through `model` (local or a server's) into `story`; a running
        story is cancelled first."""
        self.cancel()
        cancel = threading.Event()
        live = LiveSettings(settings)
        self._cancel, self.live, self.story = cancel, live, story
        self.offset = story.num_tokens  # a continued story: its events count from 1 again
        self.applied = [(live.version, self.offset + 1)]
        self.pending.clear()
        queue = self._queue

        def run() -> None:
            seed, index = settings.seed, 0
            try:
                for event in model.stream(prompt, live, cancel):
                    seed, index = event.seed, event.index
                    while len(queue) >= QUEUE_LIMIT and not cancel.is_set():
                        time.sleep(FLUSH_INTERVAL / 4)  # the UI is behind: wait for room
                    queue.append((story, event))
            except Exception as exc:  # shown in the story and the status line; the app goes on
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                failed = Event.failed(f"{type(exc).__name__}: {first}", seed=seed, index=index)
                queue.append((story, failed))

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
        version = self.live.version
        self.pending[version] = changes
        return version

    def flush(self) -> None:
        """Fold what the queue holds (at most `FLUSH_EVENTS` events or `FLUSH_SECONDS`) on
        the UI thread and hand each story its batch."""
        if not self._queue:
            if not self.running and self._timer is not None:
                self._timer.pause()
            return
        batches: dict[str, tuple[Story, list[Event]]] = {}
        end = time.perf_counter() + FLUSH_SECONDS
        for n in range(FLUSH_EVENTS):
            if not self._queue or (n % 64 == 63 and time.perf_counter() > end):
                break
            story, event = self._queue.popleft()
            story.apply(event)
            if event.kind == "token":
                self._note_version(story, event)
            batches.setdefault(story.id, (story, []))[1].append(event)
        for story, events in batches.values():
            self.on_update(story, events)

    def _note_version(self, story: Story, event: Event) -> None:
        if story is not self.story or event.settings_version <= self.applied[-1][0]:
            return
        version, index = event.settings_version, self.offset + event.index
        self.applied.append((version, index))
        changes: dict[str, Any] = {}
        for v in sorted(self.pending):
            if v <= version:
                changes.update(self.pending.pop(v))
        story.record_change(index, changes)
        if self.on_applied is not None:
            self.on_applied(story, version, index, changes)
