"""`slm-train model`: the third stage of the pipeline, a thin wrapper over `slm_tui.trainer`.

Resolves the config (preset or YAML, `--set` overrides, corpus and tokenizer flags) and runs
the trainer, which writes it to `<output>/config.yaml` (`--print-config` prints it too).
Four lines open a run: what trains (model, device), on what (tokens, validation, steps),
how (the speed line) and where. Then a rich live display (step N/M, loss, val loss, bits
per byte, tokens/s, MFU on GPU, ETA); without a terminal one line per log step instead. The
ETA is the trainer's (`trainer.pace`: a moving rate that leaves the warm-up out), "…" until
it settles. The closing line gives tokens and time of this process and, after `--resume`,
of the whole run. Under torchrun only rank 0 prints. Lines are built from `rich.text.Text`
pieces, never markup: a path or a sample holding `[/]` prints as it is. The trainer (torch)
is imported when the command runs, so `--help` stays quick.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn
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
    plural,
    shown_path,
)
from slm_tui.cli.progress import TaskFields, rates, stage_progress
from slm_tui.trainer.pace import format_duration
from slm_tui.trainer.report import EvalRecord, Reporter, RunStart, SamplesRecord, TrainRecord

LABEL = 9  # the opening lines' labels are padded to this width
YAML = (".yaml", ".yml")

if TYPE_CHECKING:
    from slm_tui.shards import ShardProgress

_PREPARE_LINE_EVERY = 5.0  # seconds between shard progress lines without a terminal


def _rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _count(n: float) -> str:
    """'1.33M', '246k', '950'."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:,.0f}"


def _epochs(n: float) -> str:
    """'0.0031 epochs', '2.5 epochs', '1 epoch', '120 epochs'."""
    shown = f"{n:,.0f}" if n >= 10 else f"{n:.2g}"
    return f"{shown} {'epoch' if shown == '1' else 'epochs'}"


def _files(files: list[str]) -> str:
    """Corpus files as typed (relative to here when inside it), the first two named."""
    shown = [shown_path(f) for f in files]
    more = len(shown) - 2
    return ", ".join(shown[:2]) + (f" and {plural(more, 'more file')}" if more > 0 else "")


def step_of(step: int, max_steps: int) -> str:
    """'step 30/300 (10%)'."""
    pct = 100 * step / max_steps if max_steps else 100
    return f"step {step}/{max_steps} ({pct:.0f}%)"


def opening_lines(info: RunStart, name: str) -> list[tuple[str, str]]:
    """(label, text) of the lines that open a run: what trains, on what, how, where."""
    m, d = info.config.model, info.config.data
    where = info.device + (f" x{info.world_size} processes" if info.world_size > 1 else "")
    what = (
        f"{name + ': ' if name else ''}{_count(info.params)} parameters ({m.n_layer} layers, d_model {m.d_model}, "
        f"context {m.context_length}) on {where}, {plural(info.max_steps, 'step')} of "
        f"{plural(info.tokens_per_step, 'token')}"
    )
    source = _files(d.data_files) if d.data_files else str(d.dataset)
    held = f"validation: {_files(d.val_files)}" if d.val_files else info.held_out
    epochs = info.max_steps * info.tokens_per_step / max(1, info.train_tokens)
    data = (
        f"{source}, {info.tokenizer} vocab {info.vocab_size:,}: "
        f"{plural(info.train_tokens, 'train token')} ({_epochs(epochs)}); {held}"
    )
    lines = [("training", what), ("data", data), ("speed", info.speed)]
    if info.resumed:
        lines.append(
            (
                "resumed",
                f"at {step_of(info.step, info.max_steps)}: "
                f"{plural(info.tokens_seen, 'token')} in {format_duration(info.elapsed_s)} "
                "trained before",
            )
        )
    out = shown_path(info.output)
    lines.append(("output", f"{out} (config: {shown_path(Path(out) / 'config.yaml')})"))
    return lines


