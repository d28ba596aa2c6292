"""The seed-sentence editor: Enter writes the story, Shift+Enter or Ctrl+J starts a new line."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "ctrl+j")


class PromptArea(TextArea):
    """A multi-line TextArea whose Enter submits instead of inserting a newline."""

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

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)
