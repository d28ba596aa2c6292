"""Shared CLI plumbing: one-line errors with exit code 2, consoles, option helpers.

Errors a user can cause end the same way everywhere: `error: <message>` on one line of
stderr, exit code 2, never a traceback or a usage box.
- Inside a command body, `cli_errors()` turns a `SlmError` (and any `OSError`: a missing
  or unreadable file, a full disk) into that line; KeyboardInterrupt exits 130.
- Before the body runs, click refuses bad flags (an unknown option, `--top-k 2.5`, a
  missing required option); the command classes below (`Command` for one-command apps,
  `Group` for `slm-train`) print those as the same one line.
Everything printed is plain text: both consoles have rich markup off, so a path holding
`[/]` or `[bold red]` is shown as it is, never read as markup (styled output is built from
`rich.text.Text` pieces instead). Text that came from a file or a model and goes to a
terminal passes through `for_terminal`: escape sequences (ESC, OSC, BEL, C1 controls) are
shown as visible characters instead of being run by the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from slm_tui.errors import SlmError
from slm_tui.fileio import disk_full_reason, is_disk_full

# stdout holds results only (pipelines); progress, summaries and errors go to stderr.
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)


# C0 controls except newline and tab, and DEL, as their Unicode control pictures (␛ for
# ESC, ␇ for BEL: what the TUI shows); C1 controls (U+0080-U+009F, e.g. the one-character
# CSI) as \u escapes.
_TERMINAL_SAFE = (
    {c: 0x2400 + c for c in range(32) if chr(c) not in "\n\t"}
    | {0x7F: 0x2421}
    | {c: f"\\u{c:04x}" for c in range(0x80, 0xA0)}
)


def for_terminal(text: str) -> str:
    """`text` with its control characters made visible (newlines and tabs kept)."""
    return text.translate(_TERMINAL_SAFE)


def print_error(message: str) -> None:
    """`error: <message>` on one line of stderr, as plain text."""
    first_line = for_terminal(" ".join(str(message).split()))
    err.print(Text.assemble(("error:", "bold red"), " ", first_line), highlight=False)


def fail(message: str) -> NoReturn:
    """Print a one-line error to stderr and exit with code 2."""
    print_error(message)
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
    except OSError as exc:  # a full disk, a path through a file, a device that refuses
        where = f"{exc.filename}: " if exc.filename else ""
        if is_disk_full(exc):
            fail(f"{where}{disk_full_reason(exc)}; nothing was written there")
        fail(f"{where}{exc.strerror or type(exc).__name__}")
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(code=130) from None


# Click's refusals (typer >= 0.2x vendors click, so its classes are typer's; older typer
# raises click's own), and its abort.
_FLAG_ERRORS = (click.ClickException, getattr(typer, "TyperException", click.ClickException))
_ABORTS = (click.exceptions.Abort, typer.Abort)


class _OneLineErrors:
    """Runs a click command so that click's own refusals end like every other error."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = super().main  # type: ignore[misc]
        if not windows_expand_args:  # (passed on only when given: click 8.0.0 lacks it)
            extra["windows_expand_args"] = False
        if not standalone_mode:
            return run(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = run(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _FLAG_ERRORS as exc:  # bad flags: unknown, wrong type, missing
            if exc.format_message():  # (no arguments at all: the help was shown instead)
                print_error(exc.format_message())
            sys.exit(2)
        except _ABORTS:
            err.print("interrupted")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


FILE_FLAGS = ("--data-files", "--val-files")


def spread_file_flags(args: Sequence[str]) -> list[str]:
    """`--val-files a b --data-files c d` -> `--val-files a --val-files b --data-files c
    --data-files d`: several files may follow one file flag (so shell globs work), and each
    lands in the flag it followed. Click options take one value each; this is the one place
    that knows otherwise."""
    out: list[str] = []
    flag, waiting = None, False  # the file flag in force; whether it still awaits its value
    for i, tok in enumerate(args):
        if tok == "--":
            return [*out, *args[i:]]
        if tok.startswith("-") and len(tok) > 1:
            name = tok.split("=", 1)[0]
            flag = name if name in FILE_FLAGS else None
            waiting = flag is not None and "=" not in tok
        elif flag is not None and not waiting:
            out.append(flag)
        else:
            waiting = False
        out.append(tok)
    return out


class Command(_OneLineErrors, TyperCommand):
    """`@app.command(cls=Command)`: a one-command app with one-line flag errors."""

    # ctx: click's Context, or that of the click copy recent typer vendors (typer._click)
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_file_flags(args))


class Group(_OneLineErrors, TyperGroup):
    """`typer.Typer(cls=Group)`: a many-command app with one-line flag errors (and several
    files after one file flag in its commands, `spread_file_flags`)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        return name, cmd, spread_file_flags(rest)


def warn(message: str) -> None:
    err.print(Text.assemble(("warning:", "yellow"), " ", for_terminal(message)), highlight=False)


def is_tty() -> bool:
    return sys.stderr.isatty()


# `--data-files a.txt b.txt` (so shell globs work) and repeated flags both work, in every
# command that reads a corpus: `spread_file_flags` repeats the flag before each file (a
# `Group`'s commands and a `Command`), and a hidden positional argument keeps whatever
# reaches click otherwise (`data_files_from` joins it to the files or refuses it).
DataFilesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data-files",
        help="Local .txt (<|endoftext|>-separated) / .jsonl / .json / .parquet files or globs; "
        "several may follow one flag.",
        show_default=False,
    ),
]
ValFilesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--val-files",
        help="Validate on these local files (or globs) instead of a held-out fraction of the "
        "training text; several may follow one flag. Stories also in the training text are "
        "refused.",
        show_default=False,
    ),
]
MoreFilesArg = Annotated[list[str] | None, typer.Argument(hidden=True, show_default=False)]


def data_files_from(data_files: list[str] | None, more: list[str] | None) -> list[str]:
    """The files given after --data-files (one flag or several); exit 2 on stray arguments."""
    if more and not data_files:
        fail(f"unexpected argument {more[0]!r}; local files go after --data-files")
    return [*(data_files or []), *(more or [])]


def shown_path(path: str | os.PathLike[str]) -> str:
    """A path as a person reads it: relative to the current folder when it lies inside it,
    else normalised (no `..` or `.` parts); `~` is expanded."""
    p = os.path.normpath(os.path.expanduser(os.fspath(path)))
    if os.path.isabs(p):
        with contextlib.suppress(ValueError, OSError):
            rel = os.path.relpath(p, os.getcwd())
            if rel != ".." and not rel.startswith(".." + os.sep):
                return rel
    return p


def plural(n: float, word: str, many: str | None = None) -> str:
    """'1 token', '2 tokens', '4,096 tokens' (`many`: an irregular plural, 'stories')."""
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,} {many or word + 's'}"
    return f"{n:,.0f} {word if n == 1 else many or word + 's'}"


def absolute_files(files: list[str]) -> list[str]:
    """Absolute paths, so a saved config still finds its corpus from elsewhere (eval, resume)."""
    return [str(Path(f).expanduser().absolute()) for f in files]


# Options `slm-train tokenizer` and `slm-train data` share.
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