class RichReporter(Reporter):
    """The trainer's hooks drawn as a rich progress bar plus printed evaluations."""

    def __init__(
        self, live: bool, title: str = "", print_config: bool = False, name: str = ""
    ) -> None:
        self.live = live
        self.title = title  # of the printed config
        self.name = name  # the preset or config file the run trains, "" for a run's own
        self.print_config = print_config
        self.start: RunStart | None = None
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.fields: TaskFields = {
            "loss": "-",
            "val": "-",
            "bpb": "-",
            "tps": "-",
            "mfu": "",
            "eta": "…",
        }
        self.shards: ShardProgress | None = None  # the shard step's latest progress
        self.shards_bar: Progress | None = None
        self.shards_line = 0.0  # when the last progress line was printed (no terminal)

    def _print(self, *parts: str | tuple[str, str]) -> None:
        """One line from plain strings and (text, style) pairs."""
        console = self.progress.console if self.progress is not None else err
        console.print(Text.assemble(*parts), highlight=False)

    def on_message(self, text: str) -> None:
        self._end_shards()
        self._print((text, "cyan"))

    def on_prepare(self, p: ShardProgress) -> None:
        """The shard step: a bar with MB/s and ETA on a terminal, a line every 5 s without."""
        self.shards = p
        speed = rates(p.stories, p.bytes, p.elapsed)
        what = "token shards" + (f" ({p.workers} processes)" if p.workers > 1 else "")
        if self.live:
            if self.shards_bar is None:
                self.shards_bar = stage_progress()
                self.shards_bar.start()
                self.shards_bar.add_task(what, total=None, **speed)
            task = self.shards_bar.task_ids[0]
            self.shards_bar.update(task, completed=p.bytes, total=p.total_bytes, **speed)
        elif min(p.elapsed, time.monotonic() - self.shards_line) >= _PREPARE_LINE_EVERY:
            self.shards_line = time.monotonic()
            share = f"{p.bytes / p.total_bytes:.0%} " if p.total_bytes else ""
            self._print(f"{what}: {share}{p.bytes / 1e6:,.1f} MB, {speed['mbps']:.1f} MB/s")

    def _end_shards(self, totals: bool = True) -> None:
        """Close the shard bar; after a step long enough to have shown progress, keep one
        line with its totals (`totals`: the step went on; after a refusal the error stays
        the one line; a quick step keeps the run's opening lines as they are)."""
        if self.shards_bar is not None:
            self.shards_bar.stop()
            self.shards_bar = None
        p, self.shards = self.shards, None
        if p is not None and totals and p.elapsed >= _PREPARE_LINE_EVERY:
            procs = f"{p.workers} processes" if p.workers > 1 else "1 process"
            self._print(
                ("token shards", "bold"),
                f" {p.bytes / 1e6:,.1f} MB of text, {p.tokens:,} tokens in {p.elapsed:.1f} s "
                f"({rates(p.stories, p.bytes, p.elapsed)['mbps']:.1f} MB/s, {procs})",
            )

    def on_start(self, info: RunStart) -> None:
        self._end_shards()
        # Printed once every check has passed, so a refusal stays one line.
        self.start = info
        if self.print_config:
            err.print(Text.assemble(("config", "bold"), f" ({self.title})"), highlight=False)
            err.print(info.config.to_yaml().rstrip(), highlight=False)
        for label, text in opening_lines(info, self.name):
            resumed = label == "resumed"
            self._print((label.ljust(LABEL), "yellow" if resumed else "bold"), text)
        if self.live:
            self.progress = Progress(
                TextColumn("step {task.completed}/{task.total} ({task.percentage:.0f}%)"),
                BarColumn(),
                TextColumn(
                    "loss {task.fields[loss]}  val {task.fields[val]}  "
                    "bpb {task.fields[bpb]}  {task.fields[tps]} tok/s{task.fields[mfu]}  "
                    "eta {task.fields[eta]}"
                ),
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
        self.fields["eta"] = format_duration(record.eta_s)
        if record.mfu is not None:
            self.fields["mfu"] = f"  MFU {record.mfu * 100:.1f}%"
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=record.step, **self.fields)
        else:
            total = self.start.max_steps if self.start else record.step
            self._print(
                f"{step_of(record.step, total)}  loss {self.fields['loss']}  "
                f"lr {record.lr:.2e}  {self.fields['tps']} tok/s{self.fields['mfu']}  "
                f"eta {self.fields['eta']}"
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
            self._print((f"saved {kind} -> {shown_path(path)}", "dim"))

    def close(self) -> None:
        self._end_shards(totals=False)
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def closing_line(self, result: Any) -> Text:
        """How the run ended: step, tokens and time of this process, and after a resume of
        the whole run; the validation figures; where the checkpoints are."""
        interrupted = result.status == "interrupted"
        start = self.start
        total = f"/{start.max_steps}" if start else ""
        before_tokens = start.tokens_seen if start else 0
        before_s = start.elapsed_s if start else 0.0
        done = (
            f"{plural(result.tokens_seen - before_tokens, 'token')} in "
            f"{format_duration(result.seconds)}"
        )
        if start and start.resumed:
            done += (
                f" this time (from step {start.step}); the whole run "
                f"{plural(result.tokens_seen, 'token')} in "
                f"{format_duration(before_s + result.seconds)}"
            )
        return Text.assemble(
            ("stopped (interrupted)" if interrupted else "finished", "bold"),
            f" at step {result.step}{total}: {done}; val loss {_fmt(result.val_loss)}, "
            f"{_fmt(result.val_bpb, '.3f')} bits/byte; checkpoints in {result.output}"
            + (" — continue with --resume" if interrupted else ""),
        )


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
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the resolved config before the first step (it is always written to "
            "<output>/config.yaml).",
        ),
    ] = False,
) -> None:
    """Train a model from text (tokenizer and shards are built first when missing)."""
    with cli_errors():
        from slm_tui.presets import load_config
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
        reporter = RichReporter(
            live=is_tty() and rank0,
            title=title,
            print_config=print_config,
            name="" if base != name else shown_path(name) if name.endswith(YAML) else name,
        )
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
            err.print(reporter.closing_line(result), highlight=False)
