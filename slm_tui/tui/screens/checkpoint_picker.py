"""F2: every checkpoint under the checkpoints folder (plus the bundled demo), with its numbers.

The screen is given the list it opens with, the signal on which the app publishes each
new scan (a `CheckpointList`), and the rescan action (`r`), so a checkpoint a training run
saves while the picker is open appears in it. Enter returns the highlighted entry's target
(a checkpoint's folder, or a server model's whole id; the app loads it in a worker); a
folder that cannot be read is listed with the reason instead of being hidden. Rows are
keyed by position, not by name: a server may list two models under one id, or ids that
are no valid path (a NUL), and neither may break the table. Each column is as wide as its
widest cell (`column_widths`; the table cannot measure the `Content` cells itself and would
clip them to their header); when the screen is too narrow for all of them the names give
way first, then the date, tokenizer and tokens columns go (the detail line under the
table says them all).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.cells import cell_len
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.signal import Signal
from textual.widgets import DataTable, Label, Static

from slm_tui.checkpoint.format import CheckpointInfo
from slm_tui.handle import ServerModelInfo
from slm_tui.tui.checkpoint_loader import (
    CheckpointList,
    Target,
    identity,
    target_of,
)
from slm_tui.tui.widgets.checkpoint_card import human, info_lines

COLUMNS = ("", "checkpoint", "params", "steps", "tokens", "bits/byte", "tokenizer", "date")
NAME_COLUMN = 1
NAME_MIN = 12  # the names give way to no less than this
CELL_PADDING = 2  # the table's padding around each cell (one each side)
DROPPED_FIRST = (7, 6, 4)  # then these columns go: date, tokenizer, tokens


def cell_width(cell: str | Content) -> int:
    return cell.cell_length if isinstance(cell, Content) else cell_len(cell)


def column_widths(rows: list[tuple], available: int) -> dict[int, int]:
    """{column: width} of the columns shown: each as wide as its widest cell or header;
    when they are wider than `available`, the names give way (to NAME_MIN), then the
    columns of DROPPED_FIRST go, one at a time, until the rest fit."""
    widths = {
        i: max([cell_len(header), *(cell_width(row[i]) for row in rows)])
        for i, header in enumerate(COLUMNS)
    }

    natural = widths[NAME_COLUMN]
    least = min(NAME_MIN, natural)
    dropped = iter(DROPPED_FIRST)
    while True:
        others = sum(w + CELL_PADDING for i, w in widths.items() if i != NAME_COLUMN)
        room = available - others - CELL_PADDING  # what the names may take
        column = next(dropped, None) if room < least else None
        if column is None:
            widths[NAME_COLUMN] = max(least, min(natural, room))
            return widths
        del widths[column]


def row_for(info: CheckpointInfo, current: Path | str | None) -> tuple:
    """The table row; text from the checkpoint (its folder name, its meta.json) is Content,
    never markup: a folder named "[/]" is shown as it is."""
    mark = "●" if current is not None and identity(target_of(info)) == current else " "
    name = Content(info.name)
    if info.error:
        return (mark, name, Content.styled("unreadable", "$text-error"), "", "", "", "", "")
    # A recorded held-out figure with its corpus; else the in-run one, said to be that.
    if info.evaluations:
        first = info.evaluations[0]
        bpb = Content(f"{first.bpb:.3f} {first.name}")
    else:
        bpb = Content("—" if info.val_bpb is None else f"{info.val_bpb:.3f} in-run")
    return (
        mark,
        name,
        human(info.params),
        str(info.step),
        human(info.tokens_seen),
        bpb,
        Content(f"{info.tokenizer_kind.removeprefix('sentencepiece-')}·{info.vocab_size}"),
        Content((info.created or "")[:10]),
    )


def detail_for(info: CheckpointInfo | None) -> Content:
    if info is None:
        return Content.styled("No checkpoints found.", "$text-muted")
    if isinstance(info, ServerModelInfo):
        return Content.assemble(
            (info.model_id, "bold"), (" · a model on the server", "$text-muted")
        )
    if info.error:
        return Content.assemble((f"{info.path}\n", "$text-muted"), (info.error, "$text-error"))
    parts: list = [(f"{info.path}\n", "$text-muted")]
    for label, value in info_lines(info):
        parts += [(f"{label}: ", "$text-muted"), value, "   "]
    return Content.assemble(*parts)


class CheckpointPicker(ModalScreen[Target | None]):
    """Returns the chosen entry's target (a folder, or a server model's id), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f2", "dismiss_none", "close", show=False),
        Binding("r", "rescan", "rescan", show=False),
    ]

    def __init__(
        self,
        checkpoints: CheckpointList,
        updates: Signal[CheckpointList],
        request_rescan: Callable[[], object],
    ) -> None:
        super().__init__()
        self.checkpoints = checkpoints  # the latest list, with the loaded checkpoint's path
        self.updates = updates
        self.request_rescan = request_rescan
        self.infos: list[CheckpointInfo] = []  # the rows shown, in order

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Label("Checkpoints  (Enter: load · Esc: close)", classes="title")
            yield DataTable(id="picker-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="picker-detail", markup=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self._fill(self.checkpoints)
        self.updates.subscribe(self, self._fill)
        table.focus()

    def on_resize(self) -> None:
        self.call_after_refresh(self._fill, self.checkpoints)

    def _available(self) -> int:
        """Cells the table's columns may take: its width, or (before the first layout) the
        box's share of the screen (app.tcss: 96%, at most 120, border and padding 4), less
        room for the scrollbar."""
        width = self.query_one(DataTable).scrollable_content_region.width
        if width <= 0:
            width = min(self.app.size.width * 96 // 100, 120) - 4
        return width - 2

    def _fill(self, checkpoints: CheckpointList) -> None:
        self.checkpoints = checkpoints
        table = self.query_one(DataTable)
        keep = None
        if self.infos and 0 <= table.cursor_row < len(self.infos):
            keep = target_of(self.infos[table.cursor_row])
        current = checkpoints.loaded
        self.infos = list(checkpoints.infos)
        rows = [row_for(info, current) for info in self.infos]
        table.clear(columns=True)
        widths = column_widths(rows, self._available())
        for column, width in widths.items():
            table.add_column(COLUMNS[column], width=width)
        for n, row in enumerate(rows):
            table.add_row(*(row[column] for column in widths), key=str(n))
        targets = [target_of(i) for i in self.infos]
        if keep in targets:
            table.move_cursor(row=targets.index(keep))
        elif current is not None:
            same = [n for n, t in enumerate(targets) if identity(t) == current]
            if same:
                table.move_cursor(row=same[0])
        self._show_detail()

    def _show_detail(self) -> None:
        table = self.query_one(DataTable)
        info = self.infos[table.cursor_row] if 0 <= table.cursor_row < len(self.infos) else None
        self.query_one("#picker-detail", Static).update(detail_for(info))

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        row = int(str(event.row_key.value))
        if 0 <= row < len(self.infos):
            self.dismiss(target_of(self.infos[row]))

    def action_rescan(self) -> None:
        self.request_rescan()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
