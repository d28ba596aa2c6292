"""F10: the history browser. Every stored story, newest first, with its title, time,
checkpoint, length, seed and how it ended; type to filter (every word must be in the
story's name, seed sentence, text or checkpoint), Up/Down to move, Enter to open.

F2 renames the highlighted story, F8 (or Del in the list) deletes it after asking, Ctrl+S
copies it to the clipboard; each is saved in the history store at once (`store.History`:
a rename is appended, a delete rewrites the file without the story). A story still being
written is neither renamed on disk nor deleted until it ends. Returns the id of the story
to show, or None.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from slm_tui.tui.keys import HISTORY_KEYS, key_display
from slm_tui.tui.screens.dialogs import AskText, Confirm
from slm_tui.tui.store import History
from slm_tui.tui.story import Story
from slm_tui.tui.widgets.history_list import entry_lines, opening

WIDTH = 96  # characters of an entry's lines (the box is at most 100 wide)


def matches(story: Story, query: str) -> bool:
    """Every word of `query` is in the story's name, seed sentence, text or checkpoint."""
    haystack = f"{story.name}\n{story.prompt}\n{story.text}\n{story.checkpoint}".casefold()
    return all(word in haystack for word in query.casefold().split())


class HistoryScreen(ModalScreen[str | None]):
    HELP_TITLE = "the history"
    HELP_EXTRA = (
        ("type", "filter: every word must be in the story, its seed or its checkpoint"),
        ("↑ / ↓, PgUp / PgDn", "move between stories"),
        ("Enter", "open the story in the writing screen"),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        *HISTORY_KEYS,
        Binding("down", "move(1)", show=False),
        Binding("up", "move(-1)", show=False),
        Binding("pagedown", "move(10)", show=False),
        Binding("pageup", "move(-10)", show=False),
    ]

    def __init__(self, history: History, session: list[Story], current_id: str | None) -> None:
        super().__init__()
        self.history = history
        self.session = session  # the app's: a deleted story leaves the session's export too
        self.current_id = current_id
        self.shown: list[Story] = []  # the entries listed, in order

    def compose(self) -> ComposeResult:
        with Vertical(id="history-box") as box:
            hints = [(b.key, b.description) for b in HISTORY_KEYS]
            box.border_subtitle = "Enter open · " + " · ".join(
                f"{key_display(k.split(',')[0])} {what}" for k, what in hints
            )
            yield Input(placeholder="type to search: words of a story, its seed or checkpoint",
                        id="history-search")  # fmt: skip
            yield OptionList(id="history-entries")

    def on_mount(self) -> None:
        self._fill(keep=self.current_id)
        self.query_one("#history-search", Input).focus()

    @property
    def entries(self) -> OptionList:
        return self.query_one("#history-entries", OptionList)

    @property
    def highlighted(self) -> Story | None:
        index = self.entries.highlighted
        return self.shown[index] if index is not None and 0 <= index < len(self.shown) else None

    def _fill(self, keep: str | None = None) -> None:
        query = self.query_one("#history-search", Input).value
        stories = list(reversed(self.history.stories))
        self.shown = [s for s in stories if matches(s, query)]
        entries = self.entries
        entries.set_options(
            [Option(entry_lines(s, WIDTH, details=True), id=s.id) for s in self.shown]
        )
        ids = [s.id for s in self.shown]
        if ids:
            entries.highlighted = ids.index(keep) if keep in ids else 0
        shown = f"{len(ids)} of {len(stories)}" if query.strip() else f"{len(stories)}"
        self.query_one("#history-box").border_title = f"History · {shown} stories"
        if not ids:
            empty = "nothing matches" if query.strip() else "no stories yet"
            entries.add_option(Option(Content.styled(empty, "$text-muted"), disabled=True))

    @on(Input.Changed, "#history-search")
    def _search(self) -> None:
        self._fill()

    @on(Input.Submitted, "#history-search")
    def _open_highlighted(self) -> None:
        story = self.highlighted
        if story is not None:
            self.dismiss(story.id)

    @on(OptionList.OptionSelected, "#history-entries")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.dismiss(event.option.id)

    def action_move(self, delta: int) -> None:
        if self.shown:
            index = self.entries.highlighted or 0
            self.entries.highlighted = max(0, min(len(self.shown) - 1, index + delta))

    def action_close(self) -> None:
        self.dismiss(None)

    def action_copy(self) -> None:
        story = self.highlighted
        if story is not None:
            self.app.copy_to_clipboard(story.prompt + story.text)
            self.notify(f"Copied “{opening(story, 40)}” to the clipboard.", markup=False)

    def action_rename(self) -> None:
        story = self.highlighted
        if story is None:
            return

        def renamed(name: str | None) -> None:
            if name is not None:
                self.history.rename(story, name)
                self._fill(keep=story.id)
                title = story.name or "its opening words"
                self.notify(f"Renamed: {title}", markup=False)

        note = "Enter keeps it · empty: back to its opening words · Esc: cancel"
        self.app.push_screen(AskText("Rename the story", story.name or opening(story, 60),
                                     note), renamed)  # fmt: skip

    def action_delete(self) -> None:
        story = self.highlighted
        if story is None:
            return
        if story.streaming:
            self.notify("That story is still being written: stop it first (Esc).")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.history.delete(story.id)
                if story in self.session:
                    self.session.remove(story)
                self._fill()
                self.notify(f"Deleted “{opening(story, 40)}”.", markup=False)

        question = (
            f"“{story.name or opening(story, 60)}” ({story.num_tokens} tokens) is removed "
            "from the history file. Exports already written keep it."
        )
        self.app.push_screen(Confirm("Delete this story?", question, yes="Delete"), answer)
