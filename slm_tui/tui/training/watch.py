"""Following a training run from outside: its `metrics.jsonl` tailed and folded into what
the Train screen shows. Torch-free.

- `MetricsTail` reads only the bytes appended since the last poll. A partial last line (the
  trainer is mid-write, or was killed mid-write) is kept until its newline arrives; a file
  or folder that does not exist yet is no records, not an error; a file that was replaced
  (a resumed run rewrites metrics.jsonl from its checkpoint's copy: a new inode) or that
  shrank is read again from the start. A 100k-line file is parsed in one `json.loads` call
  (bench/train_watch.py), a line at a time only when that fails. The UI thread polls, so
  each poll is bounded: at most `READ_LIMIT` bytes (a big file arrives over several polls,
  `behind` says more is waiting), no line longer than `LINE_LIMIT` is parsed (the trainer
  writes lines of a few KB: a longer one is skipped whole), and anything but a regular
  file (a FIFO, a device) is never read: it is opened without blocking and let go.
- `RunHistory` folds the records: the train and validation curves (kept downsampled as
  they arrive, `Curve`: the chart never sees more than ~2x its target points, so a long run
  redraws as fast as a short one), the latest train record, the best validation figure,
  the samples of every evaluation, `max_steps` and tokens per step (from the start/resume
  events: the chart's x axis spans the planned run), the moving step rate that gives the
  ETA (`trainer.pace.Pace`, as the trainer computes it: the warm-up left out, unknown
  until it settles), and how the run ended (finished, interrupted, diverged). Each object
  is read by `trainer.report.parse_record` into the trainer's own record dataclasses, every
  field checked (no NaN, no Infinity, no string where a number belongs, no 1e308: such an
  object is no record, or the optional field is None), so the screen reads attributes the
  trainer's tests and the type checker know; samples are cut to what is shown (`shown`).
- `RunWatch` is one run folder: the tail, the history, the process holding the folder's
  lock (`trainer.lock.lock_holder`: a run started from another terminal), its checkpoints.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_tui.checkpoint.format import CheckpointInfo, list_checkpoints, read_checkpoint_meta
from slm_tui.trainer.lock import lock_holder
from slm_tui.trainer.pace import Pace
from slm_tui.trainer.report import (
    DivergedRecord,
    EvalRecord,
    EventRecord,
    Sample,
    SamplesRecord,
    TrainRecord,
    parse_record,
)

METRICS_FILE = "metrics.jsonl"
READ_LIMIT = 2 << 20  # bytes read per poll: a huge file arrives over several polls
LINE_LIMIT = 1 << 20  # a line longer than this is not one the trainer wrote: skipped unread
CURVE_POINTS = 400  # the chart's target resolution (a curve keeps 400-800 points)
SAMPLES_SHOWN = 16  # samples kept per evaluation record
SAMPLE_CHARS = 2000  # characters kept of one sample's text
PROMPT_CHARS = 200  # ... and of its prompt


class MetricsTail:
    """The records appended to one metrics.jsonl since the last `poll`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.skipping = False  # inside a line longer than LINE_LIMIT: dropped to its newline
        self.ident: tuple[int, int] | None = None
        self.behind = False  # the last poll left bytes to read (the next one reads them)
        self.problem: str | None = None  # why the path cannot be read (not a regular file)

    def _forget(self) -> bool:
        """Nothing read holds any more; whether something had been read."""
        reset = self.ident is not None
        self.ident, self.offset, self.partial, self.skipping = None, 0, b"", False
        self.behind = False
        return reset

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        """(new records, reset): `reset` when the file was replaced, truncated or removed
        since the last poll, so what was read before no longer holds."""
        try:  # O_NONBLOCK: opening a FIFO for reading would wait for a writer forever
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            self.problem = None if isinstance(exc, FileNotFoundError) else exc.strerror
            return [], self._forget()
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.problem = f"{self.path.name} is not a regular file: not read"
                return [], self._forget()
            self.problem = None
            reset = False
            if (st.st_dev, st.st_ino) != self.ident or st.st_size < self.offset:
                reset = self._forget()
                self.ident = (st.st_dev, st.st_ino)
            if st.st_size == self.offset:
                self.behind = False
                return [], reset
            with open(fd, "rb", closefd=False) as f:
                f.seek(self.offset)
                data = f.read(min(st.st_size - self.offset, READ_LIMIT))
        finally:
            os.close(fd)
        self.offset += len(data)
        self.behind = self.offset < st.st_size
        return parse_lines(self._lines(data)), reset

    def _lines(self, data: bytes) -> list[bytes]:
        """The whole lines `data` completes, none longer than LINE_LIMIT."""
        *lines, last = data.split(b"\n")
        if lines:  # the first one ends the line in progress (dropped if it was too long)
            lines[0] = b"" if self.skipping else self.partial + lines[0]
            self.partial, self.skipping = b"", False
        if not self.skipping:
            self.partial += last
        if len(self.partial) > LINE_LIMIT:  # a line too long to be ours: skip to its end
            self.partial, self.skipping = b"", True
        return [line for line in lines if len(line) <= LINE_LIMIT]


