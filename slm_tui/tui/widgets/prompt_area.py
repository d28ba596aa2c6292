"""The seed-sentence editor: Enter writes the story, Shift+Enter or Ctrl+J starts a new line.

The keys are handled in the widget's own `on_key`, which Textual calls before the
TextArea's handler (the subclass comes first) and which stops it with `prevent_default()`.
That keeps them in order with the characters typed before them: keys that arrive together
(a paste without bracketed paste, `tmux send-keys`, a fast typist) are queued on this widget
one after another, so Enter submits the whole text. (A priority binding would run at once,
on the App, while the characters before it were still waiting in this widget's queue.)
"""

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

    def on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()  # the TextArea would insert a newline
            event.stop()
            self.post_message(self.Submitted(self, self.text))
        elif event.key in NEWLINE_KEYS and not self.read_only:
            event.prevent_default()
            event.stop()
            self.replace("\n", *self.selection, maintain_selection_offset=False)
