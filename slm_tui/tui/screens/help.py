"""F1 (or `?`): the keys of the screen you are on, in words, then the keys of every screen.

Built when it opens from the screen below it: that screen's bindings, each with what it
does (the binding's tooltip), the rows a screen adds (`HELP_EXTRA`, under
`HELP_EXTRA_TITLE`: keys its widgets handle, the prompt's Enter, a sampling field's Up/Down;
what the Train screen's chart shows), and the App's keys. The key
shown is the one the user's key map gives the binding. Two columns, the keys column as wide
as its longest entry, the text wrapping within its own column; the box scrolls (Up/Down,
PgUp/PgDn, the mouse) and says so in its bottom border when it does not fit. The ids a key
map file remaps come last, apart from the descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from slm_tui.tui.keys import APP_KEYS, key_display

KEY_COLUMN_MAX = 24  # a longer key list wraps within its column

EDITING_KEYS = (
    ("Enter", "write a story from the seed sentence (in the prompt)"),
    ("Shift+Enter, Ctrl+J", "a new line in the prompt"),
    ("↑ / ↓, PgUp / PgDn", "step the focused sampling value (×1 / ×10)"),
    ("← / →, Home / End", "select a token in the token view"),
    ("Tab, Shift+Tab", "move between prompt, story, sampling fields and history"),
)
EVERYWHERE = (
    ("Ctrl+P", "the command palette: every action, checkpoint and preset, and the themes"),
)
SCROLL_HINT = "↑↓ PgUp PgDn: scroll · Esc: close"


@dataclass(frozen=True)
class Section:
    title: str
    rows: tuple[tuple[str, str], ...]  # (keys, what they do)


def binding_rows(bindings: list[Binding], keymap: dict[str, str]) -> list[tuple[str, str]]:
    """(keys, what it does) for each binding, once per action, with the user's keys."""
    rows, seen = [], set()
    for b in bindings:
        if b.action in seen:
            continue
        seen.add(b.action)
        keys = key_display(keymap.get(b.id or "", b.key))
        rows.append((keys, b.tooltip or b.description or b.action))
    return rows


def screen_bindings(screen: Screen) -> list[Binding]:
    """The bindings a screen declares itself, without the App's (help and quit)."""
    app_actions = {b.action for b in APP_KEYS}
    bindings = [b for b in type(screen).BINDINGS if isinstance(b, Binding)]
    return [b for b in bindings if b.action not in app_actions]


def help_sections(screen: Screen, keymap: dict[str, str]) -> list[Section]:
    """What F1 shows over `screen`: its keys, its widgets' keys, then the App's."""
    title = getattr(screen, "HELP_TITLE", "this screen")
    sections = [Section(f"Keys on {title}", tuple(binding_rows(screen_bindings(screen), keymap)))]
    extra = getattr(screen, "HELP_EXTRA", ())
    if extra:
        heading = getattr(screen, "HELP_EXTRA_TITLE", "Typing and moving")
        sections.append(Section(heading, tuple(extra)))
    app_rows = binding_rows([b for b in APP_KEYS if b.id], keymap)
    app_rows[0] = (f"{app_rows[0][0]}, ?", app_rows[0][1])  # `?` too, where no field types it
    sections.append(Section("On every screen", (*app_rows, *EVERYWHERE)))
    return sections


def remap_ids(screen: Screen, keymap: dict[str, str]) -> list[tuple[str, str]]:
    """(binding id, its keys) of the screen's bindings that a key map file can remap."""
    bindings = [*screen_bindings(screen), *APP_KEYS]
    return [(b.id, keymap.get(b.id, b.key)) for b in bindings if b.id]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,question_mark,q", "app.pop_screen", "close", show=False)
    ]

    def __init__(
        self,
        title: str,
        sections: list[Section],
        keys_file: str,
        ids: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.sections = sections
        self.keys_file = keys_file
        self.ids = list(ids or [])

    @classmethod
    def over(cls, screen: Screen, keymap: dict[str, str], keys_file: str) -> HelpScreen:
        """The help for `screen` (the one F1 was pressed on)."""
        title = getattr(screen, "HELP_TITLE", "this screen")
        return cls(f"Help · {title}", help_sections(screen, keymap), keys_file,
                   remap_ids(screen, keymap))  # fmt: skip

    @property
    def text(self) -> str:
        """Everything the help says, as plain text (tests)."""
        lines = [self.title_text]
        for section in self.sections:
            lines.append(section.title)
            lines += [f"{keys}  {what}" for keys, what in section.rows]
        lines.append(str(self._remap_content()))
        return "\n".join(lines)

    def compose(self) -> ComposeResult:
        rows = [keys for s in self.sections for keys, _ in s.rows]
        width = min(KEY_COLUMN_MAX, max(map(len, rows), default=8) + 2)
        with Vertical(id="help-box") as box:
            box.border_title = self.title_text
            with VerticalScroll(id="help-scroll"):
                for section in self.sections:
                    yield Static(Content(section.title), classes="help-heading")
                    for keys, what in section.rows:
                        with Horizontal(classes="help-row"):
                            key = Static(Content(keys), classes="help-key", markup=False)
                            key.styles.width = width
                            yield key
                            yield Static(Content(what), classes="help-what", markup=False)
                yield Static(self._remap_content(), id="help-remap", markup=False)

    def _remap_content(self) -> Content:
        ids = "  ".join(f"{id}: {key}" for id, key in self.ids)
        return Content.assemble(
            ("Remap a key in ", "$text-muted"),
            (self.keys_file, "$text-accent"),
            (" with a line  id: keys  (e.g. regenerate: ctrl+g). The ids here: ", "$text-muted"),
            (ids, "$text-muted"),
        )

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
        self.call_after_refresh(self._hint)

    def on_resize(self) -> None:
        self.call_after_refresh(self._hint)

    def _hint(self) -> None:
        scroll = self.query_one("#help-scroll", VerticalScroll)
        box = self.query_one("#help-box")
        box.border_subtitle = SCROLL_HINT if scroll.max_scroll_y > 0 else "Esc: close"
