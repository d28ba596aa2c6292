"""The story: the seed sentence, then what the model wrote, drawn in two distinct styles.

The view is anchored (Textual's `Widget.anchor`): it follows the end while the reader is
at the end, stops following as soon as they scroll up, and follows again once they
scroll back down. Redraws come from the stream flush (≤ 30 a second), not per token.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from slm_tui.tui.story import FINISH_LABELS, Story

CURSOR = "▌"
# C0 control characters (a young model emits them) drawn as their Unicode control pictures,
# so they neither vanish nor move the terminal's cursor; newline and tab stay as they are.
_CONTROL_PICTURES = {c: 0x2400 + c for c in range(32) if chr(c) not in "\n\t"} | {127: 0x2421}


def visible(text: str) -> str:
    return text.translate(_CONTROL_PICTURES)


def story_content(story: Story | None) -> Content:
    if story is None:
        return Content.styled("Write a seed sentence below and press Enter.", "$text-muted")
    parts: list[tuple[str, str] | str] = [(visible(story.prompt), "bold $text-accent")]
    parts.append((visible(story.text), "$foreground"))
    if story.streaming:
        parts.append((CURSOR, "$accent"))
    elif story.finish_reason:
        label = FINISH_LABELS.get(story.finish_reason, story.finish_reason)
        if story.error:
            label = f"{label}: {story.error}"
        style = "$text-error italic" if story.finish_reason in ("error",) else "$text-muted italic"
        parts.append((f"  [{label}]", style))
    return Content.assemble(*parts)


class StoryView(VerticalScroll):
    """Seed sentence (bold, accent colour) followed by the continuation (plain)."""

    can_focus = True

    def compose(self) -> ComposeResult:
        yield Static(story_content(None), id="story-text", markup=False)

    def on_mount(self) -> None:
        self.anchor()

    def show(self, story: Story | None) -> None:
        self.query_one("#story-text", Static).update(story_content(story))

    def follow(self) -> None:
        """Jump to the end and follow it again (a new story starts)."""
        self.anchor()
