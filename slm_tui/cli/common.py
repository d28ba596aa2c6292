"""Shared CLI plumbing: one-line errors with exit code 2, consoles, option helpers.

Every command body runs inside `cli_errors()`: a `SlmError` (or a typer bad-parameter
error) becomes `error: <message>` on stderr and exit code 2; KeyboardInterrupt exits 130.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from slm_tui.errors import SlmError

# stdout holds results only (pipelines); progress, summaries and errors go to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Print a one-line error to stderr and exit with code 2."""
    first_line = " ".join(str(message).split())
    err.print(f"[bold red]error:[/] {first_line}", highlight=False, markup=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn library errors into one-line messages and exit code 2; never a traceback."""
    try:
        yield
    except SlmError as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(f"{exc.filename or exc}: no such file or directory")
    except PermissionError as exc:
        fail(f"{exc.filename or exc}: permission denied")
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(code=130) from None


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def is_tty() -> bool:
    return sys.stderr.isatty()


# `--data-files a.txt b.txt` (so shell globs work) and repeated flags both work, in every
# command that reads a corpus: click options take one value each, so the files after the
# first land in a hidden positional argument and `data_files_from` joins them.
DataFilesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data-files",
        help="Local .txt (<|endoftext|>-separated) / .jsonl / .json / .parquet files or globs; "
        "several may follow one flag.",
        show_default=False,
    ),
]
MoreFilesArg = Annotated[list[str] | None, typer.Argument(hidden=True, show_default=False)]


def data_files_from(data_files: list[str] | None, more: list[str] | None) -> list[str]:
    """The files given after --data-files (one flag or several); exit 2 on stray arguments."""
    if more and not data_files:
        fail(f"unexpected argument {more[0]!r}; local files go after --data-files")
    return [*(data_files or []), *(more or [])]
