"""Export the current story or the whole session to Markdown or JSON lines, to a path you give.

The path starts in the user data folder's `exports/` (`store.exports_dir`), never in the
folder the app was started from (a clone, where it landed untracked); a relative path is
taken from there too. The line under the field shows the whole path that will be written.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from slm_tui.tui.store import export_stories, exports_dir
from slm_tui.tui.story import Story


def default_export_path(scope: str, fmt: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(exports_dir() / f"slm-tui-{scope}-{stamp}.{fmt}")


def resolve_export_path(raw: str) -> Path:
    """The file a typed path names: absolute as given, else under the exports folder."""
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else exports_dir() / path).absolute()


class ExportScreen(ModalScreen[Path | None]):
    """Returns the written path (or None when dismissed)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "close", show=False)]

    def __init__(self, current: Story | None, session: list[Story]) -> None:
        super().__init__()
        self.current, self.session = current, session

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Label("Export", classes="title")
            with Horizontal(classes="export-row"):
                with RadioSet(id="export-scope"):
                    yield RadioButton(
                        "current story", value=self.current is not None, id="scope-story"
                    )
                    yield RadioButton(
                        "whole session", value=self.current is None, id="scope-session"
                    )
                with RadioSet(id="export-format"):
                    yield RadioButton("Markdown", value=True, id="fmt-md")
                    yield RadioButton("JSON lines", id="fmt-jsonl")
            yield Input(self._path(), id="export-path")
            yield Static("", id="export-where", markup=False)
            yield Static("", id="export-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Export", id="export-go", variant="primary", compact=True)
                yield Button("Cancel", id="export-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()
        self._where()

    @on(Input.Changed, "#export-path")
    def _where(self) -> None:
        raw = self.query_one("#export-path", Input).value.strip()
        where = f"writes {resolve_export_path(raw)}" if raw else ""
        self.query_one("#export-where", Static).update(where)

    def _scope(self) -> str:
        return "session" if self.query_one("#scope-session", RadioButton).value else "story"

    def _fmt(self) -> str:
        return "jsonl" if self.query_one("#fmt-jsonl", RadioButton).value else "md"

    def _path(self) -> str:
        try:
            return default_export_path(self._scope(), self._fmt())
        except Exception:  # not composed yet
            return default_export_path("story" if self.current else "session", "md")

    @on(RadioSet.Changed)
    def _choice(self) -> None:
        # Keep the user's folder and name; follow the scope and format choices.
        path = Path(self.query_one("#export-path", Input).value or self._path())
        stem = path.stem.replace("-story-", f"-{self._scope()}-").replace(
            "-session-", f"-{self._scope()}-"
        )
        self.query_one("#export-path", Input).value = str(path.with_name(f"{stem}.{self._fmt()}"))

    @on(Input.Submitted, "#export-path")
    @on(Button.Pressed, "#export-go")
    def action_export(self) -> None:
        stories = (
            self.session if self._scope() == "session" else [self.current] if self.current else []
        )
        error = self.query_one("#export-error", Static)
        if not stories:
            error.update("nothing to export yet")
            return
        raw = self.query_one("#export-path", Input).value.strip()
        if not raw:
            error.update("give a file name")
            return
        try:
            written = export_stories(stories, resolve_export_path(raw))
        except OSError as exc:
            error.update(f"cannot write {raw}: {exc.strerror or exc}")
            return
        self.dismiss(written)

    @on(Button.Pressed, "#export-cancel")
    def action_dismiss_none(self) -> None:
        self.dismiss(None)
