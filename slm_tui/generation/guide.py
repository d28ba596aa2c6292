"""Brief guidance: nudge a row's sampling toward the brief's words it has not written yet.

A model trained with briefs learns to use the requested words only so far (the bundled demo:
each word a third of the time, see its card); the guide closes the gap at sampling time, the
way a writer keeps a list of words to work in. Per row, before each token is sampled:

- for each requested word not yet in the story, the first token of the word as it would be
  written mid-sentence (" dragon", " Dragon") gets a bonus on its logit, small at first
  and growing with the story's length (`START` + `RAMP` per token, at most `CAP`, times the
  row's `brief_strength`), so the word comes where the model already half wants it;
- a word begun (the story's last tokens are the first tokens of its spelling) gets a large
  bonus (`FINISH`) on its next token, so "drag" becomes "dragon", not "dragging";
- the end-of-text token gets the opposite of the growing bonus while a word is missing, so
  a story does not end before it has used its words (it still ends at `max_new_tokens`).

A word counts as written once it is complete in the story text in any inflected form
(`briefs.uses_word`, the same check the brief marks and `bench/briefs.py` use). The name is
guided the same way (spelled as given, as a whole word), and `dialogue` through the opening
quote (' "'), until the story has a quotation mark: the model closes what it opens. `moral`
is left to the model (no token starts one reliably).
The constants were chosen on dev.txt briefs (`bench/briefs.py`'s, 60 stories, the demo v3):
ramp 0.04 / cap 6 used all three words in 81% of stories, 0.06 / 7 in 96%, 0.08 / 8 in 99%
with more words forced in where they fit badly; the middle one was taken.
`brief_strength` 0 turns the guide off: the story is then exactly the one the brief's block
before the prompt writes. The bonuses change the sampled distribution, so a guided token's
reported probability is the one it was drawn with.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from slm_tui.briefs import uses_word

if TYPE_CHECKING:
    from slm_tui.generation.settings import SamplingSettings
    from slm_tui.tokenizers.base import Tokenizer

START = 1.0  # bonus (nats) on a missing word's first token at the story's first token
RAMP = 0.06  # added per generated token
CAP = 7.0  # the most the growing bonus reaches
FINISH = 8.0  # bonus on the next token of a word already begun
TAIL = 160  # characters of the story kept to check the words against
_LAST_WORD = re.compile(r"[A-Za-z]*\Z")


class BriefGuide:
    """The guide of one row (module docstring): `bias()` before a token, `wrote()` after.
    `missing` maps what is still to be written ("dog", "name:Max", "dialogue") to the token
    spellings that start it and the check that says it is written."""

    def __init__(
        self,
        words: Sequence[str],
        tokenizer: Tokenizer,
        strength: float,
        eos: int | None,
        *,
        name: str | None = None,
        dialogue: bool = False,
    ) -> None:
        self.strength, self.eos = strength, eos
        self.missing: dict[str, tuple[list[tuple[int, ...]], Callable[[str], bool]]] = {}

        def spell(*texts: str) -> list[tuple[int, ...]]:
            return [ids for ids in {tuple(tokenizer.encode(t)) for t in texts} if ids]

        for word in words:
            self.missing[word] = (
                spell(f" {word}", f" {word.capitalize()}"),
                functools.partial(_uses, word),
            )
        if name:
            whole = re.compile(rf"\b{re.escape(name)}\b")
            self.missing[f"name:{name}"] = (spell(f" {name}"), lambda t: bool(whole.search(t)))
        if dialogue:
            self.missing["dialogue"] = (spell(' "'), lambda t: '"' in t or "\u201c" in t)
        self._ids: list[int] = []  # the story's tokens so far
        self._tail = ""  # the end of the story's text
        self._checked = ""  # the complete part of the tail the checks last saw
        self._pending = b""  # bytes of a character not yet complete

    @property
    def done(self) -> bool:
        return not self.missing

    def bias(self) -> dict[int, float]:
        """Token id -> logit bonus for the next token (empty once every word is written)."""
        if not self.missing:
            return {}
        grow = self.strength * min(CAP, START + RAMP * len(self._ids))
        out: dict[int, float] = {}
        for spellings, _ in self.missing.values():
            for ids in spellings:
                begun = next(
                    (k for k in range(len(ids) - 1, 0, -1) if tuple(self._ids[-k:]) == ids[:k]),
                    0,
                )
                tok, bonus = ids[begun], (self.strength * FINISH if begun else grow)
                out[tok] = max(out.get(tok, 0.0), bonus)
        if self.eos is not None:
            out[self.eos] = -grow
        return out

    def wrote(self, token_id: int, data: bytes) -> None:
        """The row's next token and its bytes: words now complete leave `missing`."""
        self._ids.append(token_id)
        data = self._pending + data
        try:
            text, self._pending = data.decode("utf-8"), b""
        except UnicodeDecodeError:
            self._pending = data
            return
        self._tail = (self._tail + text)[-TAIL:]
        if not self.missing:
            return
        complete = self._tail[: _LAST_WORD.search(self._tail).start()]  # type: ignore[union-attr]
        if complete == self._checked:
            return  # inside a word: nothing new is complete (most tokens)
        self._checked = complete
        for key in [k for k, (_, written) in self.missing.items() if written(complete)]:
            del self.missing[key]


def _uses(word: str, text: str) -> bool:
    return uses_word(text, word)


def make_guide(settings: SamplingSettings, tokenizer: Tokenizer) -> BriefGuide | None:
    """The guide a row with these settings gets: None without a brief to guide (words, a
    name, dialogue) or at strength 0."""
    brief = settings.brief
    if brief is None or settings.brief_strength <= 0:
        return None
    dialogue = "dialogue" in brief.features
    if not (brief.words or brief.name or dialogue):
        return None
    return BriefGuide(brief.words, tokenizer, settings.brief_strength, tokenizer.eos_id,
                      name=brief.name, dialogue=dialogue)  # fmt: skip
