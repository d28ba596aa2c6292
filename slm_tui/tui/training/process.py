"""Starting and stopping `slm-train model` from the TUI. Torch-free.

The trainer runs as a child process (`python -m slm_tui.cli.train model ...`) in a session
and process group of its own (`start_new_session`), so the UI stays responsive, a crash of
either side never takes the other down, and a run left training when the TUI quits keeps
going (no hang-up signal reaches it). Its stdout and stderr go, appended, to
`<run>/train.log` (the trainer accepts a new run in a folder holding only that file).
Stop sends SIGTERM to the group: the trainer finishes its step, saves `latest/` and exits
0. A run started elsewhere (its folder's lock held by another process on this machine) is
stopped with SIGTERM to that process. Resume starts the command again with `--resume`
(the run's own config, with the same `--set` overrides). A refusal (exit code 2) is the
last line of the log: the trainer's one-line `error: ...`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slm_tui.trainer.report import LOG_FILE

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class TrainRequest:
    """What the start form asks for (a resumed run only needs `output`)."""

    output: Path
    preset: str | None = "tiny"  # a preset name or a YAML file; None: the run's own config
    data_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)  # empty: a held-out fraction
    overrides: list[str] = field(default_factory=list)  # section.key=value
    device: str = "auto"

    def argv(self, resume: bool = False) -> list[str]:
        cmd = [sys.executable, "-m", "slm_tui.cli.train", "model", "--output", str(self.output)]
        if resume:
            cmd.append("--resume")  # the run's own config.yaml, the overrides on top
        elif self.preset:
            cmd += ["--config", self.preset]
        if self.data_files:
            cmd += ["--data-files", *self.data_files]
        if self.val_files:
            cmd += ["--val-files", *self.val_files]
        for override in self.overrides:
            cmd += ["--set", override]
        if self.device != "auto":
            cmd += ["--set", f"train.device={self.device}"]
        return cmd


def last_line(path: Path, limit: int = 8192) -> str:
    """The last non-empty line of a text file (its last `limit` bytes), '' when none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            tail = f.read(limit)
    except OSError:
        return ""
    lines = [x.strip() for x in tail.decode("utf-8", "replace").splitlines()]
    return next((x for x in reversed(lines) if x), "")


class TrainProcess:
    """One `slm-train model` child process, started by this app."""

    def __init__(self, request: TrainRequest, resume: bool = False) -> None:
        self.request = request
        self.resume = resume
        self.argv = request.argv(resume)
        self.log = Path(request.output) / LOG_FILE
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child (OSError when the run folder or its log cannot be made)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # log lines as they happen
        with open(self.log, "ab") as log:
            log.write(f"$ {shlex.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """SIGTERM to the child's process group: it saves latest/ and exits."""
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def outcome(self) -> str | None:
        """How the child ended, in one line; None while it runs. A refusal or a failure is
        the trainer's own last line (`error: ...`)."""
        code = self.returncode
        if code is None:
            return None
        if code == 0:
            return "the trainer exited normally"
        if code < 0:
            return f"the trainer was killed by signal {-code} ({signal.Signals(-code).name})"
        line = last_line(self.log)
        return line if code == 2 and line else f"the trainer failed (exit code {code}): {line}"


def stop_pid(pid: int) -> bool:
    """SIGTERM to a run started elsewhere (the holder of its folder's lock); False when it
    is gone or not ours to signal."""
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    return True
