"""The Train screen's `o`: pick a second run folder whose curves the chart draws over the
watched run's. The runs found beside the watched one and in the checkpoints folder are
listed (newest first); any other folder can be typed. Returns the folder, or None."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from slm_tui.tui.training.watch import METRICS_FILE


class RunPicker(ModalScreen[Path | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel", show=False)]
    HELP_TITLE = "the run picker"
    HELP_EXTRA = (
        ("↑ / ↓, Enter", "pick a listed run"),
        ("type a path, Enter", "pick any run folder (one with a metrics.jsonl)"),
    )

    def __init__(self, runs: list[Path]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(id="run-picker", classes="dialog-box"):
            yield Label("Overlay a second run on the chart", classes="title")
            options = [Option(Content(f"{run.name}  {run}"), id=str(n))
                       for n, run in enumerate(self.runs)]  # fmt: skip
            if not options:
                none = Content.styled("no other run found nearby: type its folder", "$text-muted")
                options = [Option(none, disabled=True)]
            yield OptionList(*options, id="run-list")
            yield Input(placeholder="or a run folder: runs/other", id="run-path")
            yield Static("", id="run-error", markup=False)

    def on_mount(self) -> None:
        self.query_one("#run-list" if self.runs else "#run-path").focus()

    @on(OptionList.OptionSelected, "#run-list")
    def _listed(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.dismiss(self.runs[int(event.option.id)])

    @on(Input.Submitted, "#run-path")
    def _typed(self, event: Input.Submitted) -> None:
        event.stop()
        folder = Path(event.value.strip()).expanduser()
        if not event.value.strip() or not (folder / METRICS_FILE).is_file():
            self.query_one("#run-error", Static).update(f"no {METRICS_FILE} in {folder}")
            return
        self.dismiss(folder)

    def action_cancel(self) -> None:
        self.dismiss(None)
