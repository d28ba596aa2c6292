"""`slm-train data`: the second stage of the pipeline, text to token shards.

Thin: parse flags, call `slm_tui.shards.prepare_shards` (cached by source and tokenizer), show
progress (stories/s, MB/s, ETA) and a summary on stderr; the shard folder's path is the one
line on stdout. `--workers N` encodes in N processes (default: one per CPU core); the shards
are byte-identical for any N. `--data-files` takes several files after one flag (`--data-files a.txt
b.txt`, so shell globs work) or repeated flags; quoted globs are expanded by the corpus reader.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from slm_tui.cli.common import (
    DataFilesOpt,
    DatasetOpt,
    ForceOpt,
    MoreFilesArg,
    SplitOpt,
    ValFractionOpt,
    cli_errors,
    data_files_from,
    out,
    plural,
    shown_path,
)
from slm_tui.cli.progress import rates, stage_progress, summary
from slm_tui.corpus import corpus_source
from slm_tui.shards import ShardProgress, prepare_shards
from slm_tui.tokenizers import load_tokenizer


def data(
    tokenizer: Annotated[
        Path, typer.Option("--tokenizer", help="A tokenizer folder (from `slm-train tokenizer`).")
    ],
    data_files: DataFilesOpt = None,
    more_files: MoreFilesArg = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = "train",
    output: Annotated[
        Path | None,
        typer.Option(
            help="Output folder (default: the shard cache, $SLM_SHARDS_DIR or the user cache).",
            show_default=False,
        ),
    ] = None,
    val_fraction: ValFractionOpt = 0.005,
    force: ForceOpt = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes that encode stories: 0 = one per CPU core (a corpus under 16 MB: "
            "this process), 1 = this process only. The shards are the same for any count.",
        ),
    ] = 0,
) -> None:
    """Tokenize the corpus into train/val token shards (cached by source and tokenizer)."""
    with cli_errors():
        tok = load_tokenizer(tokenizer)
        assert tok.path is not None  # load_tokenizer sets it
        source = corpus_source(dataset, data_files_from(data_files, more_files), split)
        t0 = time.perf_counter()
        with stage_progress() as progress:
            task = progress.add_task("tokenizing", total=None, stories=0, rate=0.0, mbps=0.0)
            last: list[ShardProgress] = []

            def report(p: ShardProgress) -> None:
                last[:] = [p]
                fields = rates(p.stories, p.bytes, p.elapsed)
                what = "tokenizing" + (f" ({p.workers} processes)" if p.workers > 1 else "")
                progress.update(
                    task, completed=p.bytes, total=p.total_bytes, description=what, **fields
                )

            shards = prepare_shards(
                source,
                tok,
                output,
                val_fraction=val_fraction,
                force=force,
                progress=report,
                workers=workers,
            )
            done = shards.train.num_bytes + shards.val.num_bytes
            progress.update(task, completed=done, total=done, description="done")
        val = shards.val
        bpt = val.num_bytes / max(1, val.num_tokens - 2 * val.num_stories)
        if shards.cached or not last:
            speed = "cached: no work"
        else:
            r = rates(last[0].stories, last[0].bytes, last[0].elapsed)
            procs = last[0].workers
            speed = (
                f"{r['rate']:,.0f} stories/s, {r['mbps']:.1f} MB/s of text "
                f"({procs} {'processes' if procs > 1 else 'process'})"
            )
        summary(
            "token shards" + (" (cached: nothing to do)" if shards.cached else ""),
            [
                ("tokenizer", f"{tok.kind}, vocab {tok.vocab_size:,} ({shown_path(tok.path)})"),
                ("source", f"{source.describe()} ({shards.train.meta.get('split_rule', '')})"),
                (
                    "train",
                    f"{plural(shards.train.num_tokens, 'token')}, "
                    f"{plural(shards.train.num_stories, 'story', 'stories')}, "
                    f"{shards.train.num_bytes / 1e6:,.1f} MB of text",
                ),
                (
                    "val",
                    f"{plural(val.num_tokens, 'token')}, "
                    f"{plural(val.num_stories, 'story', 'stories')}",
                ),
                ("speed", speed),
                ("dtype", shards.train.meta["dtype"]),
                ("bytes / token", f"{bpt:.3f} on the validation text"),
                ("time", f"{time.perf_counter() - t0:.1f} s"),
                ("output", shown_path(shards.dir)),
            ],
        )
        out.print(str(shards.dir), highlight=False, soft_wrap=True)
