"""The brief row above the seed sentence: what the next story must contain, in one line.

One input in the syntax of `slm_tui.tui.brief` (`dog, cake · name: Max · features:
dialogue`), checked as you type by the engine's own `Brief`: the row's bottom border says
what it understood ("words: dog, cake · name: Max"), or the one-line error in place (the
border turns red and a story is not written until it is fixed), or the first word the
loaded model's tokenizer splits badly (`briefing.word_warnings`). Enter goes on to the seed
sentence. The writing view shows and hides the row with its key (Ctrl+B); a hidden row
asks for nothing, and keeps its text for when it is shown again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Input

from slm_tui.briefing import word_warnings
from slm_tui.briefs import Brief
from slm_tui.errors import GenerationError
from slm_tui.handle import ModelHandle, brief_note
from slm_tui.tui.brief import HINT, PLACEHOLDER, parse_brief_text

if TYPE_CHECKING:
    from slm_tui.tokenizers.base import Tokenizer


def model_notes(handle: ModelHandle, brief: Brief | None) -> list[str]:
    """What to tell the user when `brief` goes to `handle`'s model: that it was trained
    without briefs (`handle.brief_note`), and each brief word its tokenizer splits badly."""
    if brief is None:
        return []
    note = brief_note(handle)
    tokenizer = handle.tokenizer
    warnings = word_warnings(brief, tokenizer) if tokenizer is not None else []
    return [*([note] if note else []), *warnings]


# 6 words of 20 letters, a name, both features and the labels fit in far less: an edit that
# would pass it (a paste of megabytes) is refused, so neither the row nor an error quoting a
# word can grow with it.
MAX_CHARS = 240


class BriefRow(Vertical):
    """`brief` is what a new story is asked for: None while hidden, blank or wrong."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "brief"
        self.tokenizer: Tokenizer | None = None  # the loaded model's, for word warnings
        self.parsed: Brief | None = None  # what the text says (shown or not)
        self.error: str | None = None  # why the text is not a brief
        self.warnings: list[str] = []

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder=PLACEHOLDER,
            id="brief-input",
            compact=True,
            select_on_focus=False,
            max_length=MAX_CHARS,
        )

    def on_mount(self) -> None:
        self._check()

    @property
    def input(self) -> Input:
        return self.query_one("#brief-input", Input)

    @property
    def text(self) -> str:
        return self.input.value

    @property
    def shown(self) -> bool:
        return bool(self.display)

    @property
    def brief(self) -> Brief | None:
        return self.parsed if self.shown and self.error is None else None

    @property
    def problem(self) -> str | None:
        """The error that stops a story being written (only while the row is shown)."""
        return self.error if self.shown else None

    def set_tokenizer(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer = tokenizer
        self._check()

    @on(Input.Changed, "#brief-input")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self._check()

    @on(Input.Submitted, "#brief-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()  # Enter here goes on to the seed sentence; it writes nothing
        self.screen.focus_next()

    def _check(self) -> None:
        try:
            self.parsed, self.error = parse_brief_text(self.text), None
        except GenerationError as exc:
            self.parsed, self.error = None, str(exc)
        tokenizer = self.tokenizer
        self.warnings = word_warnings(self.parsed, tokenizer) if tokenizer is not None else []
        self.set_class(self.error is not None, "-invalid")
        self.border_subtitle = self.summary()

    def summary(self) -> Content:
        """The bottom border's line: the error, the first warning, or what the text says."""
        if self.error is not None:
            # (the row is the brief: "name 'max smith' must be...", not "brief name ...")
            return Content.styled(self.error.removeprefix("brief "), "$text-error")
        if self.warnings:
            return Content.styled(self.warnings[0], "$text-warning")
        brief = self.parsed
        if brief is None:
            return Content(HINT)
        parts = []
        if brief.words:
            parts.append("words: " + ", ".join(brief.words))
        if brief.name:
            parts.append(f"name: {brief.name}")
        if brief.features:
            parts.append("features: " + ", ".join(brief.features))
        return Content(" · ".join(parts))
