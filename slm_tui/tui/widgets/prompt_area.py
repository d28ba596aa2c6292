"""The seed-sentence editor: Enter writes the story, Shift+Enter or Ctrl+J starts a new line.

The keys are handled in the widget's own `on_key`, which Textual calls before the
TextArea's handler (the subclass comes first) and which stops it with `prevent_default()`.
That keeps them in order with the characters typed before them: keys that arrive together
(a paste without bracketed paste, `tmux send-keys`, a fast typist) are queued on this widget
one after another, so Enter submits the whole text. (A priority binding would run at once,
on the App, while the characters before it were still waiting in this widget's queue.)

The prompt holds at most what the model can read (`prompt_limit`: `CHARS_PER_TOKEN` x its
context); `keep_last` cuts it to its last characters, as generation keeps the last tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "ctrl+j")
# A token is at most this many characters (SentencePiece pieces: 16), so the last
# context x 32 characters of a prompt hold every token the model can read.
CHARS_PER_TOKEN = 32
CHARS_UNKNOWN = 1 << 16  # nothing loaded, or a server's model (its context is not said)


def prompt_limit(context: int | None) -> int:
    """The most characters a prompt holds for a model that reads `context` tokens."""
    return context * CHARS_PER_TOKEN if context else CHARS_UNKNOWN


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
        # The keys are in the border (the screen sets it): a hint in the placeholder was cut
        # at 80 columns, and it went away with the first character typed.
        kwargs.setdefault("placeholder", "Once upon a time…")
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

    def keep_last(self, limit: int) -> bool:
        """Cut the text to its last `limit` characters, the cursor at the end; whether it cut."""
        if len(self.text) <= limit:
            return False
        self.load_text(self.text[-limit:])
        self.move_cursor(self.document.end)
        return True