def parse_lines(lines: list[bytes]) -> list[dict[str, Any]]:
    """The JSON objects among `lines` (blank, torn or foreign lines are skipped)."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return []
    try:  # the common case, ~5x faster than a call per line
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except (ValueError, RecursionError):
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except (ValueError, RecursionError):
                continue
    return [r for r in records if isinstance(r, dict)]


class Curve:
    """(x, y) points averaged into buckets of a size that doubles whenever there are more
    than 2 x `target` of them: O(1) per point, at most 2 x `target` points to draw."""

    def __init__(self, target: int = CURVE_POINTS) -> None:
        self.target = target
        self.size = 1  # points per bucket
        self.buckets: list[list[float]] = []  # [sum x, sum y, count]
        self.count = 0  # points added

    def add(self, x: float, y: float) -> None:
        self.count += 1
        last = self.buckets[-1] if self.buckets else None
        if last is not None and last[2] < self.size:
            last[0] += x
            last[1] += y
            last[2] += 1
            return
        self.buckets.append([x, y, 1])
        if len(self.buckets) > 2 * self.target:
            pairs = zip(self.buckets[0::2], self.buckets[1::2], strict=False)
            merged = [[a[0] + b[0], a[1] + b[1], a[2] + b[2]] for a, b in pairs]
            if len(self.buckets) % 2:
                merged.append(self.buckets[-1])
            self.buckets, self.size = merged, self.size * 2

    def points(self) -> tuple[list[float], list[float]]:
        xs = [b[0] / b[2] for b in self.buckets]
        ys = [b[1] / b[2] for b in self.buckets]
        return xs, ys


def shown(record: SamplesRecord) -> SamplesRecord:
    """The samples of one evaluation cut to what the screen shows (and keeps in memory)."""
    samples = [
        Sample(s.prompt[:PROMPT_CHARS], s.text[:SAMPLE_CHARS])
        for s in record.samples[:SAMPLES_SHOWN]
    ]
    return SamplesRecord(step=record.step, tokens=record.tokens, samples=samples)


@dataclass
class RunHistory:
    """What the records of one run say, folded as they arrive."""

    train: Curve = field(default_factory=Curve)  # (tokens, loss)
    evals: list[EvalRecord] = field(default_factory=list)  # in order
    samples: list[SamplesRecord] = field(default_factory=list)  # in order, cut (`shown`)
    last_train: TrainRecord | None = None
    best: EvalRecord | None = None  # the evaluation with the lowest val_loss
    max_steps: int | None = None
    tokens_per_step: int | None = None  # from the start/resume events
    last_event: EventRecord | DivergedRecord | None = None  # start / resume / interrupted / ...
    pace: Pace = field(default_factory=Pace)  # the moving step rate, for the ETA
    records: int = 0  # objects read, records or not

    def add(self, lines: list[dict[str, Any]]) -> set[str]:
        """Fold metrics.jsonl objects in (each read by `parse_record`: anything that is no
        record is skipped); the kinds that changed ("train", "eval", "samples", "event")."""
        changed: set[str] = set()
        for line in lines:
            self.records += 1
            r = parse_record(line)
            if isinstance(r, TrainRecord):
                if r.loss is not None:  # a NaN loss was written as null
                    self.train.add(r.tokens, r.loss)
                self.pace.add(r.step, r.elapsed_s)
                self.last_train = r
                changed.add("train")
            elif isinstance(r, EvalRecord):
                self.evals.append(r)
                if self.best is None or r.val_loss < self.best.val_loss:
                    self.best = r
                changed.add("eval")
            elif isinstance(r, SamplesRecord) and r.samples:
                self.samples.append(shown(r))
                changed.add("samples")
            elif isinstance(r, (EventRecord, DivergedRecord)):
                self.last_event = r
                if isinstance(r, EventRecord):
                    if r.event in ("start", "resume"):
                        self.pace.restart()  # a (re)start: its warm-up is no part of the rate
                    if r.max_steps is not None:
                        self.max_steps = r.max_steps
                    if r.tokens_per_step:
                        self.tokens_per_step = r.tokens_per_step
                changed.add("event")
        return changed

    @property
    def step(self) -> int:
        return max((r.step for r in (self.last_train, self.last_event) if r is not None), default=0)

    @property
    def tokens(self) -> int:
        if self.last_train is not None:
            return self.last_train.tokens
        return self.last_event.tokens if isinstance(self.last_event, EventRecord) else 0

    @property
    def planned_tokens(self) -> float | None:
        """Tokens seen at max_steps: max_steps x tokens per step (the start event's, else
        what the latest train record says of one step, for runs logged before events
        carried it); None while either is unknown."""
        per_step: float | None = self.tokens_per_step
        t = self.last_train
        if not per_step and t is not None and t.step > 0:
            per_step = t.tokens / t.step
        return None if not (self.max_steps and per_step) else float(self.max_steps * per_step)

    def eta_s(self) -> float | None:
        """Seconds left at the moving step rate (`trainer.pace`: the warm-up left out); None
        until the rate has settled, or while max_steps is unknown."""
        return self.pace.eta_s(self.max_steps)

    def ending(self) -> str | None:
        """How the run ended, as the records tell it; None while it may still be going."""
        event = self.last_event
        if isinstance(event, DivergedRecord):
            return (
                f"the loss became non-finite at step {event.step}: the run stopped; "
                "latest/ keeps the last good weights (lower train.lr or raise warmup)"
            )
        if isinstance(event, EventRecord) and event.event == "interrupted":
            return f"stopped at step {event.step}: Resume continues it"
        if self.max_steps is not None and self.evals and self.evals[-1].step == self.max_steps:
            return f"finished at step {self.max_steps}"  # the last step always evaluates
        return None


def find_runs(roots: list[Path], exclude: Path | None = None) -> list[Path]:
    """Run folders (a metrics.jsonl inside) in `roots` or right under them, the most
    recently written first, each once (as first found), `exclude` left out; a folder that
    cannot be read is skipped."""
    seen = {exclude.resolve()} if exclude is not None else set()
    found: list[tuple[float, Path]] = []
    for root in roots:
        for metrics in (root / METRICS_FILE, *sorted(root.glob(f"*/{METRICS_FILE}"))):
            try:
                mtime, real = metrics.stat().st_mtime, metrics.parent.resolve()
            except OSError:
                continue
            if real not in seen:
                seen.add(real)
                found.append((mtime, metrics.parent))
    return [folder for _, folder in sorted(found, key=lambda f: -f[0])]


class RunWatch:
    """One run folder as the Train screen follows it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.tail = MetricsTail(self.folder / METRICS_FILE)
        self.history = RunHistory()

    def poll(self) -> set[str]:
        """Read what was appended; the kinds that changed ("reset" when all of it did)."""
        problem = self.tail.problem
        records, reset = self.tail.poll()
        changed = {"problem"} if self.tail.problem != problem else set()
        if reset:
            self.history = RunHistory()
            changed.add("reset")
        changed |= self.history.add(records)
        if self.history.max_steps is None and changed:
            self.history.max_steps = self._saved_max_steps()
        return changed

    def _saved_max_steps(self) -> int | None:
        """max_steps from latest/meta.json, for runs logged before events carried it."""
        try:
            value = read_checkpoint_meta(self.folder / "latest").get("max_steps")
        except Exception:  # no checkpoint yet, or a broken one: unknown
            return None
        return value if isinstance(value, int) else None

    def trainer_pid(self) -> int | None:
        """The process training in this folder now (on this machine), if any."""
        return lock_holder(self.folder)

    def checkpoints(self) -> list[CheckpointInfo]:
        """The run's loadable checkpoints (latest/, best/, evals/step-*), newest first."""
        return [i for i in list_checkpoints(self.folder) if not i.error]

    def newest_checkpoint(self) -> Path | None:
        """The most recently written of them (latest/ while a run trains)."""
        infos = self.checkpoints()
        return Path(infos[0].path) if infos else None
