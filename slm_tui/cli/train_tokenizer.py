"""`slm-train tokenizer`: the first stage of the pipeline, text to a tokenizer folder.

Thin: parse flags, call `slm_tui.tokenizers.train_tokenizer` on the training stories, show
progress (stories/s, MB/s, ETA) and a summary on stderr (bytes per token measured on
held-out stories); the tokenizer folder's path is the one line on stdout.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TaskID

from slm_tui.cli.common import (
    DataFilesOpt,
    DatasetOpt,
    ForceOpt,
    MoreFilesArg,
    SplitOpt,
    ValFractionOpt,
    cli_errors,
    data_files_from,
    fail,
    out,
    plural,
    shown_path,
    warn,
)
from slm_tui.cli.progress import TaskFields, rates, stage_progress, summary
from slm_tui.corpus import corpus_source, plan_split, source_size
from slm_tui.tokenizers import DEFAULT_KIND, Tokenizer, get_tokenizer_class, train_tokenizer

VAL_SAMPLE_STORIES = 2000  # bytes/token in the summary is measured on at most this many


def _counted(
    stories: Iterable[str],
    progress: Progress,
    task: TaskID,
    total: int | None,
    stats: TaskFields,
) -> Iterator[str]:
    """Pass stories through, updating the progress bar every few hundred; totals to `stats`."""
    t0 = time.perf_counter()
    n = nbytes = 0
    for story in stories:
        n += 1
        nbytes += len(story.encode("utf-8"))
        if n % 256 == 0:
            progress.update(task, completed=nbytes, **rates(n, nbytes, time.perf_counter() - t0))
        yield story
    stats.update(rates(n, nbytes, time.perf_counter() - t0), bytes=nbytes)
    progress.update(task, completed=total or nbytes, total=total or nbytes, **stats)


def _bytes_per_token(tok: Tokenizer, stories: Iterable[str]) -> tuple[float, int]:
    sample = list(itertools.islice(stories, VAL_SAMPLE_STORIES))
    tokens = sum(len(ids) for ids in tok.encode_batch(sample))
    return sum(len(s.encode("utf-8")) for s in sample) / max(1, tokens), len(sample)


def tokenizer(
    data_files: DataFilesOpt = None,
    more_files: MoreFilesArg = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = "train",
    kind: Annotated[
        str,
        typer.Option(
            help="Tokenizer kind: sentencepiece-bpe, sentencepiece-unigram, bytelevel-bpe, "
            "byte, gpt2 (GPT-2's, pretrained), or one a plugin adds."
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
    vocab_file: Annotated[
        Path | None,
        typer.Option(
            help="gpt2 only: GPT-2's encoder.json, to build the tokenizer offline "
            "(default: tiktoken downloads it once).",
            show_default=False,
        ),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Train a tokenizer on the training stories; report bytes/token on held-out text.

    A pretrained kind (gpt2) learns nothing: without a corpus it is written at once, with
    one its bytes/token is measured on the held-out stories."""
    with cli_errors():
        cls = get_tokenizer_class(kind)  # an unknown kind fails before any data is read
        if vocab_file is not None and not cls.pretrained:
            fail(f"--vocab-file is for pretrained kinds (gpt2); '{kind}' learns its vocabulary")
        if cls.fixed_vocab_size is not None:
            if vocab_size not in (4096, cls.fixed_vocab_size):
                warn(f"'{kind}' has a fixed vocab of {cls.fixed_vocab_size}; --vocab-size ignored")
            vocab_size = cls.fixed_vocab_size
        dest = output or Path("tokenizers") / f"{kind}-{vocab_size}"
        if dest.exists() and not force and (not dest.is_dir() or any(dest.iterdir())):
            fail(f"{dest} already exists; use --force to overwrite it, or choose another --output")
        options = {} if vocab_file is None else {"vocab_file": vocab_file}
        if cls.pretrained and dataset is None and not data_files_from(data_files, more_files):
            t0 = time.perf_counter()
            tok = train_tokenizer(kind, iter(()), vocab_size, dest, **options)
            summary(
                "tokenizer",
                [
                    ("kind", f"{tok.kind} (pretrained: nothing to train)"),
                    ("vocab size", f"{tok.vocab_size:,}"),
                    ("from", str(vocab_file) if vocab_file else "tiktoken"),
                    ("time", f"{time.perf_counter() - t0:.1f} s"),
                    ("output", str(tok.path)),
                ],
            )
            out.print(str(tok.path), highlight=False, soft_wrap=True)
            return
        source = corpus_source(dataset, data_files_from(data_files, more_files), split)
        plan = plan_split(source, val_fraction=val_fraction)
        t0 = time.perf_counter()
        total = source_size(source)
        with stage_progress() as progress:
            task = progress.add_task("reading", total=total, stories=0, rate=0.0, mbps=0.0)
            read: TaskFields = {}
            stories = _counted(plan.iter_train(), progress, task, total, read)

            def then_train() -> Iterator[str]:
                yield from stories
                progress.update(task, description=f"training {kind}")

            tok = train_tokenizer(
                kind, then_train(), vocab_size, dest, max_sentences=max_sentences, **options
            )
            progress.update(task, description="measuring")
            bpt, n_val = _bytes_per_token(tok, plan.iter_val())
            progress.update(task, description="done")
        assert tok.path is not None  # training saves the tokenizer to `dest`
        summary(
            "tokenizer",
            [
                ("kind", tok.kind),
                ("vocab size", f"{tok.vocab_size:,}"),
                ("trained on", f"{source.describe()} ({plan.describe()})"),
                (
                    "read",
                    f"{plural(read.get('stories', 0), 'story', 'stories')}, "
                    f"{read.get('bytes', 0) / 1e6:,.1f} MB "
                    f"({read.get('rate', 0):,.0f} stories/s, {read.get('mbps', 0):.1f} MB/s)",
                ),
                (
                    "bytes / token",
                    f"{bpt:.3f} on {plural(n_val, 'held-out story', 'held-out stories')}",
                ),
                ("time", f"{time.perf_counter() - t0:.1f} s"),
                ("output", shown_path(tok.path)),
            ],
        )
        out.print(str(tok.path), highlight=False, soft_wrap=True)
