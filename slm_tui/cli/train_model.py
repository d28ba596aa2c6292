"""`slm-train model`: the third stage of the pipeline, a thin wrapper over `slm_tui.trainer`.

Resolves the config (preset or YAML, `--set` overrides, corpus and tokenizer flags), prints
it in full to stderr, and runs the trainer with a rich live display (step, loss, val loss,
bits per byte, tokens/s, MFU on GPU, ETA); without a terminal it prints one line per log
step instead. Under torchrun only rank 0 prints. Lines are built from `rich.text.Text`
pieces, never markup: a path or a sample holding `[/]` prints as it is. The trainer (torch)
is imported when the command runs, so `--help` stays quick.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from slm_tui.cli.common import (
    DataFilesOpt,
    MoreFilesArg,
    ValFilesOpt,
    absolute_files,
    cli_errors,
    data_files_from,
    err,
    is_tty,
)
from slm_tui.trainer.report import EvalRecord, Reporter, RunStart, SamplesRecord, TrainRecord


def _rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


class RichReporter(Reporter):
    """The trainer's hooks drawn as a rich progress bar plus printed evaluations."""

    def __init__(self, live: bool, title: str = "") -> None:
        self.live = live
        self.title = title
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.fields = {"loss": "-", "val": "-", "bpb": "-", "tps": "-", "mfu": ""}

    def _print(self, *parts: str | tuple[str, str]) -> None:
        """One line from plain strings and (text, style) pairs."""
        console = self.progress.console if self.progress is not None else err
        console.print(Text.assemble(*parts), highlight=False)

    def on_message(self, text: str) -> None:
        self._print((text, "cyan"))

    def on_start(self, info: RunStart) -> None:
        # The config is printed once every check has passed, so a refusal stays one line.
        err.print(Text.assemble(("config", "bold"), f" ({self.title})"), highlight=False)
        err.print(info.config.to_yaml().rstrip(), highlight=False)
        self._print(
            ("training", "bold"),
            f" {info.params / 1e6:.2f}M parameters on {info.device}"
            f" (x{info.world_size}), {info.tokens_per_step:,} tokens/step, "
            f"{info.train_tokens:,} train tokens, {info.tokenizer} vocab "
            f"{info.vocab_size} -> {info.output}",
            (f" (resumed at step {info.step})" if info.resumed else "", "yellow"),
        )
        self._print(("speed", "bold"), f" {info.speed}")
        if self.live:
            self.progress = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn(
                    "loss {task.fields[loss]}  val {task.fields[val]}  "
                    "bpb {task.fields[bpb]}  {task.fields[tps]} tok/s{task.fields[mfu]}"
                ),
                TimeRemainingColumn(),
                console=err,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=info.max_steps, completed=info.step, **self.fields
            )

    def on_log(self, record: TrainRecord) -> None:
        self.fields["loss"] = _fmt(record.loss)
        self.fields["tps"] = f"{record.tokens_per_s:,.0f}"
        if record.mfu is not None:
            self.fields["mfu"] = f"  MFU {record.mfu * 100:.1f}%"
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=record.step, **self.fields)
        else:
            eta = record.eta_s
            self._print(
                f"step {record.step}  loss {self.fields['loss']}  lr {record.lr:.2e}  "
                f"{self.fields['tps']} tok/s{self.fields['mfu']}"
                + (f"  eta {eta:.0f}s" if eta is not None else "")
            )

    def on_eval(self, record: EvalRecord) -> None:
        self.fields["val"] = _fmt(record.val_loss)
        self.fields["bpb"] = _fmt(record.val_bpb, ".3f")
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, **self.fields)
        self._print(
            ("eval", "green"),
            f" step {record.step}: val loss {self.fields['val']} "
            f"nats/token, {self.fields['bpb']} bits/byte",
        )

    def on_samples(self, record: SamplesRecord) -> None:
        for s in record.samples:
            text = " ".join(s.text.split())  # one line per sample
            space = " " if s.text[:1].isspace() else ""
            self._print("  ", (s.prompt, "dim"), space, (text[:160], "italic"))

    def on_save(self, path: Path, kind: str) -> None:
        if kind == "best" or self.progress is None:
            self._print((f"saved {kind} -> {path}", "dim"))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def model(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Preset name (tiny, small, seed-gpt) or a YAML file. Default: tiny, or the run's own config with --resume.",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value: section.key=value (repeatable)."),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="An existing tokenizer directory; without it one is trained into <output>/tokenizer.",
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Hugging Face dataset id to train on.")
    ] = None,
    data_files: DataFilesOpt = None,
    val_files: ValFilesOpt = None,
    more_files: MoreFilesArg = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Run folder (default checkpoints/<preset>)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --output from its latest checkpoint."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace a run already in --output (its checkpoints are deleted)."
        ),
    ] = False,
) -> None:
    """Train a model from text (tokenizer and shards are built first when missing)."""
    with cli_errors():
        from slm_tui.config import load_config
        from slm_tui.trainer import train

        name = config or "tiny"
        out_dir = Path(output) if output else Path("checkpoints") / Path(name).stem
        base = name
        if resume and config is None and (out_dir / "latest" / "config.yaml").is_file():
            base = str(out_dir / "latest" / "config.yaml")
        files, val = data_files_from(data_files, more_files), val_files or []
        cfg = load_config(base, list(set_ or []))
        if files:
            cfg.data.data_files = absolute_files(files)
        elif dataset:
            cfg.data.dataset, cfg.data.data_files = dataset, []
        if val:
            cfg.data.val_files = absolute_files(val)
        cfg.validate()
        rank0 = _rank0()
        title = f"resumed run {out_dir}" if base != name else name
        reporter = RichReporter(live=is_tty() and rank0, title=title)
        try:
            result = train(
                cfg,
                out_dir,
                resume=resume,
                force=force,
                tokenizer_path=tokenizer,
                reporter=reporter,
            )
        finally:
            reporter.close()
        if rank0:
            verb = "stopped (interrupted)" if result.status == "interrupted" else "finished"
            err.print(
                Text.assemble(
                    (verb, "bold"),
                    f" at step {result.step}, {result.tokens_seen:,} tokens in "
                    f"{result.seconds:.0f}s; val loss {_fmt(result.val_loss)}, "
                    f"{_fmt(result.val_bpb, '.3f')} bits/byte; checkpoints in {result.output}"
                    + (" — continue with --resume" if result.status == "interrupted" else ""),
                ),
                highlight=False,
            )
