"""Briefs in the TUI: the brief row's one-line syntax, and which words of a story to mark.

Plain functions and data, no Textual and no torch (the row, the story view, history and
export use them; tests call them directly).

The brief row's syntax (`parse_brief_text`, `brief_text` writes it back)::

    dog, cake · name: Max · features: dialogue

Words come first (commas or spaces between them; "words:" may label them), then
`name:` and `features:` in any order. "·", ";" and "|" separate parts and may be left out:
`dog cake name: max features: dialogue` is the same brief (a lower-case name is
capitalised). Anything else followed by a colon is an unknown label. Errors are one line
(`GenerationError`, the `Brief`'s own where the parts parse).

`BriefMarks` finds a brief's words and name in story text with `briefs`' own rules: a word
counts in any inflected form (`briefs.uses_word`: dogs, played, ran for run), the name as
written ("Max", "Max's"), a unit being a run of letters. Answers are memoised per run of
letters, so marking a line costs a regex pass and a dict lookup per word.
"""

from __future__ import annotations

import re
from typing import Any

from slm_tui.briefs import Brief, features_of, uses_word
from slm_tui.errors import GenerationError

PLACEHOLDER = "dog, cake · name: Max · features: dialogue"
HINT = "words, then name: and features: (dialogue, moral)"
SEPARATORS = "·;|"
_LABEL = re.compile(r"(?<![^\W\d_])(words?|names?|features?)\s*:", re.IGNORECASE)
_OTHER_LABEL = re.compile(r"([^\W\d_]*)\s*:")
_SPLIT = re.compile(r"[,\s]+")
_LETTERS = re.compile(r"[^\W\d_]+")  # briefs' unit of a word: a run of letters


def _items(text: str) -> list[str]:
    return [p for p in _SPLIT.split(text) if p]


def parse_brief_text(text: str) -> Brief | None:
    """The brief the row's text asks for; None for blank text. One-line `GenerationError`
    for text that is not a brief."""
    text = text.translate({ord(c): " " for c in SEPARATORS})
    pieces = _LABEL.split(text)  # [words, label, part, label, part, ...]
    parts: dict[str, str] = {"words": pieces[0]}
    seen: set[str] = set()
    for label, part in zip(pieces[1::2], pieces[2::2], strict=True):
        key = {"w": "words", "n": "name", "f": "features"}[label[0].lower()]
        if key in seen:
            raise GenerationError(f"'{key}:' is given twice in the brief")
        seen.add(key)
        parts[key] = parts.get(key, "") + " " + part
    for part in parts.values():
        other = _OTHER_LABEL.search(part)
        if other is not None:
            what = f"unknown label '{other.group(1)}:'" if other.group(1) else "a stray ':'"
            raise GenerationError(f"{what} in the brief; it has words, name: and features:")
    name = " ".join(_items(parts.get("name", ""))) or None
    if name is not None and name.isalpha() and name.islower():
        name = name.capitalize()  # "name: max" means Max
    brief = Brief(tuple(_items(parts["words"])), name, tuple(_items(parts.get("features", ""))))
    return None if brief.empty else brief


def brief_text(brief: Brief | None) -> str:
    """`brief` in the row's syntax ("" for none): `parse_brief_text` reads it back."""
    if brief is None:
        return ""
    parts = [", ".join(brief.words)] if brief.words else []
    if brief.name:
        parts.append(f"name: {brief.name}")
    if brief.features:
        parts.append("features: " + ", ".join(brief.features))
    return " · ".join(parts)


def stored_brief(settings: dict[str, Any]) -> Brief | None:
    """The brief a story's stored settings carry (None when none, or not a brief: a
    damaged history line must not stop the app)."""
    data = settings.get("brief") if isinstance(settings, dict) else None
    if not data:
        return None
    try:
        brief = Brief.from_dict(data)
    except (GenerationError, TypeError, AttributeError):
        return None
    return None if brief.empty else brief


class BriefMarks:
    """Where a brief's words and name occur in text, and which of them have occurred."""

    def __init__(self, brief: Brief) -> None:
        self.brief = brief
        self.found: set[str] = set()  # the brief's words and name seen so far
        self._memo: dict[str, str | None] = {}

    def _hit(self, run: str) -> str | None:
        """The brief word (or the name) a run of letters is, if any."""
        try:
            return self._memo[run]
        except KeyError:
            pass
        if run == self.brief.name:
            hit: str | None = run
        else:
            hit = next((w for w in self.brief.words if uses_word(run, w)), None)
        self._memo[run] = hit
        return hit

    def spans(self, text: str, complete: bool = True) -> list[tuple[int, int]]:
        """(start, end) of each occurrence in `text`, noting what was found. `complete`
        False: the text may go on, so a run of letters at its very end (a word still being
        written: "ca" of "cake", "cat" of "catch") is not judged yet."""
        out = []
        for m in _LETTERS.finditer(text):
            if not complete and m.end() == len(text):
                break
            hit = self._hit(m.group())
            if hit is not None:
                self.found.add(hit)
                out.append(m.span())
        return out

    def tally(self, text: str | None = None) -> list[tuple[str, bool | None]]:
        """Each part of the brief with whether the story has it: words and the name as
        found so far (None: not yet), features once the finished `text` is given (before,
        None)."""
        done = text is not None
        out: list[tuple[str, bool | None]] = []
        for item in (*self.brief.words, *([self.brief.name] if self.brief.name else [])):
            out.append((item, True if item in self.found else (False if done else None)))
        has = set(features_of(text)) if text is not None else set()
        out += [(f, (f in has) if done else None) for f in self.brief.features]
        return out
