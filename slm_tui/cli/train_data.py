"""`slm-train tokenizer` and `slm-train data`: the first two stages of the pipeline.

Thin: parse flags, call `slm_tui.tokenizers` / `slm_tui.data`, show progress (stories/s,
MB/s, ETA) and a summary on stderr; the output folder's path is the one line on stdout.
`--data-files` takes several files after one flag (`--data-files a.txt b.txt`, so shell
globs work) or repeated flags; quoted globs are expanded by the corpus reader.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from slm_tui.cli.common import (
    DataFilesOpt,
    MoreFilesArg,
    cli_errors,
    data_files_from,
    err,
    fail,
    out,
    warn,
)
from slm_tui.corpus import CorpusSource, corpus_source, plan_split, source_size
from slm_tui.data import prepare_shards
from slm_tui.tokenizers import DEFAULT_KIND, Tokenizer, get_tokenizer_class, load_tokenizer
from slm_tui.tokenizers import train_tokenizer as _train_tokenizer

VAL_SAMPLE_STORIES = 2000  # bytes/token in the summary is measured on at most this many

DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Hugging Face dataset id (default roneneldan/TinyStories when no --data-files).",
        show_default=False,
    ),
]
SplitOpt = Annotated[str, typer.Option(help="Dataset split to read (hub datasets).")]
ValFractionOpt = Annotated[
    float,
    typer.Option(
        help="Held-out share of stories when the source has no validation split "
        "(every round(1/f)-th story)."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")]


def _source(
    dataset: str | None, data_files: list[str] | None, more: list[str] | None, split: str
) -> CorpusSource:
    return corpus_source(dataset, data_files_from(data_files, more), split)


def _progress() -> Progress:
    # Transient: the bar shows rates and ETA while it runs; the summary keeps the totals.
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=16),
        TaskProgressColumn(),
        TextColumn("{task.fields[stories]:,} stories {task.fields[rate]:,.0f}/s"),
        TextColumn("{task.fields[mbps]:.1f} MB/s eta"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def _rates(stories: int, nbytes: int, seconds: float) -> dict[str, float]:
    seconds = max(1e-9, seconds)
    return {"stories": stories, "rate": stories / seconds, "mbps": nbytes / 1e6 / seconds}


def _counted(
    stories: Iterable[str], progress: Progress, task: Any, total: int | None, stats: dict
) -> Iterator[str]:
    """Pass stories through, updating the progress bar every few hundred."""
    t0 = time.perf_counter()
    n = nbytes = 0
    for story in stories:
        n += 1
        nbytes += len(story.encode("utf-8"))
        if n % 256 == 0:
            progress.update(task, completed=nbytes, **_rates(n, nbytes, time.perf_counter() - t0))
        yield story
    stats.update(_rates(n, nbytes, time.perf_counter() - t0), bytes=nbytes)
    progress.update(task, completed=total or nbytes, total=total or nbytes, **stats)


def _bytes_per_token(tok: Tokenizer, stories: Iterable[str]) -> tuple[float, int]:
    sample = list(itertools.islice(stories, VAL_SAMPLE_STORIES))
    tokens = sum(len(ids) for ids in tok.encode_batch(sample))
    return sum(len(s.encode("utf-8")) for s in sample) / max(1, tokens), len(sample)


def _summary(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    err.print(table)


def tokenizer(
    data_files: DataFilesOpt = None,
    more_files: MoreFilesArg = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = "train",
    kind: Annotated[
        str,
        typer.Option(
            help="Tokenizer kind: sentencepiece-bpe, sentencepiece-unigram, byte, "
            "or one a plugin adds."
        ),
    ] = DEFAULT_KIND,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size, specials included.")] = 4096,
    output: Annotated[
        Path | None,
        typer.Option(help="Output folder (default tokenizers/<kind>-<vocab>).", show_default=False),
    ] = None,
    val_fraction: ValFractionOpt = 0.005,
    max_sentences: Annotated[
        int, typer.Option(help="SentencePiece samples at most this many lines (memory bound).")
    ] = 2_000_000,
    force: ForceOpt = False,
) -> None:
    """Train a tokenizer on the training stories; report bytes/token on held-out text."""
    with cli_errors():
        cls = get_tokenizer_class(kind)  # an unknown kind fails before any data is read
        if cls.fixed_vocab_size is not None:
            if vocab_size not in (4096, cls.fixed_vocab_size):
                warn(f"'{kind}' has a fixed vocab of {cls.fixed_vocab_size}; --vocab-size ignored")
            vocab_size = cls.fixed_vocab_size
        dest = output or Path("tokenizers") / f"{kind}-{vocab_size}"
        if dest.exists() and not force and (not dest.is_dir() or any(dest.iterdir())):
            fail(f"{dest} already exists; use --force to overwrite it, or choose another --output")
        source = _source(dataset, data_files, more_files, split)
        plan = plan_split(source, val_fraction=val_fraction)
        t0 = time.perf_counter()
        total = source_size(source)
        with _progress() as progress:
            task = progress.add_task("reading", total=total, stories=0, rate=0.0, mbps=0.0)
            read: dict[str, float] = {}
            stories = _counted(plan.iter_train(), progress, task, total, read)

            def then_train() -> Iterator[str]:
                yield from stories
                progress.update(task, description=f"training {kind}")

            tok = _train_tokenizer(
                kind, then_train(), vocab_size, dest, max_sentences=max_sentences
            )
            progress.update(task, description="measuring")
            bpt, n_val = _bytes_per_token(tok, plan.iter_val())
            progress.update(task, description="done")
        _summary(
            "tokenizer",
            [
                ("kind", tok.kind),
                ("vocab size", f"{tok.vocab_size:,}"),
                ("trained on", f"{source.describe()} ({plan.describe()})"),
                (
                    "read",
                    f"{read.get('stories', 0):,.0f} stories, {read.get('bytes', 0) / 1e6:,.1f} MB "
                    f"({read.get('rate', 0):,.0f} stories/s, {read.get('mbps', 0):.1f} MB/s)",
                ),
                ("bytes / token", f"{bpt:.3f} on {n_val:,} held-out stories"),
                ("time", f"{time.perf_counter() - t0:.1f} s"),
                ("output", str(tok.path)),
            ],
        )
        out.print(str(tok.path), highlight=False, soft_wrap=True)


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
) -> None:
    """Tokenize the corpus into train/val token shards (cached by source and tokenizer)."""
    with cli_errors():
        tok = load_tokenizer(tokenizer)
        source = _source(dataset, data_files, more_files, split)
        t0 = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task("tokenizing", total=None, stories=0, rate=0.0, mbps=0.0)
            last: dict[str, Any] = {}

            def report(p: dict[str, Any]) -> None:
                last.update(p)
                rates = _rates(p["stories"], p["bytes"], p["elapsed"])
                progress.update(task, completed=p["bytes"], total=p["total_bytes"], **rates)

            shards = prepare_shards(
                source, tok, output, val_fraction=val_fraction, force=force, progress=report
            )
            done = shards.train.num_bytes + shards.val.num_bytes
            progress.update(task, completed=done, total=done, description="done")
        val = shards.val
        bpt = val.num_bytes / max(1, val.num_tokens - 2 * val.num_stories)
        _summary(
            "token shards" + (" (cached: nothing to do)" if shards.cached else ""),
            [
                ("tokenizer", f"{tok.kind}, vocab {tok.vocab_size:,} ({tok.path})"),
                ("source", f"{source.describe()} ({shards.train.meta.get('split_rule', '')})"),
                (
                    "train",
                    f"{shards.train.num_tokens:,} tokens, {shards.train.num_stories:,} "
                    f"stories, {shards.train.num_bytes / 1e6:,.1f} MB of text",
                ),
                ("val", f"{val.num_tokens:,} tokens, {val.num_stories:,} stories"),
                (
                    "speed",
                    "cached: no work"
                    if shards.cached
                    else "{rate:,.0f} stories/s, {mbps:.1f} MB/s of text".format(
                        **_rates(last["stories"], last["bytes"], last["elapsed"])
                    ),
                ),
                ("dtype", shards.train.meta["dtype"]),
                ("bytes / token", f"{bpt:.3f} on the validation text"),
                ("time", f"{time.perf_counter() - t0:.1f} s"),
                ("output", str(shards.dir)),
            ],
        )
        out.print(str(shards.dir), highlight=False, soft_wrap=True)
