"""Story briefs: what a story must contain (words, a name, features), derived from stories.

A brief is three things a reader can check in the finished story, as in the Instruct models
of the TinyStories paper (Eldan & Li, 2023): words it uses, its main character's name, and
features of its form. Torch-free; the data pipeline, the engine, the server and the TUI
all speak `Brief`.

Prompt format (plain text, no special tokens, so every tokenizer kind carries it)::

    Words: dog, cake, happy
    Name: Max
    Features: dialogue
    Story:
    <the story>

Lines appear only when they have content, always in this order, and "Story:" plus a
newline closes the block. The block ends on a newline and the story starts with a letter:
every tokenizer kind puts a token boundary there ("\\n" is its own piece in ours, a
pre-token of its own in GPT-2's regex, a byte piece in Llama's), so the tokens of a prompt
ending in the block are a prefix of the tokens of block + story. A trailing space
("Story: ") would not do: GPT-2-style BPE glues it to the next word. An empty brief is "".

How a brief is derived from a story (`brief_of`):
- words: lower-case words of the story (letters only, 3 to 20 of them), skipping the
  stop list below, contractions, and the lower-case form of any word the story capitalises
  mid-sentence (names); `n_words` of them drawn with the caller's `random.Random`, so a
  seed fixes them. The stop list holds function words (articles, prepositions,
  conjunctions, pronouns, determiners, auxiliaries and modals) and the frame and glue of
  nearly every story ("once upon a time", "one day", "named", "said", "went", "saw",
  "wanted", "looked", "felt", "very", "together"): a brief of such words says nothing about
  what the story is about. Common content words stay ("happy", "big", "play", "mom").
- name: the word the story capitalises where no sentence starts (after a comma, a closing
  quote, a title like "Mr."), occurring most often (first seen wins a tie), and not one of
  the capitalised non-names ("I", "Mom", "Dad", "Grandma", days, months, holidays, ...).
  A word that is only ever capitalised at sentence starts is not taken: nothing tells it
  from "The".
- features, only those a few lines of code detect reliably: `dialogue` (quoted speech:
  text with a letter inside a pair of "..." or curly double quotes; single quotes are
  not counted, they are apostrophes too) and `moral` ("the moral", "learned that",
  "taught him that", a lesson learned or taught within one sentence). Deliberately not
  offered: twist, bad ending, foreshadowing, conflict, happy ending (the paper's other
  features): no rule checks them in text, so a brief could not be derived or verified.

`satisfies` checks a story against a brief with the same rules; a requested word counts
in any inflected form (`_forms`: -s/-es/-ies, -ed/-ied, -ing, -er/-est/-ier/-iest with
doubled consonants and a dropped e restored, plus a table of irregular verbs, plurals and
comparatives: dog/dogs, play/played/playing, happy/happier, run/ran). It matches stems,
not meanings, so it is generous at the edges ("hop" also matches "hoping").
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, NoReturn

from slm_tui.errors import ConfigError, GenerationError

# The version of the training text a brief makes (the block's format above and `with_brief`'s
# choices): shards built with briefs are cached under it, so a change here must bump it.
FORMAT_VERSION = 1
MAX_WORDS = 6
MAX_WORD_LEN = 20
FEATURES: dict[str, str] = {
    "dialogue": "the characters speak: quoted speech in double quotes",
    "moral": 'the story states its lesson ("the moral of the story", "learned that")',
}
LABELS = ("Words", "Name", "Features")
STORY_LABEL = "Story:"


def _table(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP = _table("""
a an the and or but nor so yet if then than because as at by for from in into of off on onto out
over under up down with without about above after again against all along also among around away
back before behind below beside between both during each either even ever every few here how just
least less more most much near neither never next not now only other others own same some such
there these this those though through till too toward towards until very what when where whether
which while who whom whose why yes no i me my mine myself you your yours yourself he him his
himself she her hers herself it its itself we us our ours ourselves they them their theirs
themselves one ones someone something anything everything nothing everyone anyone nobody somebody
everybody somewhere anywhere everywhere nowhere am is are was were been being have has had having
do does did done doing can could will would shall should may might must let lets get gets got
gotten getting once upon time day days named called end said says say asked replied told went go
goes going gone came come comes saw see seen looked look looks wanted want wants felt feel feels
started decided tried thought knew know made make put took like really always soon still later
suddenly together lot lots many thing things way oh wow yay hey okay please thank thanks hello bye
that tell tells anymore sometimes maybe almost quite instead else another enough ago became become
none any course well sure
""")
NON_NAMES = _table("""
I Mom Mommy Mum Mummy Mama Momma Ma Dad Daddy Papa Pa Grandma Grandpa Granny Nana Gran Grandmother
Grandfather Mother Father Aunt Auntie Uncle Sir Madam Miss Mr Mrs Ms Dr Mister God Teacher Baby
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July
August September October November December Christmas Halloween Easter English The A An Once One
Then Oh OK Okay Yes No Hi Hello Bye Goodbye Please Thank Thanks Wow Yay Hooray Sorry Let What Why
Where When Who How Dear
""")
TITLES = _table("Mr Mrs Ms Dr Mister Miss Aunt Uncle Sir")
# irregular form -> base (verbs, plurals, comparatives): the forms no suffix rule reaches
_IRREGULAR_SRC = """
go:went,gone,goes do:did,done,does be:was,were,been,is,am,are have:had,has see:saw,seen run:ran
eat:ate,eaten come:came find:found give:gave,given take:took,taken make:made say:said tell:told
know:knew,known think:thought bring:brought buy:bought catch:caught fly:flew,flown fall:fell,fallen
feel:felt get:got,gotten hold:held keep:kept leave:left lose:lost meet:met sit:sat sleep:slept
sing:sang,sung swim:swam,swum drink:drank,drunk draw:drew,drawn grow:grew,grown throw:threw,thrown
blow:blew,blown break:broke,broken choose:chose,chosen wake:woke,woken write:wrote,written
ride:rode,ridden hide:hid,hidden bite:bit,bitten build:built send:sent spend:spent stand:stood
understand:understood win:won teach:taught fight:fought begin:began,begun hear:heard lead:led
feed:fed dig:dug hang:hung shine:shone shake:shook,shaken speak:spoke,spoken steal:stole,stolen
wear:wore,worn tear:tore,torn forget:forgot,forgotten become:became light:lit slide:slid
stick:stuck sweep:swept weep:wept ring:rang,rung sink:sank,sunk spin:spun swing:swung bend:bent
lend:lent pay:paid lay:laid lie:lying die:dying tie:tying mean:meant mouse:mice foot:feet
tooth:teeth child:children man:men woman:women person:people goose:geese leaf:leaves wolf:wolves
knife:knives life:lives loaf:loaves shelf:shelves half:halves good:better,best bad:worse,worst
"""
IRREGULAR: dict[str, str] = {
    form: base
    for entry in _IRREGULAR_SRC.split()
    for base, forms in [entry.split(":")]
    for form in forms.split(",")
}

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_LETTERS = re.compile(r"[^\W\d_]+")
_NAME = re.compile(r"[A-Z][a-z]+")
_NAME_RUN = re.compile(r"(?<![^\W\d_])[A-Z][a-z]+(?![^\W\d_])")  # a run of letters that is _NAME
_OPEN_QUOTES = "\"“'‘"
_CLOSE = "\"”'’) \t"
_SPEECH = re.compile(r'"[^"\n]*?[^\W\d_][^"\n]*?"|“[^”]*?[^\W\d_][^”]*?”')
_MORAL = re.compile(
    r"\bmoral\b|\blearn(?:ed|t|s)?\s+that\b|\b(?:taught|teach(?:es)?)\s+\w+\s+that\b"
    r"|\b(?:learn\w*|taught|teach\w*)\b[^.!?\n]{0,40}\blessons?\b",
    re.IGNORECASE,
)


def _fail(message: str) -> NoReturn:
    raise GenerationError(message)


def _clean_word(w: Any, i: int) -> str:
    if not isinstance(w, str):
        _fail(f"brief word {i + 1} must be text, got {type(w).__name__}")
    word = w.strip().lower()
    if not word:
        _fail(f"brief word {i + 1} is empty")
    if not _LETTERS.fullmatch(word):
        _fail(f"brief word {w!r} must be one word of letters only")
    if len(word) > MAX_WORD_LEN:
        _fail(f"brief word {w!r} is longer than {MAX_WORD_LEN} letters")
    return word


def _seq(value: Any, what: str) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    _fail(f"brief {what} must be a list of strings, got {type(value).__name__}")


@dataclass(frozen=True)
class Brief:
    """What a story must contain. Validated and normalised on construction: words are
    lower-cased and de-duplicated (order kept), features lower-cased; `GenerationError`
    with one line names anything wrong."""

    words: tuple[str, ...] = ()
    name: str | None = None
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        words = [_clean_word(w, i) for i, w in enumerate(_seq(self.words, "words"))]
        words = list(dict.fromkeys(words))
        if len(words) > MAX_WORDS:
            _fail(f"a brief holds at most {MAX_WORDS} words, got {len(words)}")
        name = self.name
        if name is not None:
            if not isinstance(name, str):
                _fail(f"brief name must be text, got {type(name).__name__}")
            name = name.strip() or None
        if name is not None and not (
            len(name) <= MAX_WORD_LEN
            and name[0].isupper()
            and _LETTERS.fullmatch(name)
            and (len(name) == 1 or name[1:].islower())
        ):
            _fail(f"brief name {self.name!r} must be one capitalised word, like 'Lily'")
        features = []
        for f in _seq(self.features, "features"):
            key = f.strip().lower() if isinstance(f, str) else None
            if key not in FEATURES:
                _fail(f"unknown brief feature {f!r}; known: {', '.join(FEATURES)}")
            features.append(key)
        object.__setattr__(self, "words", tuple(words))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "features", tuple(dict.fromkeys(features)))

    @property
    def empty(self) -> bool:
        return not (self.words or self.name or self.features)

    def to_dict(self) -> dict[str, Any]:
        """The JSON row: {"words": [...], "name": "..." or null, "features": [...]}."""
        return {"words": list(self.words), "name": self.name, "features": list(self.features)}

    @classmethod
    def from_dict(cls, data: Any) -> Brief:
        """A brief from its JSON row; missing keys mean none, unknown keys are an error."""
        if not isinstance(data, dict):
            _fail(f"a brief must be an object with words, name, features; got {data!r:.60}")
        unknown = sorted(set(data) - {"words", "name", "features"})
        if unknown:
            _fail(f"unknown brief key {unknown[0]!r}; a brief has words, name, features")
        return cls(
            words=_seq(data.get("words") or (), "words"),
            name=data.get("name"),
            features=_seq(data.get("features") or (), "features"),
        )


# ---- the prompt format ----------------------------------------------------------------


def format_brief(brief: Brief) -> str:
    """The brief block that precedes a story; "" for an empty brief."""
    if brief.empty:
        return ""
    lines = []
    if brief.words:
        lines.append("Words: " + ", ".join(brief.words))
    if brief.name:
        lines.append("Name: " + brief.name)
    if brief.features:
        lines.append("Features: " + ", ".join(brief.features))
    return "\n".join([*lines, STORY_LABEL]) + "\n"


def split_brief(text: str) -> tuple[str, str]:
    """(brief block, story) of a text that may open with a brief block; ("", text) when it
    does not open with a complete one (labels in order, each at most once, then "Story:")."""
    pos, seen = 0, 0
    while True:
        end = text.find("\n", pos)
        if end < 0:
            return "", text
        line = text[pos:end]
        if line == STORY_LABEL and seen:
            return text[: end + 1], text[end + 1 :]
        label = line.split(": ", 1)[0] if ": " in line else None
        if label not in LABELS[seen:]:
            return "", text
        seen = LABELS.index(label) + 1
        pos = end + 1


def parse_brief(block: str) -> Brief:
    """The `Brief` written in a block made by `format_brief` (validated)."""
    head, story = split_brief(block)
    if not head or story:
        _fail("not a brief block: expected lines 'Words: ...', 'Name: ...', 'Features: ...', "
              "then 'Story:'")  # fmt: skip
    fields = dict(line.split(": ", 1) for line in head.splitlines()[:-1])
    split = lambda s: tuple(p.strip() for p in s.split(","))  # noqa: E731
    return Brief(
        words=split(fields["Words"]) if "Words" in fields else (),
        name=fields.get("Name"),
        features=split(fields["Features"]) if "Features" in fields else (),
    )


# ---- reading stories ------------------------------------------------------------------


def _sentence_initial(text: str, start: int) -> bool:
    """Whether the word at `start` opens a sentence (or quoted speech)."""
    if start and text[start - 1] in _OPEN_QUOTES:
        return True
    j = start
    while j and text[j - 1] in _CLOSE:
        j -= 1
    if not j or text[j - 1] in "\n.!?:":
        if j and text[j - 1] == ".":
            before = _WORD.findall(text[max(0, j - 12) : j - 1])
            return not (before and before[-1] in TITLES)
        return True
    return False


def _name_counts(story: str) -> Counter:
    """Capitalised words seen at least once where no sentence starts -> occurrences."""
    counts: Counter = Counter()
    mid = set()
    for m in _NAME_RUN.finditer(story):
        w = m.group()
        if w not in NON_NAMES and len(w) <= MAX_WORD_LEN:
            counts[w] += 1
            if not _sentence_initial(story, m.start()):
                mid.add(w)
    return Counter({w: c for w, c in counts.items() if w in mid})


def main_name(story: str, min_count: int = 2, *, counts: Counter | None = None) -> str | None:
    """The main character's name: the most frequent name-like word (first seen wins a tie),
    if it occurs at least `min_count` times (a main character is named more than once).
    `counts`: the story's `_name_counts`, when the caller has them."""
    counts = _name_counts(story) if counts is None else counts
    best = max(counts, key=counts.__getitem__) if counts else None  # first seen wins a tie
    return best if best and counts[best] >= min_count else None


