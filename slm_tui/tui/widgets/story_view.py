"""The story: the seed sentence, then what the model wrote, drawn in two distinct styles.

A line-API widget that wraps incrementally: greedy word wrap never changes a finished line
when text is appended, so each flush only re-wraps the last, unfinished line and the cost of
a redraw does not grow with the story. (Re-wrapping a whole Static every frame cost ~10 ms
per frame at a few thousand characters, time the UI thread took from the engine's worker.)
A width change or a different story rebuilds the lines once.

The view follows the end while the reader is at the end, stops following as soon as they
scroll up, and follows again once they scroll back to the bottom.
"""

from __future__ import annotations

from rich.segment import Segment
from textual._wrap import compute_wrap_offsets
from textual.content import Content
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from slm_tui.tui.story import FINISH_LABELS, Story

CURSOR = "▌"
SEED_STYLE = "bold $text-accent"
TEXT_STYLE = "$foreground"
# C0 control characters (a young model emits them) drawn as their Unicode control pictures,
# so they neither vanish nor move the terminal's cursor; newline and tab stay as they are.
_CONTROL_PICTURES = {c: 0x2400 + c for c in range(32) if chr(c) not in "\n\t"} | {127: 0x2421}


def visible(text: str) -> str:
    return text.translate(_CONTROL_PICTURES)


def suffix_content(story: Story | None) -> Content:
    if story is None:
        return Content.styled("Write a seed sentence and press Enter.", "$text-muted")
    if story.streaming:
        return Content.styled(CURSOR, "$accent")
    label = FINISH_LABELS.get(story.finish_reason or "", story.finish_reason or "")
    if story.error:
        label = f"{label}: {story.error}"
    style = "$text-error italic" if story.finish_reason == "error" else "$text-muted italic"
    return Content.styled(f"  [{label}]", style)


class StoryView(ScrollView, can_focus=True):
    """Seed sentence (bold, accent colour) followed by the continuation (plain)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.story: Story | None = None
        self._width = 0
        self._consumed = 0  # characters of story.text already wrapped
        self._lines: list[Content] = []  # finished lines
        self._partial = Content("")  # the unfinished last line, trailing spaces kept
        self._tail: list[Content] = [suffix_content(None)]  # partial + suffix, wrapped
        self._follow = True

    # -- building lines ----------------------------------------------------------------
    def _append(self, text: str, style: str) -> None:
        for i, piece in enumerate(text.split("\n")):
            if i:
                self._lines.append(self._partial)
                self._partial = Content("")
            if not piece:
                continue
            self._partial = self._partial + Content.styled(
                visible(piece.replace("\t", "    ")), style
            )
            offsets = compute_wrap_offsets(self._partial.plain, self._width, 8, fold=True)
            if offsets:
                parts = self._partial.divide(offsets)
                self._lines.extend(parts[:-1])
                self._partial = parts[-1]

    def _rebuild(self, story: Story | None) -> None:
        self._lines, self._partial, self._consumed = [], Content(""), 0
        if story is not None:
            self._append(story.prompt, SEED_STYLE)
            self._append(story.text, TEXT_STYLE)
            self._consumed = len(story.text)

    def show(self, story: Story | None) -> None:
        """Draw `story` (cheap when it is the same story with more text)."""
        width = max(1, self.scrollable_content_region.width)
        if (
            story is not self.story
            or width != self._width
            or story is None
            or len(story.text) < self._consumed
        ):
            self._width = width
            self._rebuild(story)
        else:
            self._append(story.text[self._consumed :], TEXT_STYLE)
            self._consumed = len(story.text)
        self.story = story
        tail = self._partial + suffix_content(story)
        offsets = compute_wrap_offsets(tail.plain, width, 8, fold=True)
        self._tail = tail.divide(offsets) if offsets else [tail]
        self._set_virtual_height(width, len(self._lines) + len(self._tail))
        if self._follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self.refresh()

    def _set_virtual_height(self, width: int, height: int) -> None:
        """Grow the scrollable area without a screen-wide layout pass.

        Assigning `virtual_size` asks for a layout, which repaints every widget on the
        screen, and a fast model adds a line on most flushes. Only the scrollbars depend on
        it, so they are updated directly; a layout is still requested when the vertical
        scrollbar appears or disappears (the gutter is stable in app.tcss, so it rarely does).
        """
        size = Size(width, height)
        if size == self.virtual_size:
            return
        had_scrollbar = self.show_vertical_scrollbar
        self.set_reactive(StoryView.virtual_size, size)
        self._scroll_update(size)
        if self.show_vertical_scrollbar != had_scrollbar:
            self.refresh(layout=True)

    def follow(self) -> None:
        """Jump to the end and follow it again (a new story starts)."""
        self._follow = True
        self.scroll_to(y=self.max_scroll_y, animate=False)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._follow = new >= self.max_scroll_y

    def on_resize(self) -> None:
        self.show(self.story)

    @property
    def plain_text(self) -> str:
        return "\n".join(line.plain.rstrip() for line in (*self._lines, *self._tail))

    # -- drawing -----------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_offset.y) + y
        n = len(self._lines)
        line = self._lines[index] if index < n else None
        if line is None and 0 <= index - n < len(self._tail):
            line = self._tail[index - n]
        base = self.visual_style
        width = self.scrollable_content_region.width
        if line is None:
            return Strip.blank(width, base.rich_style)
        parse = self.app.stylesheet.parse_style
        segments = [
            Segment(text, (base + style).rich_style)
            for text, style in line.render(base, end="", parse_style=parse)
        ]
        return Strip(segments).crop_extend(0, width, base.rich_style)
