"""Progress bars and summary tables for `slm-train`'s data stages (tokenizer, data).

Both go to stderr: a transient rich bar with stories/s, MB/s and ETA while a stage runs,
then a two-column summary table that keeps the totals. stdout stays for the result path.
"""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from slm_tui.cli.common import err

# A rich task's own fields (`{task.fields[rate]}` in a column). Rich takes them as
# `**fields: Any`; a dict typed narrower would be checked against its named parameters too.
TaskFields = dict[str, Any]


def stage_progress() -> Progress:
    """A bar for reading or tokenizing stories; tasks carry fields stories, rate, mbps."""
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


def rates(stories: int, nbytes: int, seconds: float) -> TaskFields:
    """The bar's fields: stories so far, stories/s, MB/s."""
    seconds = max(1e-9, seconds)
    return {"stories": stories, "rate": stories / seconds, "mbps": nbytes / 1e6 / seconds}


def summary(title: str, rows: list[tuple[str, str]]) -> None:
    """A titled two-column table (label, value) on stderr."""
    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    err.print(table)
