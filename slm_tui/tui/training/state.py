"""The app's side of training: the run folder being watched, the run this app started, and
whether a local run is training now. Torch-free.

The Train screen is given a `Training` and drives it (start, stop, resume, poll); the app
asks it `trainer_pid()` every few seconds for CPU fairness. It outlives the screen, so
closing and reopening the Train screen keeps the history read so far, and a run started
here is still known (for the quit question) when the screen is closed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import psutil

from slm_tui.presets import list_presets
from slm_tui.tui.training.process import TrainProcess, TrainRequest, stop_pid
from slm_tui.tui.training.watch import RunWatch, find_runs

SHARED_TEXT = Path("../shared/data/tinystories/train.txt")  # this project's development text
FIRST_RUN_STEPS = 300  # `tiny` writes readable stories by ~300 steps (its full 1,500: ~10 min)


def first_run_overrides(cores: int | None = None) -> list[str]:
    """The start form's `--set` values for a first run, as real values the user sees and
    edits: a short run (FIRST_RUN_STEPS), and training on all physical cores but one, which
    is left to this app's own generation (one thread while a run trains: `cpu_share`), so
    writing while it trains takes no core from it."""
    cores = cores or psutil.cpu_count(logical=False) or 2
    return [f"train.max_steps={FIRST_RUN_STEPS}", f"train.threads={max(1, cores - 1)}"]


def default_request(checkpoints_dir: Path, preset: str = "tiny") -> TrainRequest:
    """The start form's first values: the preset, the shared TinyStories text when it is
    there (train.txt, and dev.txt to validate on: the file choices are made on, so valid.txt
    stays untouched for reporting; else nothing: the trainer reads the Hugging Face
    dataset), a fresh folder, and a short first run (`first_run_overrides`)."""
    n, output = 1, checkpoints_dir / preset
    while output.exists():
        n += 1
        output = checkpoints_dir / f"{preset}-{n}"
    shared = SHARED_TEXT.is_file()
    val = SHARED_TEXT.with_name("dev.txt")
    return TrainRequest(
        output=output,
        preset=preset,
        data_files=[str(SHARED_TEXT)] if shared else [],
        val_files=[str(val)] if shared and val.is_file() else [],
        overrides=first_run_overrides(),
    )


def split_words(text: str) -> list[str]:
    """Space-separated words, quotes allowed ('my data/*.txt'); ValueError on a lone quote."""
    return shlex.split(text)


class Training:
    """The run folder the Train screen shows, and the trainer this app started there."""

    def __init__(self, run_dir: Path | None, checkpoints_dir: Path) -> None:
        self.checkpoints_dir = Path(checkpoints_dir)
        self.watch: RunWatch | None = RunWatch(run_dir) if run_dir is not None else None
        self.overlay: RunWatch | None = None  # a second run the chart draws over this one
        self.process: TrainProcess | None = None
        self.request: TrainRequest | None = None  # the last run started here
        self.presets = list_presets()
        self._reported = True  # the process's outcome was handed out

    @property
    def folder(self) -> Path | None:
        return None if self.watch is None else self.watch.folder

    def watch_folder(self, folder: Path) -> None:
        if self.folder is None or Path(folder).resolve() != self.folder.resolve():
            self.watch = RunWatch(Path(folder))

    def other_runs(self) -> list[Path]:
        """Run folders to overlay: beside the watched one, and in the checkpoints folder."""
        roots = [self.checkpoints_dir]
        if self.folder is not None:
            roots.insert(0, self.folder.parent)
        return find_runs(roots, exclude=self.folder)

    # -- the trainer process ----------------------------------------------------------
    def start(self, request: TrainRequest, resume: bool = False) -> str | None:
        """Start `slm-train model` for `request`; a one-line reason when it cannot start."""
        pid = self.trainer_pid_in(request.output)
        if pid is not None:
            return f"{request.output} is in use by another training run (process {pid})"
        process = TrainProcess(request, resume=resume)
        try:
            process.start()
        except OSError as exc:
            return f"cannot start the trainer in {request.output}: {exc.strerror or exc}"
        self.process, self.request, self._reported = process, request, False
        self.watch_folder(request.output)
        return None

    def resume(self) -> str | None:
        """Start the watched run again with --resume (the last request's overrides, when it
        was started here)."""
        if self.folder is None:
            return "no run to resume: start one first (n)"
        same = self.request is not None and self.request.output.resolve() == self.folder.resolve()
        request = self.request if same and self.request else TrainRequest(self.folder, None)
        return self.start(request, resume=True)

    def stop(self) -> str:
        """Ask the training run to save and exit; what was done, in one line."""
        if self.process is not None and self.process.running:
            self.process.stop()
            return "stopping: the trainer finishes its step and saves latest/…"
        pid = self.trainer_pid()
        if pid is not None and stop_pid(pid):
            return f"stopping process {pid} (started elsewhere): it saves latest/ and exits…"
        return "no run is training here"

    @property
    def own_running(self) -> bool:
        return self.process is not None and self.process.running

    def trainer_pid_in(self, folder: Path) -> int | None:
        own = self.process.request.output if self.process is not None else None
        if self.own_running and own is not None and own.resolve() == Path(folder).resolve():
            return self.process.pid if self.process is not None else None
        return RunWatch(Path(folder)).trainer_pid()

    def trainer_pid(self) -> int | None:
        """The process training in the watched folder now: ours, or one from elsewhere."""
        if self.own_running and self.process is not None:
            return self.process.pid
        return self.watch.trainer_pid() if self.watch is not None else None

    @property
    def active(self) -> bool:
        """A local run trains: ours, or the watched folder's lock holder (CPU fairness)."""
        return self.trainer_pid() is not None

    def outcome(self) -> str | None:
        """How the run this app started ended, once (None while it runs or once told)."""
        if self._reported or self.process is None:
            return None
        outcome = self.process.outcome()
        if outcome is not None:
            self._reported = True
        return outcome
