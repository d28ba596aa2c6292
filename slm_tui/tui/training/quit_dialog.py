"""The question Ctrl+Q asks while a run this app started is training: stop it (it saves
latest/ and exits; Resume continues it later), leave it running on its own, or cancel."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class QuitWhileTraining(ModalScreen[str | None]):
    """Returns "stop", "leave" or None (cancel)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "choose('')", "cancel", show=False),
        Binding("s", "choose('stop')", "stop it", show=False),
        Binding("l", "choose('leave')", "leave it running", show=False),
    ]

    def __init__(self, folder: Path, pid: int | None) -> None:
        super().__init__()
        self.folder, self.pid = folder, pid

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box"):
            yield Label("A run is still training", classes="title")
            yield Static(
                f"{self.folder} (process {self.pid}). Stop it (it saves latest/ and exits; "
                "Resume continues it later), or leave it running on its own?",
                markup=False,
            )
            with Horizontal(classes="buttons"):
                yield Button("Stop it (s)", id="quit-stop", variant="warning", compact=True)
                yield Button("Leave it running (l)", id="quit-leave", compact=True)
                yield Button("Cancel", id="quit-cancel", compact=True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose((event.button.id or "").removeprefix("quit-").replace("cancel", ""))

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice or None)
