"""The story: the seed sentence, then what the model wrote, drawn in two distinct styles.

A line-API widget that wraps incrementally: greedy word wrap (`wrap_offsets`) never changes
a finished line when text is appended, so each flush only re-wraps the last, unfinished line
and the cost of a redraw does not grow with the story. (Re-wrapping a whole Static every
frame cost ~10 ms per frame at a few thousand characters, time the UI thread took from the
engine's worker.) A width change or a different story rebuilds the lines once. While the
story grows, its new height reaches the scrollbar without a screen-wide layout pass (see
`_set_virtual_size`); only public Textual API is used.

The view follows the end while the reader is at the end, stops following as soon as they
scroll up, and follows again once they scroll back to the bottom. On a wide terminal the
lines are at most `READING_WIDTH` cells, centred: a line of 150 characters is hard to read.

A story written with a brief has the brief's words (in any inflected form) and name marked
as they appear (`tui.brief.BriefMarks`): a line is marked once, when it is finished, and the
unfinished last line on each flush, its last word only once the word is whole. The bottom
border tallies the brief: each word and the name found or not yet, the features once the
story is done.
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.segment import Segment
from textual.content import Content
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from slm_tui.tui.brief import BriefMarks
from slm_tui.tui.story import FINISH_LABELS, Story

CURSOR = "▌"
READING_WIDTH = 100  # cells of text at most in a line, however wide the view
SEED_STYLE = "bold $text-accent"
TEXT_STYLE = "$foreground"
MARK_STYLE = "bold underline $text-success"  # a brief's word or name in the story
# C0 control characters (a young model emits them) drawn as their Unicode control pictures,
# so they neither vanish nor move the terminal's cursor; newline and tab stay as they are.
_CONTROL_PICTURES = {c: 0x2400 + c for c in range(32) if chr(c) not in "\n\t"} | {127: 0x2421}
_CHUNK = re.compile(r"\S+\s*|\s+")  # a word and the whitespace after it (or leading space)


def visible(text: str) -> str:
    return text.translate(_CONTROL_PICTURES)


def wrap_offsets(text: str, width: int) -> list[int]:
    """Where greedy word wrap breaks `text` (one line: no newlines, tabs already expanded)
    into lines of at most `width` terminal cells, as character offsets.

    A chunk is a word and the whitespace after it, measured in cells (a wide character
    counts two). A chunk that does not fit the rest of the line starts the next one; that
    is Textual's rule, so the story wraps as Textual's widgets do. A word wider than a whole
    line is folded character by character, and the whitespace after it stays on the fold's
    last line (where Textual would start a line of blanks). A break depends only on the text
    before it and on the chunk it falls in, and appended text can only lengthen the last
    chunk, so appending never moves a break already made: only the last line is unfinished.
    """
    width = max(1, width)
    breaks: list[int] = []
    used = 0  # cells on the current line
    for match in _CHUNK.finditer(text):
        start, chunk = match.start(), match.group()
        chunk_width = cell_len(chunk)
        if used + chunk_width <= width:
            used += chunk_width
        elif chunk_width <= width:
            breaks.append(start)  # used > 0 here, or the chunk would have fitted
            used = chunk_width
        else:  # too wide for any line: a line of its own, folded; the whitespace hangs
            if used:
                breaks.append(start)
            word = chunk.rstrip()
            used = 0
            for i, char in enumerate(word):
                char_width = cell_len(char)
                if used and used + char_width > width:
                    breaks.append(start + i)
                    used = 0
                used += char_width
            used += chunk_width - cell_len(word)
    return breaks


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
        self.story: Story | None = None  # the story the lines below were built from
        self.latest: Story | None = None  # the story to show (drawn once the view is on screen)
        self._width = 0  # the width the lines are wrapped at
        self._margin = 0  # blank cells left of them (the text block is centred)
        self._consumed = 0  # characters of story.text already wrapped
        self._lines: list[Content] = []  # finished lines
        self._partial = Content("")  # the unfinished last line, trailing spaces kept
        self._tail: list[Content] = [suffix_content(None)]  # partial + suffix, wrapped
        self._follow = True
        self.marks: BriefMarks | None = None  # the shown story's brief, when it has one
        self._tally: tuple = ()

    # -- building lines ----------------------------------------------------------------
    def _append(self, text: str, style: str) -> None:
        for i, piece in enumerate(text.split("\n")):
            if i:
                self._lines.append(self._mark(self._partial))
                self._partial = Content("")
            if not piece:
                continue
            self._partial = self._partial + Content.styled(
                visible(piece.replace("\t", "    ")), style
            )
            offsets = wrap_offsets(self._partial.plain, self._width)
            if offsets:
                parts = self._partial.divide(offsets)
                self._lines.extend(self._mark(p) for p in parts[:-1])
                self._partial = parts[-1]

    def _rebuild(self, story: Story | None) -> None:
        self._lines, self._partial, self._consumed = [], Content(""), 0
        brief = story.brief if story is not None else None
        self.marks = BriefMarks(brief) if brief is not None else None
        if story is not None:
            self._append(story.prompt, SEED_STYLE)
            self._append(story.text, TEXT_STYLE)
            self._consumed = len(story.text)

    def show(self, story: Story | None) -> None:
        """Draw `story` (cheap when it is the same story with more text)."""
        self.latest = story
        region = self.scrollable_content_region.width
        if region <= 0:
            return  # not on screen (the token view is up): drawn when it is shown again
        width = min(region, READING_WIDTH)
        self._margin = (region - width) // 2
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
        whole = story is None or not story.streaming
        tail = self._mark(self._partial, complete=whole) + suffix_content(story)
        offsets = wrap_offsets(tail.plain, width)
        self._tail = tail.divide(offsets) if offsets else [tail]
        self._set_virtual_size(Size(region, len(self._lines) + len(self._tail)))
        if self._follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        self._show_tally(story)
        self.refresh()

    def _mark(self, line: Content, complete: bool = True) -> Content:
        if self.marks is None:
            return line
        for start, end in self.marks.spans(line.plain, complete):
            line = line.stylize(MARK_STYLE, start, end)
        return line

    def _show_tally(self, story: Story | None) -> None:
        """The brief's tally on the bottom border (set only when it changes)."""
        marks = self.marks
        done = story is not None and not story.streaming
        tally = () if marks is None or story is None else tuple(
            marks.tally(story.prompt + story.text if done else None)
        )  # fmt: skip
        if tally == self._tally:
            return
        self._tally = tally
        parts: list = ["brief "] if tally else []
        signs: dict[bool | None, tuple[str, str]] = {
            True: (" ✓", "$text-success"),
            False: (" ✗", "$text-error"),
            None: ("", "$foreground"),  # not judged yet
        }
        for n, (item, ok) in enumerate(tally):
            sign, style = signs[ok]
            parts += [" · " if n else "", (item + sign, style)]
        self.border_subtitle = Content.assemble(*parts) if parts else None

    def _set_virtual_size(self, size: Size) -> None:
        """Set the scrollable size; while a story grows, without a layout pass.

        Assigning `virtual_size` (as Textual's `Log` does) lays out the whole screen, and a
        fast model adds a line on most flushes: that cost ~3 ms of the UI thread per flush,
        time the engine's worker waits for the GIL. Only the vertical scrollbar depends on
        the height, so while the story grows and the scrollbar neither appears nor goes, the
        size is stored with `set_reactive` (no layout) and the scrollbar is given its new
        range. Anything else (another story, a new width, the scrollbar appearing) assigns
        `virtual_size` and lets Textual lay out as usual.
        """
        old = self.virtual_size
        if size == old:
            return
        needs_bar = size.height > self.container_size.height
        if (
            size.width == old.width
            and size.height > old.height
            and needs_bar == self.show_vertical_scrollbar
        ):
            self.set_reactive(StoryView.virtual_size, size)
            if needs_bar:
                self.vertical_scrollbar.window_virtual_size = size.height
        else:
            self.virtual_size = size

    def follow(self) -> None:
        """Jump to the end and follow it again (a new story starts)."""
        self._follow = True
        self.scroll_to(y=self.max_scroll_y, animate=False)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._follow = new >= self.max_scroll_y

    def on_resize(self) -> None:
        self.show(self.latest)

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
        segments = [Segment(" " * self._margin, base.rich_style)] if self._margin else []
        segments += [
            Segment(text, (base + style).rich_style)
            for text, style in line.render(base, end="", parse_style=parse)
        ]
        return Strip(segments).crop_extend(0, width, base.rich_style)
