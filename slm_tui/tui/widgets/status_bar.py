"""One status line: checkpoint, device, tokens, tokens/s, time to first token, finish reason."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from slm_tui.tui.story import FINISH_LABELS, Story

SEP = ("  │  ", "$text-muted")


class StatusBar(Static):
    """Redrawn from plain values; `note` carries transient news (settings applied, load errors)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.checkpoint = "no checkpoint"
        self.device = ""
        self.story: Story | None = None
        self.note = ""
        self.note_style = "$text-warning"

    def set_checkpoint(self, name: str, device: str = "") -> None:
        self.checkpoint, self.device = name, device
        self.redraw()

    def set_story(self, story: Story | None) -> None:
        self.story = story
        self.redraw()

    def set_note(self, note: str, style: str = "$text-warning") -> None:
        self.note, self.note_style = note, style
        self.redraw()

    @property
    def plain_text(self) -> str:
        return str(self.build())

    def build(self) -> Content:
        parts: list = [(self.checkpoint, "bold")]
        if self.device:
            parts += [" · ", (self.device, "$text-muted")]
        s = self.story
        if s is not None:
            parts += [SEP, f"{s.num_tokens} tok"]
            if s.tokens_per_s:
                parts += [" · ", f"{s.tokens_per_s:.0f} tok/s"]
            if s.ttft is not None:
                parts += [" · ", f"TTFT {s.ttft * 1000:.0f} ms"]
            if s.streaming:
                parts += [SEP, ("writing…", "$text-accent")]
            elif s.finish_reason:
                label = FINISH_LABELS.get(s.finish_reason, s.finish_reason)
                style = "$text-error" if s.finish_reason == "error" else "$text-success"
                if s.finish_reason == "cancelled":
                    style = "$text-warning"
                parts += [SEP, (label, style)]
            if s.seed is not None:
                parts += [SEP, ("seed ", "$text-muted"), str(s.seed)]
        if self.note:
            parts += [SEP, (self.note, self.note_style)]
        return Content.assemble(*parts)

    def redraw(self) -> None:
        self.update(self.build())
