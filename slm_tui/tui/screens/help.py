"""F1: every key the app answers to, with the binding id a key map file can remap."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

EDITING_KEYS = (
    ("enter", "write a story from the seed sentence (in the prompt)"),
    ("shift+enter, ctrl+j", "new line in the prompt"),
    ("up / down, pgup / pgdn", "step the focused sampling value (×1 / ×10)"),
    ("← / →, home / end", "select a token in the token view"),
    ("tab / shift+tab", "move between prompt, story, settings and history"),
    ("ctrl+p", "command palette: every action, themes"),
)


def help_content(bindings: list[Binding], keymap: dict[str, str], keys_file: str) -> Content:
    parts: list = [("Keys", "bold $text-accent"), "\n\n"]
    for b in bindings:
        keys = keymap.get(b.id or "", b.key)
        parts += [
            (f"{keys:<22}", "bold"),
            (b.description or b.action),
            ("  " + (b.id or ""), "$text-muted"),
            "\n",
        ]
    parts += ["\n", ("Editing and moving", "bold $text-accent"), "\n\n"]
    for keys, what in EDITING_KEYS:
        parts += [(f"{keys:<22}", "bold"), what, "\n"]
    parts += [
        "\n",
        ("Remap any key by id in ", "$text-muted"),
        (keys_file, "$text-accent"),
        (", e.g.  regenerate: ctrl+g", "$text-muted"),
        "\n",
        ("Esc, F1 or q closes this screen.", "$text-muted"),
    ]
    return Content.assemble(*parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "app.pop_screen", "close", show=False)
    ]

    def __init__(self, bindings: list[Binding], keymap: dict[str, str], keys_file: str) -> None:
        super().__init__()
        self.content = help_content(bindings, keymap, keys_file)

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(self.content, id="help-text", markup=False)
