"""The Train screen (Ctrl+T, or `slm-tui --watch RUN_DIR`): watch a run learn.

Live while a process trains (this app's child, or a run started from another terminal),
or finished (the whole history at once). Every half second it reads what was appended to
the run's metrics.jsonl (`watch`) and redraws only what changed: the loss chart
(train and validation against tokens, over the run's planned length; `l` log y, `b` bits
per byte; `o` draws a second run's curves over them), the figures (step / max steps,
tokens, tokens/s, ETA, lr, best validation, MFU on a GPU) and the samples of every
evaluation, newest first. `n` opens the start form, `x` stops the run (SIGTERM: it saves
and exits), `r` resumes it, `w` loads its newest checkpoint into the story screen, `c`
compares two of its checkpoints. The screen is given a `Training` (the run folder and
process, the overlaid run) and the two callbacks that reach the story side; it never
reaches into the app.
A poll reads a bounded slice (`watch.READ_LIMIT`); when more waits, the next poll comes
at once, so a huge history arrives in slices with frames between them. A metrics.jsonl
that is not a regular file (a FIFO) is never opened for reading: the title says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

from slm_tui.tui.keys import TRAIN_KEYS
from slm_tui.tui.training.chart import LossChart, curves_of
from slm_tui.tui.training.form import StartForm
from slm_tui.tui.training.process import TrainRequest
from slm_tui.tui.training.run_picker import RunPicker
from slm_tui.tui.training.samples import TrainSamples
from slm_tui.tui.training.state import Training, default_request
from slm_tui.tui.training.stats import TrainStats
from slm_tui.tui.training.watch import RunWatch

POLL_SECONDS = 0.5
CATCH_UP_SECONDS = 0.02  # the next poll, when the last one left bytes to read


class Line(Widget):
    """One line of plain text and a style (a path or a trainer message is never markup)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.text, self.style = "", ""

    def set(self, text: str, style: str = "") -> None:
        if (text, style) != (self.text, self.style):
            self.text, self.style = text, style
            self.refresh()

    def render(self) -> Content:
        return Content.styled(self.text, self.style) if self.style else Content(self.text)


class TrainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = list(TRAIN_KEYS)
    HELP_TITLE = "the Train screen"
    HELP_EXTRA_TITLE = "What it shows"
    HELP_EXTRA = (
        ("the chart", "train loss (a line) and validation (a dot per evaluation) against "
         "tokens seen, across the run's planned length"),
    )  # fmt: skip

    def __init__(
        self,
        training: Training,
        write_newest: Callable[[Path], None],
        compare: Callable[[Path], None],
        on_change: Callable[[], None] = lambda: None,
        poll: bool = True,
    ) -> None:
        super().__init__()
        self.training = training
        self.write_newest = write_newest  # load this checkpoint into the story screen
        self.compare = compare  # compare checkpoints of this run folder
        self.on_change = on_change  # a run started or stopped (the app re-checks CPU sharing)
        self.poll_enabled = poll  # tests and snapshots poll by hand
        self.message = ""  # the latest news (a refusal, "stopping…"), for tests too
        self.pid: int | None = None
        self.polls = 0
        self._catching_up = False

    def compose(self) -> ComposeResult:
        yield Line(id="train-title")
        with Horizontal(id="train-top"):
            yield LossChart(id="train-chart")
            yield TrainStats(id="train-stats")
        yield TrainSamples(id="train-samples")
        yield Line(id="train-message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#train-samples").border_title = "samples at each evaluation, newest first"
        self.refresh_all(full=True)
        self.poll()  # a finished run: the whole history at once
        if self.poll_enabled:
            self.set_interval(POLL_SECONDS, self.poll, name="train-poll")

    # -- reading the run ---------------------------------------------------------------
    def poll(self) -> None:
        """Read what the run appended and what its process did; redraw what changed."""
        self.polls += 1
        watch = self.training.watch
        changed = watch.poll() if watch is not None else set()
        overlay = self.training.overlay
        if overlay is not None and overlay.poll() & {"train", "eval", "event", "reset"}:
            changed.add("overlay")
        outcome = self.training.outcome()
        pid = self.training.trainer_pid()
        if pid != self.pid:
            self.pid = pid
            self.on_change()
            changed.add("process")
        if changed:
            self.refresh_all(full="reset" in changed, changed=changed)
        if outcome is not None and outcome != "the trainer exited normally":
            self.say(outcome, "$text-error")  # the trainer's own last line says most
        elif outcome is not None:
            ending = watch.history.ending() if watch is not None else None
            self.say(ending or outcome, "$text-success")
        behind = any(w is not None and w.tail.behind for w in (watch, overlay))
        if behind and self.poll_enabled and not self._catching_up:
            self._catching_up = True
            self.set_timer(CATCH_UP_SECONDS, self._catch_up)

    def _catch_up(self) -> None:
        self._catching_up = False
        self.poll()

    def refresh_all(self, full: bool = False, changed: set[str] | None = None) -> None:
        watch = self.training.watch
        changed = changed or set()
        self._title()
        if watch is None:
            return
        history = watch.history
        self.query_one(TrainStats).show(history, live=self.pid is not None)
        if full or changed & {"train", "eval", "event", "overlay"}:
            overlay = self.training.overlay
            self.query_one(LossChart).show(
                curves_of(history),
                curves_of(overlay.history, overlay.folder.name) if overlay is not None else None,
            )
        if full or "samples" in changed:
            self.query_one(TrainSamples).show(history.samples)
        if changed & {"event", "process"} and self.pid is None:
            ending = history.ending()
            if ending is not None and "non-finite" in ending:
                self.say(ending, "$text-error")

    def _title(self) -> None:
        folder = self.training.folder
        if folder is None:
            self.query_one("#train-title", Line).set(
                "no run yet: n starts one; slm-tui --watch RUN_DIR follows one started elsewhere",
                "$text-muted",
            )
            return
        own = self.training.own_running
        if self.pid is not None:
            state = f"training (process {self.pid}{'' if own else ', started elsewhere'})"
        else:
            watch = self.training.watch
            history = watch.history if watch is not None else None
            ending = history.ending() if history is not None else None
            problem = watch.tail.problem if watch is not None else None
            exists = (folder / "metrics.jsonl").exists()
            waiting = "not training" if exists else "waiting for metrics.jsonl"
            state = problem or ending or waiting
        self.query_one("#train-title", Line).set(f"{folder} · {state}", "bold")

    def say(self, text: str, style: str = "$text-accent") -> None:
        self.message = text
        self.query_one("#train-message", Line).set(text, style)

    # -- actions -----------------------------------------------------------------------
    def action_start(self) -> None:
        last = self.training.request  # the form starts from the last run's choices
        form = default_request(self.training.checkpoints_dir, (last and last.preset) or "tiny")
        if last is not None:
            form.data_files, form.overrides = list(last.data_files), list(last.overrides)
            form.val_files = list(last.val_files)
            form.device = last.device
        self.app.push_screen(StartForm(form, self.training.presets), self._start)

    def _start(self, request: TrainRequest | None) -> None:
        if request is not None:
            self._launch(self.training.start(request), f"started a run in {request.output}")

    def action_resume(self) -> None:
        self._launch(self.training.resume(), "resuming…")

    def _launch(self, error: str | None, news: str) -> None:
        if error is not None:
            self.say(error, "$text-error")
            return
        self.say(news)
        self.pid = self.training.trainer_pid()
        self.on_change()
        self.refresh_all(full=True, changed={"process"})

    def action_stop(self) -> None:
        self.say(self.training.stop(), "$text-warning")

    def action_write_newest(self) -> None:
        watch = self.training.watch
        newest = watch.newest_checkpoint() if watch is not None else None
        if newest is None:
            self.say(
                "no checkpoint saved yet: the first comes at train.save_every", "$text-warning"
            )
            return
        self.write_newest(newest)

    def action_compare(self) -> None:
        watch = self.training.watch
        if watch is None or len(watch.checkpoints()) < 2:
            self.say(
                "fewer than two checkpoints in this run: train.keep_every_eval=true keeps one "
                "at every evaluation",
                "$text-warning",
            )
            return
        self.compare(watch.folder)

    def action_overlay(self) -> None:
        """Pick a second run to draw over this one; with one drawn, take it away."""
        if self.training.overlay is not None:
            name = self.training.overlay.folder.name
            self.training.overlay = None
            self.refresh_all(full=True)
            self.say(f"{name} is no longer drawn: o picks another run")
            return
        self.app.push_screen(RunPicker(self.training.other_runs()), self._overlay)

    def _overlay(self, folder: Path | None) -> None:
        if folder is None:
            return
        self.training.overlay = RunWatch(folder)
        self.say(f"drawing {folder} over this run: o again takes it away")
        self.poll()  # its history arrives in bounded slices, as the watched run's does

    def action_toggle_log(self) -> None:
        chart = self.query_one(LossChart)
        chart.set_view(log_y=not chart.log_y)

    def action_toggle_bits(self) -> None:
        chart = self.query_one(LossChart)
        chart.set_view(bits=not chart.bits)