def _plain(token: str) -> str | None:
    """A word token as a content word: possessive 's dropped, other contractions skipped."""
    for apostrophe in "'’":
        if apostrophe in token:
            base, _, tail = token.partition(apostrophe)
            if tail != "s" or base in STOP:
                return None
            token = base
    return token


def content_words(story: str, *, counts: Counter | None = None) -> list[str]:
    """The story's candidate brief words, in order of first occurrence (see module doc)."""
    names = {w.lower() for w in (_name_counts(story) if counts is None else counts)}
    out: dict[str, None] = {}
    for token in dict.fromkeys(_WORD.findall(story)):  # each token once, in order
        if not token[0].islower():
            continue
        w = _plain(token)
        if w and 3 <= len(w) <= MAX_WORD_LEN and w not in STOP and w not in names:
            out[w] = None
    return list(out)


def has_dialogue(story: str) -> bool:
    return _SPEECH.search(story) is not None


def has_moral(story: str) -> bool:
    return _MORAL.search(story) is not None


_DETECT = {"dialogue": has_dialogue, "moral": has_moral}


def features_of(story: str) -> tuple[str, ...]:
    return tuple(f for f in FEATURES if _DETECT[f](story))


def brief_of(story: str, rng: random.Random, n_words: int = 3) -> Brief:
    """A brief `story` satisfies: `n_words` of its content words (fewer if it has fewer),
    its main character's name, its detectable features."""
    if not 0 <= n_words <= MAX_WORDS:
        _fail(f"n_words must be between 0 and {MAX_WORDS}, got {n_words}")
    counts = _name_counts(story)  # (the slow part: once for the words and the name)
    words = content_words(story, counts=counts)
    picked = rng.sample(words, min(n_words, len(words)))
    name = main_name(story, counts=counts)
    return Brief(words=tuple(picked), name=name, features=features_of(story))


