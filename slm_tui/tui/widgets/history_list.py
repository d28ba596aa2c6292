"""The stories of this and earlier sessions, newest first; Enter or a click shows one again."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from slm_tui.tui.story import Story


class HistoryList(OptionList):
    @dataclass
    class Picked(Message):
        story_id: str

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "history"

    def set_stories(self, stories: list[Story], current_id: str | None = None) -> None:
        highlighted = self.highlighted_option.id if self.highlighted_option else current_id
        options = []
        for story in reversed(stories):
            mark = "… " if story.streaming else ""
            label = Content.assemble(
                (mark, "$text-accent"), story.title, (f"  {story.num_tokens}t", "$text-muted")
            )
            options.append(Option(label, id=story.id))
        self.set_options(options)
        ids = [o.id for o in options]
        if highlighted in ids:
            self.highlighted = ids.index(highlighted)
        self.border_subtitle = f"{len(stories)}"

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.Picked(event.option.id))
