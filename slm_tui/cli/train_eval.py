"""`slm-train eval`: loss and bits per byte of a checkpoint, a thin wrapper over
`slm_tui.trainer.evaluate`.

Prints a table to stdout, or one JSON object with `--json` (the fields of `EvalResult`, in
order). Without `--data-files`/`--dataset` it measures the checkpoint's own validation
shard, with the same windows and bits-per-byte definition as the in-run figure. The trainer
(torch) is imported when the command runs, so `--help` stays quick.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.table import Table

from slm_tui.cli.common import (
    DataFilesOpt,
    MoreFilesArg,
    absolute_files,
    cli_errors,
    data_files_from,
    err,
    for_terminal,
    out,
    shown_path,
)

SHARD_PREFIX = "validation shard "  # EvalResult.corpus of a run's own validation text

# (field of EvalResult, label, format) for the table
ROWS = (
    ("loss", "loss (nats/token)", ".4f"),
    ("bpb", "bits per byte", ".4f"),
    ("perplexity", "perplexity", ".2f"),
    ("tokens", "tokens", ","),
    ("bytes", "bytes", ","),
    ("stories", "stories", ","),
    ("corpus", "corpus", ""),
    ("context_length", "context", ""),
    ("dtype", "computed in", ""),
    ("seconds", "seconds", ""),
)


def evaluate(
    checkpoint: Annotated[
        str,
        typer.Option(
            "--checkpoint", help="Checkpoint folder or run folder (its best/, else latest/)."
        ),
    ],
    data_files: DataFilesOpt = None,
    more_files: MoreFilesArg = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Hugging Face dataset id.")
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Dataset split (with --dataset).")
    ] = "validation",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 16,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", help="Stop reading after this many tokens (whole stories)."),
    ] = None,
    context_length: Annotated[
        int | None,
        typer.Option("--context-length", help="Window length (default: the model's context)."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N, mps.")] = "auto",
    record_: Annotated[
        bool,
        typer.Option(
            "--record",
            help="Keep the result in the checkpoint's meta.json (corpus name and fingerprint, "
            "bits per byte, loss, tokens, date): the TUI, slm-generate and the model card show "
            "recorded figures as the model's quality.",
        ),
    ] = False,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="auto, float32 or bfloat16 (default: the checkpoint's train.dtype; auto "
            "takes the dtype its run trained in on this kind of device, else decides from "
            "the machine as training does).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Loss (nats/token) and bits per byte of a checkpoint on a corpus, with its own tokenizer.

    Without --data-files/--dataset: the checkpoint's own validation shard."""
    with cli_errors():
        from slm_tui.trainer import evaluate as run_eval

        given = data_files_from(data_files, more_files)
        result = run_eval(
            checkpoint,
            dataset=dataset,
            data_files=absolute_files(given) if given else None,
            split=split,
            batch_size=batch_size,
            max_tokens=max_tokens,
            context_length=context_length,
            device=device,
            dtype=dtype,
        )
        written = None
        if record_:
            from slm_tui.trainer.evaluation import record

            written = record(result)
        if json_:
            typer.echo(json.dumps(dataclasses.asdict(result)))
        else:
            table = Table(title=f"eval of {shown_path(result.checkpoint)}", show_header=False)
            for name, label, spec in ROWS:
                value = format(getattr(result, name), spec)
                if name == "corpus":
                    value = _shown_corpus(result.corpus, given)
                table.add_row(label, value)
            out.print(table)
        if written is not None:
            msg = f"recorded {result.bpb:.4f} bpb on {result.name} in {written}"
            err.print(for_terminal(msg), highlight=False)


def _shown_corpus(corpus: str, given: list[str]) -> str:
    """The corpus as the user named it: the files given (relative to here when inside it,
    else normalised, never `a/../b`), a dataset id as it is, the run's validation shard by
    its normalised path."""
    if given:
        return ", ".join(shown_path(f) for f in given)
    if corpus.startswith(SHARD_PREFIX):
        return SHARD_PREFIX + shown_path(corpus[len(SHARD_PREFIX) :])
    return corpus