# ---- checking stories -----------------------------------------------------------------


def _forms(word: str) -> set[str]:
    """`word` and the base forms it may be an inflection of (see module doc)."""
    w = word.lower()
    out = {w}
    if w in IRREGULAR:
        out.add(IRREGULAR[w])
    for suffix in ("ies", "ied", "ier", "iest"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 2:
            out.add(w[: -len(suffix)] + "y")
    for suffix in ("ing", "ed", "er", "est", "es", "s"):
        stem = w[: -len(suffix)]
        if not w.endswith(suffix) or len(stem) < 3 or (suffix == "s" and w.endswith("ss")):
            continue
        out.add(stem)
        if suffix not in ("es", "s"):
            out.add(stem + "e")
            if stem[-1] == stem[-2] and stem[-1] not in "aeiou":
                out.add(stem[:-1])
    return out


def story_forms(story: str) -> set[str]:
    """Every base form of every word of `story` (for checking many briefs on one story)."""
    out: set[str] = set()
    for token in set(_LETTERS.findall(story.lower())):
        out |= _forms(token)
    return out


def uses_word(story: str | set[str], word: str) -> bool:
    """Whether the story (or its `story_forms`) uses `word` in some inflected form."""
    forms = story_forms(story) if isinstance(story, str) else story
    return not _forms(word).isdisjoint(forms)


def satisfies(story: str, brief: Brief) -> dict[str, Any]:
    """What of `brief` the story delivers: per word, the name, per feature, and `all`."""
    forms = story_forms(story)
    words = {w: uses_word(forms, w) for w in brief.words}
    name = brief.name and re.search(rf"\b{re.escape(brief.name)}\b", story) is not None
    features = {f: _DETECT[f](story) for f in brief.features}
    result = {"words": words, "all_words": all(words.values()), "name": name,
              "features": features}  # fmt: skip
    result["all"] = result["all_words"] and name is not False and all(features.values())
    return result


# ---- training text --------------------------------------------------------------------


def story_rng(story: str, seed: int, purpose: str = "") -> random.Random:
    """A generator fixed by the story's text and a seed: the same story gets the same brief
    whatever order or worker it is processed in (str seeds hash with sha512, not hash()).
    A `purpose` gives another, independent generator for the same story."""
    return random.Random(f"{purpose}:{seed}:{story}" if purpose else f"{seed}:{story}")


def with_brief(story: str, rng: random.Random, fraction: float, n_words: int = 3) -> str:
    """The training text of one story: with probability `fraction` its brief block, then the
    story; else the story alone. Half of the briefs are whole (`n_words` words, the name,
    every feature); the other half keep each part with probability 1/2, so a model learns
    to follow any subset (a word alone, a name alone, ...)."""
    if isinstance(fraction, bool) or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"data.briefs must be a fraction between 0 and 1, got {fraction!r}")
    if rng.random() >= fraction:
        return story
    brief = brief_of(story, rng, n_words)
    if rng.random() < 0.5:
        keep = lambda parts: tuple(p for p in parts if rng.random() < 0.5)  # noqa: E731
        subset = Brief(keep(brief.words), brief.name if rng.random() < 0.5 else None,
                       keep(brief.features))  # fmt: skip
        brief = subset if not subset.empty else brief
    return format_brief(brief) + story.lstrip() if not brief.empty else story


