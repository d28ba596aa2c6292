"""The stories of this and earlier sessions, newest first; Enter or a click shows one again.

Each entry is its title (the name the user gave it, else its opening words: the seed
sentence and the first words the model wrote, on up to two lines) and a line saying when,
how long, with which checkpoint. Two stories from one seed sentence differ in their time
and in the words after the seed. `entry_lines` is shared with the history browser (F10),
which has the width for more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from textual.content import Content
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from slm_tui.tui.story import FINISH_LABELS, Story
from slm_tui.tui.widgets.story_view import visible

SIDE_WIDTH = 26  # the side panel list's characters a line (its scrollbar may take one)
TITLE_LINES = 2  # ... and lines of a title there (the words after a common seed show)


def opening(story: Story, width: int) -> str:
    """The story's opening words (seed sentence, then what was written), whitespace made
    single spaces, cut at a word to at most `width` characters."""
    words = visible(" ".join(f"{story.prompt}{story.text}".split())) or "(empty seed)"
    if len(words) <= width:
        return words
    cut = words[: width - 1]
    space = -1 if words[width - 1] == " " else cut.rfind(" ")  # the cut ends a word: kept
    return (cut[:space] if space > width // 2 else cut).rstrip(" ,.;:") + "…"


def when(created: str, now: datetime | None = None) -> str:
    """A story's time, short: 21:14 today, Dec 04 21:14 this year, else 2025-12-04."""
    try:
        t = datetime.fromisoformat(created)
    except ValueError:
        return created[:16]
    now = now or datetime.now(t.tzinfo)
    if t.date() == now.date():
        return t.strftime("%H:%M")
    if t.year == now.year:
        return t.strftime("%b %d %H:%M")
    return t.strftime("%Y-%m-%d")


def entry_lines(story: Story, width: int, details: bool = False, title_width: int = 0) -> Content:
    """The title (at most `title_width` characters, wrapped by the list; default `width`)
    and the muted line under it: time, length, checkpoint (`details`: seed and how it
    ended too), cut to `width`."""
    title_width = title_width or width
    title = visible(story.name[:title_width]) if story.name else opening(story, title_width)
    mark = "… " if story.streaming else ""
    meta = [when(story.created), f"{story.num_tokens} tok"]
    if details:
        if story.seed is not None:
            meta.append(f"seed {story.seed}")
        meta.append(FINISH_LABELS.get(story.finish_reason or "", "writing…"))
    meta.append(story.checkpoint or "?")
    line = " · ".join(meta)
    return Content.assemble(
        (mark, "$text-accent"),
        (title, "bold" if story.name else ""),
        "\n",
        (visible(line if len(line) <= width else line[: width - 1] + "…"), "$text-muted italic"),
    )


class HistoryList(OptionList):
    @dataclass
    class Picked(Message):
        story_id: str

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "history (F10)"

    def set_stories(self, stories: list[Story], current_id: str | None = None) -> None:
        highlighted = self.highlighted_option.id if self.highlighted_option else current_id
        # Two lines of title: the words a line leaves room for after a long seed, less a
        # little for the wrap breaking at a word.
        title = SIDE_WIDTH * TITLE_LINES - 8
        options = [
            Option(entry_lines(s, SIDE_WIDTH, title_width=title), id=s.id)
            for s in reversed(stories)
        ]
        self.set_options(options)
        ids = [o.id for o in options]
        if highlighted in ids:
            self.highlighted = ids.index(highlighted)
        self.border_subtitle = f"{len(stories)}"

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.Picked(event.option.id))
