"""Briefs put to use: the prompt a model reads, briefs in training text, chat messages that
ask for a story, and what a front end says about a brief. Torch-free (briefs.py holds the
briefs themselves: deriving, formatting, checking).

- `brief_prompt(brief, prompt)`: the text a model is given, the brief block and then the
  seed sentence (leading whitespace dropped: training text has none after "Story:\\n").
  The engine's `prepare_prompt` is its one caller on the way to token ids (the TUI, the
  batch CLI and the server all go through it); the text a model writes back is the story
  only, never the block.
- `TrainingBriefs`: `data.briefs` (the fraction of training stories prefixed with their
  brief) and `data.brief_words`, with the run's `train.seed`. Each story's brief comes from
  `story_rng(story, seed)`, a generator fixed by the story's own text, so a story gets the
  same brief whatever process or order encodes it: shards are the same for any worker
  count. `key` names the settings and `briefs.FORMAT_VERSION` for the shard cache.
  Validation text never gets briefs, so bits per byte on it compares with models trained
  without them.
- `data.blank_lines` (same object, same generator rule): the fraction of training stories
  written with a blank line between paragraphs. TinyStories comes in both layouts (the V1
  validation split's dump separates paragraphs with blank lines; the train-split text here
  almost never does), and a model that never saw a blank line pays ~14 nats for each.
- `trained_with_briefs(config)`: whether a run's config trained with briefs (`data.briefs`
  above 0); `CheckpointInfo.briefs` carries it for front ends.
- `request_brief(message)`: the brief of a chat message that asks for a story ("a story
  about a dragon named Max who finds a cake"); None for story text ("Once upon a time...")
  or a request that names nothing usable.
- `word_warnings(brief, tokenizer)`: the brief's words a model's tokenizer splits into more
  than two tokens or spells in bytes (a model copies such words less reliably).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from slm_tui.briefs import (
    FORMAT_VERSION,
    MAX_WORDS,
    Brief,
    format_brief,
    parse_message,
    story_rng,
    with_brief,
)
from slm_tui.errors import ConfigError, GenerationError

WORD_TOKENS = 2  # tokens a brief word may take (after a space) before a warning
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # SentencePiece's byte-fallback pieces


def brief_prompt(brief: Brief | None, prompt: str) -> str:
    """The text a model is given for `prompt` under `brief`: the block, then the prompt
    without leading whitespace; the prompt alone when there is no brief."""
    block = format_brief(brief) if brief is not None else ""
    return block + prompt.lstrip() if block else prompt


def trained_with_briefs(config: Any) -> bool:
    """Whether a run config (`slm_tui.config.Config`) trained with briefs."""
    data = getattr(config, "data", None)
    return (getattr(data, "briefs", 0.0) or 0.0) > 0.0


# ---- training text ------------------------------------------------------------------------


_LINE_BREAK = re.compile(r"(?<=[^\n])\n(?=[^\n])")  # one line break between two lines


def with_blank_lines(story: str) -> str:
    """The story with a blank line between its paragraphs: each single line break doubled
    (breaks that are already blank lines, and the story's ends, stay as they are)."""
    return _LINE_BREAK.sub("\n\n", story)


@dataclass(frozen=True)
class TrainingBriefs:
    """How training stories are written into shards (module docstring): after their brief
    (`fraction`, `n_words`), and with blank lines between paragraphs (`blank_lines`)."""

    fraction: float
    n_words: int = 3
    seed: int = 0
    blank_lines: float = 0.0

    def __post_init__(self) -> None:
        f, b = self.fraction, self.blank_lines
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0:
            raise ConfigError(f"data.briefs must be a fraction in [0, 1], got {f!r}")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b <= 1.0:
            raise ConfigError(f"data.blank_lines must be a fraction in [0, 1], got {b!r}")
        if f == 0.0 and b == 0.0:
            raise ConfigError("data.briefs or data.blank_lines must be above 0 (both are 0)")
        n = self.n_words
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_WORDS:
            raise ConfigError(f"data.brief_words must be from 0 to {MAX_WORDS}, got {n!r}")
        object.__setattr__(self, "fraction", float(f))
        object.__setattr__(self, "blank_lines", float(b))

    @classmethod
    def of(cls, config: Any) -> TrainingBriefs | None:
        """How a run config writes its training stories; None when they go in as they are
        (`data.briefs` and `data.blank_lines` both 0)."""
        d = config.data
        if not trained_with_briefs(config) and not d.blank_lines:
            return None
        return cls(d.briefs, d.brief_words, config.train.seed, d.blank_lines)

    @property
    def key(self) -> str:
        """What shards built with these settings are cached under (the format version too;
        without blank lines, the key shards had before that setting existed)."""
        key = f"v{FORMAT_VERSION} fraction={self.fraction!r} words={self.n_words} seed={self.seed}"
        return key + (f" blank_lines={self.blank_lines!r}" if self.blank_lines else "")

    def apply(self, story: str) -> str:
        """The training text of one story: its brief block and the story, or the story; the
        story part with blank lines between paragraphs for a `blank_lines` share of stories
        (drawn apart from the brief's generator, so each story's brief is the same as
        without the setting)."""
        text = story
        if self.fraction:
            text = with_brief(story, story_rng(story, self.seed), self.fraction, self.n_words)
        if self.blank_lines and story_rng(story, self.seed, "layout").random() < self.blank_lines:
            head = text[: len(text) - len(story.lstrip())]  # the brief block, or nothing
            text = head + with_blank_lines(text[len(head) :])
        return text


def training_text(story: str, is_val: bool, briefs: TrainingBriefs | None) -> str:
    """What a story is written into shards as: validation stories plain, training stories
    with their brief when `briefs` gives them one (the same text in any batch or process)."""
    return story if is_val or briefs is None else briefs.apply(story)


# ---- chat messages ------------------------------------------------------------------------

_OPENERS = r"(?:(?:please|ok|okay|now|so|hi|hey|can you|could you|would you|will you|i want|" \
    r"i'd like|i would like)\W+)*"  # fmt: skip
_REQUEST = re.compile(
    rf"^{_OPENERS}(?:write|tell|make|create|give|generate|compose|invent|another|one more)\b"
    rf"|^{_OPENERS}(?:an?|one|some)\s+(?:\w+\s+){{0,3}}?(?:story|stories|tale|tales)\b"
    r"|\b(?:story|stories|tale|tales)\s+(?:about|of|with|where|in which|featuring|named|"
    r"called|for|that|using)\b",
    re.IGNORECASE,
)


def is_story_request(message: str) -> bool:
    """Whether a chat message asks for a story (judged on its first sentence: "Write...",
    "Tell me...", "A story about...", "another one..."), rather than being story text."""
    first = re.split(r"[.!?\n]", message.strip(), maxsplit=1)[0]
    return _REQUEST.search(first) is not None


def request_brief(message: str) -> Brief | None:
    """The brief a chat message asks for (`briefs.parse_message`: its content words, a name,
    feature words); None when it is not a request or names nothing a brief can hold."""
    if not is_story_request(message):
        return None
    try:
        brief = parse_message(message)[0]
    except GenerationError:  # a name or word the brief refuses: not a usable request
        return None
    return None if brief.empty else brief


# ---- what a front end says ----------------------------------------------------------------


class _Tokenizer(Protocol):
    @property
    def kind(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def token_text(self, id: int) -> str: ...


def word_tokens(tokenizer: _Tokenizer, word: str) -> list[int]:
    """The ids `word` takes in a brief block ("Words: dog": after a space)."""
    head = tokenizer.encode("Words:")
    ids = tokenizer.encode("Words: " + word)
    if ids[: len(head)] == head:
        return ids[len(head) :]
    return tokenizer.encode(" " + word)  # a tokenizer that merged across the colon


def word_warnings(brief: Brief | None, tokenizer: _Tokenizer) -> list[str]:
    """One line per brief word (and the name) the tokenizer splits into more than
    `WORD_TOKENS` tokens or spells in bytes. None for the byte tokenizer, which spells
    every word in bytes."""
    if brief is None or tokenizer.kind == "byte":
        return []
    out = []
    parts = [("word", w) for w in brief.words] + ([("name", brief.name)] if brief.name else [])
    for what, word in parts:
        ids = word_tokens(tokenizer, word)
        pieces = [tokenizer.token_text(i) for i in ids]
        if any(_BYTE_PIECE.fullmatch(p) for p in pieces):
            how = f"is spelled in bytes by this model's tokenizer ({len(ids)} tokens)"
        elif len(ids) > WORD_TOKENS:
            how = f"is {len(ids)} tokens of this model's tokenizer ({' '.join(pieces)})"
        else:
            continue
        out.append(f"brief {what} {word!r} {how}; a model follows words of one or two tokens "
                   "best")  # fmt: skip
    return out


def untrained_note(name: str) -> str:
    """The line a front end says once when a brief goes to a model trained without them."""
    return (
        f"{name} was trained without briefs (data.briefs 0); the brief is given to it as "
        "plain text and may not be followed"
    )