# ---- briefs from chat messages --------------------------------------------------------

REQUEST_WORDS = _table("""
story stories tale tales write tell make create give please named called name want wants
short long kids kid children bedtime word words use uses using include includes including
contain contains containing featuring feature features character characters
""")
FEATURE_WORDS = {
    "dialogue": _table("dialogue dialog conversation talking talk talks speech speaking quotes"),
    "moral": _table("moral morals lesson lessons"),
}


def parse_message(text: str) -> tuple[Brief, tuple[str, ...]]:
    """(brief, dropped words) for a chat message: its content words in order (the first
    `MAX_WORDS`; the rest are dropped), a name (the word after "named"/"called", or a word
    capitalised where no sentence starts), and features from feature words ("dialogue",
    "talking", "a moral", "lesson")."""
    name = None
    m = re.search(r"\b(?:named|called)\s+([^\W\d_]+)", text, re.IGNORECASE)
    if m and len(m.group(1)) <= MAX_WORD_LEN:
        name = m.group(1).capitalize()
    if name is None or name in NON_NAMES:
        name = main_name(text, min_count=1)
    features, words = [], []
    for token in _WORD.findall(text):
        low = token.lower()
        feature = next((f for f, ws in FEATURE_WORDS.items() if low in ws), None)
        if feature:
            features.append(feature)
            continue
        w = _plain(low)
        if (w and 3 <= len(w) <= MAX_WORD_LEN and w not in STOP and w not in REQUEST_WORDS
                and (name is None or w != name.lower()) and token not in NON_NAMES):  # fmt: skip
            words.append(w)
    words = list(dict.fromkeys(words))
    return Brief(tuple(words[:MAX_WORDS]), name, tuple(features)), tuple(words[MAX_WORDS:])


def brief_from_message(text: str) -> Brief:
    """The brief of a chat message (see `parse_message`; words past `MAX_WORDS` dropped)."""
    return parse_message(text)[0]
