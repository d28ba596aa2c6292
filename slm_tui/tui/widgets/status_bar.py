"""One status line: checkpoint, device, tokens, tokens/s, time to first token, finish reason,
and "the machine is shared" while a local training run has the engine down to one thread.

A plain Widget with a fixed height of one line whose redraw is `refresh()` without layout:
a Static's `update()` asks for a layout pass, which re-renders every widget on the screen,
and the status line changes on every stream flush.
"""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from slm_tui.tui.story import FINISH_LABELS, Story

SEP = ("  │  ", "$text-muted")


class StatusBar(Widget):
    """Redrawn from plain values; `note` carries transient news (settings applied, load errors)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.checkpoint = "no checkpoint"
        self.device = ""
        self.story: Story | None = None
        self.note = ""
        self.note_style = "$text-warning"
        self.shared = ""  # set while a local run trains (cpu_share)

    def set_checkpoint(self, name: str, device: str = "") -> None:
        self.checkpoint, self.device = name, device
        self.redraw()

    def set_story(self, story: Story | None) -> None:
        self.story = story
        self.redraw()

    def set_shared(self, text: str) -> None:
        self.shared = text
        self.redraw()

    def set_note(self, note: str, style: str = "$text-warning") -> None:
        self.note, self.note_style = note, style
        self.redraw()

    @property
    def plain_text(self) -> str:
        return str(self.build())

    def build(self) -> Content:
        # Most urgent first: a narrow terminal cuts the end (the checkpoint is also in the card).
        parts: list = []
        s = self.story
        if s is not None:
            if s.streaming:
                parts.append(("writing…", "$text-accent"))
            elif s.finish_reason:
                label = FINISH_LABELS.get(s.finish_reason, s.finish_reason)
                style = {"error": "$text-error", "cancelled": "$text-warning"}.get(
                    s.finish_reason, "$text-success"
                )
                parts.append((label, style))
        if self.note:
            parts += [SEP if parts else "", (self.note, self.note_style)]
        if s is not None:
            parts += [SEP if parts else "", f"{s.num_tokens} tok"]
            if s.tokens_per_s:
                parts += [" · ", f"{s.tokens_per_s:.0f} tok/s"]
            if s.ttft is not None:
                parts += [" · ", f"TTFT {s.ttft * 1000:.0f} ms"]
            if s.seed is not None:
                parts += [SEP, ("seed ", "$text-muted"), str(s.seed)]
        if self.shared:
            parts += [SEP if parts else "", (self.shared, "$text-warning")]
        parts += [SEP if parts else "", (self.checkpoint, "bold")]
        if self.device:
            parts += [" · ", (self.device, "$text-muted")]
        return Content.assemble(*parts)

    def render(self) -> Content:
        return self.build()

    def redraw(self) -> None:
        self.refresh()
