"""The seed-sentence editor: Enter writes the story, Shift+Enter or Ctrl+J starts a new line.

Done with priority bindings on the widget, which Textual checks before the focused
TextArea sees the key, so Enter never reaches the TextArea's own newline handling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea


class PromptArea(TextArea):
    """A multi-line TextArea whose Enter submits instead of inserting a newline."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "write", show=False, priority=True),
        Binding("shift+enter,ctrl+j", "newline", "new line", show=False, priority=True),
    ]

    @dataclass
    class Submitted(Message):
        prompt_area: PromptArea
        text: str

        @property
        def control(self) -> PromptArea:
            return self.prompt_area

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault(
            "placeholder", "Once upon a time…  (Enter: write · Shift+Enter/Ctrl+J: new line)"
        )
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        if not self.read_only:
            self.replace("\n", *self.selection, maintain_selection_offset=False)
