"""How fast a run goes and when it ends: a moving rate of optimizer steps per second.

One pure, torch-free helper for everyone who shows an ETA: the trainer fills `eta_s` of
metrics.jsonl's train records with it, `slm-train model` prints it, and a watcher of
metrics.jsonl (slm-tui's Train screen) can fold the same records into it (`Pace.fold`).

- Points are (step, elapsed_s) of the train records, elapsed_s counting wall-clock time
  trained (evaluations and saves included: they recur in the time left, too).
- The warm-up is left out: the first point after a (re)start is only where measuring
  begins, so the interval before it (the first steps, torch.compile, caches warming) is
  never part of the rate; tokenizer training and shard building come before `elapsed_s`
  starts at all.
- The rate is taken over the last `window` log intervals (a moving window), and none is
  given until `settle` intervals after the warm-up one: until then the ETA is unknown
  (None; shown as "…"), never a guess.
- A "start" or "resume" event, or a point that goes back in steps or time (a rewritten
  metrics.jsonl), begins measuring again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

WINDOW = 10  # log intervals in the moving rate
SETTLE = 3  # intervals measured after the warm-up before a rate is given


class Pace:
    """Steps per second over the last `window` log intervals, and the ETA it gives."""

    def __init__(self, window: int = WINDOW, settle: int = SETTLE) -> None:
        if window < 1 or settle < 1:
            raise ValueError("window and settle must be at least 1")
        self.window = window
        self.settle = min(settle, window)
        self.points: deque[tuple[int, float]] = deque(maxlen=window + 1)
        self.intervals = 0  # intervals measured since the (re)start

    def restart(self) -> None:
        """A (re)start: what was measured no longer holds, and a warm-up follows."""
        self.points.clear()
        self.intervals = 0

    def add(self, step: int, elapsed_s: float) -> None:
        """A train record's step and elapsed_s (seconds trained, the whole run's)."""
        if self.points:
            last_step, last_time = self.points[-1]
            if step <= last_step or elapsed_s < last_time:
                self.restart()
            else:
                self.intervals += 1
        self.points.append((step, float(elapsed_s)))

    def fold(self, record: Mapping[str, Any]) -> None:
        """One metrics.jsonl record: a train record adds a point, a "start" or "resume"
        event begins measuring again, anything else is ignored."""
        kind = record.get("kind")
        if kind == "event" and record.get("event") in ("start", "resume"):
            self.restart()
        elif kind == "train":
            step, elapsed = record.get("step"), record.get("elapsed_s")
            if _whole(step) and _number(elapsed):
                self.add(step, elapsed)

    @classmethod
    def of(cls, records: Iterable[Mapping[str, Any]], **kwargs: int) -> Pace:
        """A Pace folded from metrics.jsonl records, oldest first."""
        pace = cls(**kwargs)
        for record in records:
            pace.fold(record)
        return pace

    @property
    def settled(self) -> bool:
        return self.intervals >= self.settle

    @property
    def step(self) -> int | None:
        """The step of the latest point."""
        return self.points[-1][0] if self.points else None

    @property
    def steps_per_s(self) -> float | None:
        """Optimizer steps per second over the window; None until settled."""
        if not self.settled:
            return None
        (s0, t0), (s1, t1) = self.points[0], self.points[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def eta_s(self, max_steps: int | None) -> float | None:
        """Seconds until `max_steps` at the moving rate; 0 once there; None while unknown
        (not settled yet, or no max_steps)."""
        if max_steps is None or self.step is None:
            return None
        left = max_steps - self.step
        if left <= 0:
            return 0.0
        rate = self.steps_per_s
        return left / rate if rate else None


def format_duration(seconds: float | None, unknown: str = "…") -> str:
    """'42s', '3m 05s', '1h 02m'; `unknown` for None (or a negative or NaN value)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return unknown
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
