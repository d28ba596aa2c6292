"""Story briefs (slm_tui/briefs.py): derived from stories, checked against stories, carried in
a prompt every tokenizer kind splits cleanly, parsed from chat messages. Stories here are
written for these tests."""

from __future__ import annotations

import io
import json
import random

import pytest

from slm_tui.briefs import (
    FEATURES,
    MAX_WORDS,
    STOP,
    Brief,
    brief_from_message,
    brief_of,
    content_words,
    features_of,
    format_brief,
    main_name,
    parse_brief,
    parse_message,
    satisfies,
    split_brief,
    story_rng,
    uses_word,
    with_brief,
)
from slm_tui.errors import ConfigError, GenerationError

PUPPY = """Once upon a time, there was a small puppy named Pip. Pip loved to dig holes in the garden.
One day, Pip found a shiny key under the roses. "Look, Mom!" Pip barked. His mom wagged her tail.
Pip carried the key to the old shed. The door opened, and inside was a box of bones.
Pip learned that patience brings good things. He shared the bones with his sister Dot."""

KITE = """Sara had a red kite. Every morning, Sara ran to the hill with her grandpa.
The wind was strong, and the kite flew higher than the birds. Suddenly, the string broke!
The kite drifted over the river and landed in a tall oak. Grandpa climbed a ladder and
brought it back. Sara hugged him. That night she dreamed of flying."""

ROBOT = """Max the robot lived in a toy shop with Mr. Brown. Every night, Max swept the floor.
"Why do you sweep?" asked a doll. "Because Mr. Brown is tired," said Max.
The doll smiled and helped him. Soon all the toys were sweeping, and Mr. Brown woke to a
shining shop. He laughed and gave Max a new battery."""

NO_NAME = """The little fox was hungry. It sniffed the snowy forest for berries.
The fox found a bush full of berries and ate until its belly was round. Then it curled up
under a pine tree and slept while the snow fell softly."""

STORIES = (PUPPY, KITE, ROBOT, NO_NAME)


# ---- deriving briefs ------------------------------------------------------------------


def test_brief_of_takes_content_words_the_main_name_and_detected_features():
    b = brief_of(PUPPY, random.Random(0), n_words=4)
    assert len(b.words) == 4
    assert all(w in content_words(PUPPY) for w in b.words)
    assert all(w.islower() and w not in STOP and len(w) >= 3 for w in b.words)
    assert b.name == "Pip"
    assert b.features == ("dialogue", "moral")
    assert brief_of(KITE, random.Random(0)).features == ()
    assert brief_of(ROBOT, random.Random(0)).features == ("dialogue",)


def test_content_words_skip_names_stop_words_and_contractions():
    words = content_words(PUPPY + " It didn't matter. Pip's bone was Dot's now.")
    assert {"puppy", "dig", "holes", "garden", "shiny", "key", "bone"} <= set(words)
    assert not {"pip", "dot", "the", "was", "one", "day", "didn", "named"} & set(words)
    assert "mom" in words  # a common content word, not a name ("Look, Mom!" is not one)
    assert words.index("puppy") < words.index("garden")  # order of first occurrence


def test_brief_words_are_fixed_by_the_seed_and_vary_with_it():
    picks = {brief_of(PUPPY, random.Random(s)).words for s in range(20)}
    assert brief_of(PUPPY, random.Random(7)) == brief_of(PUPPY, random.Random(7))
    assert len(picks) > 10


def test_main_name_needs_a_mid_sentence_capital_and_two_mentions():
    assert main_name(KITE) == "Sara"  # sentence-initial, but also "Sara ran" after a comma
    assert main_name(ROBOT) == "Max"  # 4 mentions beat "Brown" (3), after "Mr." too
    assert main_name(NO_NAME) is None  # "The", "Then" only open sentences
    assert main_name("Mom went out. Later Mom came back and Dad smiled at Mom.") is None
    assert main_name('"Hi," Ben said. "Hi," said Ann. Ben waved.') == "Ben"
    assert main_name("One day Zed came. He left.") is None  # named once: not the main one
    assert main_name("Mr. Brown had a cat. The cat loved Mr. Brown.") == "Brown"


def test_dialogue_and_moral_are_detected_from_text_only():
    assert features_of('He said, "Let us go."') == ("dialogue",)
    assert features_of("She said “good night” and slept.") == ("dialogue",)
    assert features_of("It's Tom's hat. 'Tis the dog's bone.") == ()  # apostrophes only
    assert features_of('The sign said "42".') == ()  # no words quoted
    for moral in ("The moral of the story is to share.", "Tom learned that lying is wrong.",
                  "She learnt a very important lesson that day.",
                  "Mom taught him that kindness matters."):  # fmt: skip
        assert features_of(moral) == ("moral",), moral
    for no in ("Tim went to his piano lesson.", "She learned to swim.", "He learned it."):
        assert "moral" not in features_of(no), no


def test_every_story_satisfies_its_own_brief():
    for story in STORIES:
        for seed in range(10):
            b = brief_of(story, random.Random(seed), n_words=MAX_WORDS)
            result = satisfies(story, b)
            assert result["all"], (story[:30], b, result)


def test_real_stories_satisfy_their_briefs(tinystories_dir):
    text = (tinystories_dir / "dev.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:300]
    rng = random.Random(0)
    briefs = [brief_of(s, rng) for s in stories]
    assert all(satisfies(s, b)["all"] for s, b in zip(stories, briefs, strict=True))
    assert sum(len(b.words) == 3 for b in briefs) == len(stories)
    assert sum(b.name is not None for b in briefs) > len(stories) // 2


# ---- checking stories -----------------------------------------------------------------

INFLECTED = [
    ("dog", "Two dogs barked."), ("play", "They played."), ("play", "She is playing."),
    ("play", "He plays."), ("played", "Let us play."), ("happy", "She was happier."),
    ("happy", "the happiest day"), ("run", "He ran home."), ("run", "running fast"),
    ("ran", "Run!"), ("big", "a bigger box"), ("cry", "The baby cried."),
    ("make", "making a cake"), ("go", "We went."), ("mouse", "Three mice."),
    ("box", "two boxes"), ("find", "He found it."), ("nice", "nicer"), ("stop", "stopped"),
    ("tall", "the tallest tree"), ("leaf", "red leaves"), ("bunny", "the bunnies"),
]  # fmt: skip
NOT_INFLECTED = [
    ("cat", "He will catch it."), ("sun", "a sunny Sunday"), ("ran", "The bell rang."),
    ("hat", "that one"), ("dog", "a doghouse"), ("play", "a playful pup"),
]  # fmt: skip


@pytest.mark.parametrize(("word", "story"), INFLECTED)
def test_a_requested_word_counts_in_its_inflected_forms(word, story):
    assert uses_word(story, word)


@pytest.mark.parametrize(("word", "story"), NOT_INFLECTED)
def test_a_different_word_does_not_count(word, story):
    assert not uses_word(story, word)


def test_satisfies_reports_each_part():
    b = Brief(("key", "bones", "dragon"), "Pip", ("dialogue", "moral"))
    r = satisfies(PUPPY, b)
    assert r["words"] == {"key": True, "bones": True, "dragon": False}
    assert r["all_words"] is False and r["all"] is False
    assert r["name"] is True and r["features"] == {"dialogue": True, "moral": True}
    assert satisfies(KITE, Brief(name="Sar"))["name"] is False  # whole words only
    assert satisfies(KITE, Brief(("kite",)))["name"] is None  # not asked
    assert satisfies(KITE, Brief(("kite",), features=("dialogue",)))["all"] is False
    assert satisfies(KITE, Brief())["all"] is True


# ---- the prompt format ----------------------------------------------------------------

BRIEFS = [
    Brief(("dog", "cake", "happy"), "Max", ("dialogue",)),
    Brief(("dog",)),
    Brief(name="Lily"),
    Brief(features=("moral", "dialogue")),
    Brief(("sun", "tree"), features=("moral",)),
    Brief(("kite",), "Sara"),
]


def test_the_format_is_short_plain_text_ending_in_a_story_line():
    assert format_brief(BRIEFS[0]) == (
        "Words: dog, cake, happy\nName: Max\nFeatures: dialogue\nStory:\n"
    )
    assert format_brief(Brief(name="Lily")) == "Name: Lily\nStory:\n"
    assert format_brief(Brief()) == ""


@pytest.mark.parametrize("brief", BRIEFS, ids=lambda b: format_brief(b).replace("\n", "|"))
def test_format_and_split_round_trip(brief):
    for story in STORIES:
        block, rest = split_brief(format_brief(brief) + story)
        assert (block, rest) == (format_brief(brief), story)
        assert parse_brief(block) == brief


def test_split_leaves_text_without_a_complete_block_alone():
    for text in (PUPPY, "", "Words: dog\nOnce upon a time", "Words: dog\nStory:",
                 "Name: Max\nWords: dog\nStory:\nHi", "Story:\nHi", "Words: a\nWords: b\nStory:\n",
                 "Once upon a time.\nWords: dog\nStory:\nHi"):  # fmt: skip
        assert split_brief(text) == ("", text)
    with pytest.raises(GenerationError, match="not a brief block"):
        parse_brief(PUPPY)


def _sentencepiece_kinds(tmp_path, corpus):
    from slm_tui.tokenizers import train_tokenizer

    return [
        train_tokenizer(kind, corpus, 400, tmp_path / kind, num_threads=1)
        for kind in ("sentencepiece-bpe", "sentencepiece-unigram")
    ]


def _imported_sentencepiece(corpus, **options):
    """An SP model trained with SentencePiece's own settings (Llama-2 style: dummy prefix,
    byte fallback; or the default NFKC normalizer), held by the `sentencepiece` kind."""
    import sentencepiece as spm

    from slm_tui.tokenizers.spm_model import SentencePieceModel

    out = io.BytesIO()
    lines = [line for story in corpus for line in story.split("\n")]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out,
                                   vocab_size=400, byte_fallback=True, num_threads=1,
                                   minloglevel=2, **options)  # fmt: skip
    return SentencePieceModel(out.getvalue())


class _HFByteLevel:
    """A byte-level BPE trained with Hugging Face `tokenizers`: GPT-2's pre-tokenizer regex
    (the boundaries tiktoken's gpt2 encoding uses) and byte-level pieces."""

    def __init__(self, corpus):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=500, show_progress=False))
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text).ids

    def decode(self, ids):
        return self.tok.decode(ids)


def test_the_story_starts_on_a_token_boundary_for_every_tokenizer_kind(tmp_path):
    """The tokens of a prompt ending in the brief block are a prefix of the tokens the model
    was trained on (block + story), for tokenizers trained on briefed text (the worst case:
    they could learn pieces across the boundary if it were not one)."""
    from slm_tui.tokenizers import train_tokenizer

    rng = random.Random(0)
    corpus = [with_brief(s, rng, 1.0) for s in STORIES for _ in range(30)] + list(STORIES)
    llama_style = {"add_dummy_prefix": True, "normalization_rule_name": "identity"}
    tokenizers = {
        "byte": train_tokenizer("byte", corpus, 256, tmp_path / "byte"),
        **dict(
            zip(("spm-bpe", "spm-unigram"), _sentencepiece_kinds(tmp_path, corpus), strict=True)
        ),
        "imported, dummy prefix": _imported_sentencepiece(corpus, **llama_style),
        "imported, nfkc": _imported_sentencepiece(corpus),
        "byte-level bpe": _HFByteLevel(corpus),
    }
    for kind, tok in tokenizers.items():
        for brief in BRIEFS:
            block = format_brief(brief)
            head = tok.encode(block)
            for story in (*STORIES, " Once upon a time", "“Hi!” said Max."):
                whole = tok.encode(block + story.lstrip())
                assert whole[: len(head)] == head, (kind, block, story[:20])
            if kind != "imported, nfkc":  # NFKC drops the final newline; the rest are lossless
                assert tok.decode(head) == block, kind


# ---- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ("twist",)}, "unknown brief feature 'twist'; known: dialogue, moral"),
        ({"words": tuple("abcdefg")}, "at most 6 words, got 7"),
        ({"words": ("dog", "")}, "brief word 2 is empty"),
        ({"words": ("ice-cream",)}, "'ice-cream' must be one word of letters only"),
        ({"words": ("dog1",)}, "letters only"),
        ({"words": ("two words",)}, "letters only"),
        ({"words": ("a" * 21,)}, "longer than 20 letters"),
        ({"words": (3,)}, "brief word 1 must be text, got int"),
        ({"words": "dog, cake"}, "brief words must be a list of strings, got str"),
        ({"name": "max"}, "brief name 'max' must be one capitalised word"),
        ({"name": "Max Power"}, "one capitalised word"),
        ({"name": "MAX"}, "one capitalised word"),
        ({"name": 7}, "brief name must be text, got int"),
        ({"features": (["dialogue"],)}, "unknown brief feature"),
    ],
)
def test_a_bad_brief_is_a_one_line_error(kwargs, message):
    with pytest.raises(GenerationError, match=r"^[^\n]+$") as err:
        Brief(**kwargs)
    assert message in str(err.value)


def test_briefs_normalise_and_round_trip_through_json():
    b = Brief(["Dog", " cake ", "dog"], " Max ", ["Dialogue"])
    assert b == Brief(("dog", "cake"), "Max", ("dialogue",))
    row = json.loads(json.dumps(b.to_dict()))
    assert row == {"words": ["dog", "cake"], "name": "Max", "features": ["dialogue"]}
    assert Brief.from_dict(row) == b
    assert Brief.from_dict({"words": ["sun"]}) == Brief(("sun",))
    assert Brief.from_dict({"name": None, "words": None}).empty
    assert Brief(name="").name is None and set(FEATURES) == {"dialogue", "moral"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["dog"], "a brief must be an object with words, name, features"),
        ({"word": ["dog"]}, "unknown brief key 'word'"),
        ({"features": "dialogue"}, "brief features must be a list of strings"),
    ],
)
def test_a_bad_json_brief_is_a_one_line_error(row, message):
    with pytest.raises(GenerationError, match=message):
        Brief.from_dict(row)


# ---- training text ------------------------------------------------------------------------


def test_with_brief_prefixes_a_fraction_of_stories_deterministically():
    texts = [with_brief(s, story_rng(s + str(i), 1), 0.5) for i in range(100) for s in STORIES]
    briefed = [t for t in texts if split_brief(t)[0]]
    assert 150 < len(briefed) < 250
    again = [with_brief(s, story_rng(s + str(i), 1), 0.5) for i in range(100) for s in STORIES]
    assert again == texts
    for text in briefed:
        block, story = split_brief(text)
        assert story in STORIES and satisfies(story, parse_brief(block))["all"]
    assert all(with_brief(s, random.Random(i), 0.0) == s for i in range(20) for s in STORIES)


def test_with_brief_teaches_whole_briefs_and_every_kind_of_subset():
    briefs = [parse_brief(split_brief(with_brief(PUPPY, random.Random(i), 1.0))[0])
              for i in range(200)]  # fmt: skip
    assert all(not b.empty for b in briefs)
    full = [b for b in briefs if len(b.words) == 3 and b.name and len(b.features) == 2]
    assert 70 < len(full) < 150
    assert any(b.words and not b.name and not b.features for b in briefs)  # words alone
    assert any(b.name and not b.words for b in briefs)  # a name alone
    assert any(b.features and not b.words for b in briefs)


def test_story_rng_depends_on_the_text_and_seed_only():
    assert story_rng(KITE, 5).random() == story_rng(KITE, 5).random()
    assert story_rng(KITE, 5).random() != story_rng(KITE, 6).random()
    assert story_rng(KITE, 5).random() != story_rng(PUPPY, 5).random()


@pytest.mark.parametrize("fraction", [-0.1, 1.5, True])
def test_a_bad_fraction_is_a_config_error(fraction):
    with pytest.raises(ConfigError, match=r"data\.briefs must be a fraction between 0 and 1"):
        with_brief(KITE, random.Random(0), fraction)


# ---- chat messages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "brief"),
    [
        ("a story about a dragon named Max who finds a cake",
         Brief(("dragon", "finds", "cake"), "Max")),
        ("Tell me a story with dialogue about a cat, and give it a moral.",
         Brief(("cat",), None, ("dialogue", "moral"))),
        ("write a story about a bunny called hoppy", Brief(("bunny",), "Hoppy")),
        ("Please write about Lily and her red ball.", Brief(("red", "ball"), "Lily")),
        ("A short story where the animals are talking and learn a lesson",
         Brief(("animals", "learn"), None, ("dialogue", "moral"))),
        ("Tell me a story.", Brief()),
        ("", Brief()),
    ],
)  # fmt: skip
def test_a_chat_message_becomes_a_brief(message, brief):
    assert brief_from_message(message) == brief


def test_a_long_message_keeps_the_first_words_and_says_which_it_dropped():
    brief, dropped = parse_message(
        "A story about a dog, a cat, a frog, a duck, a goat, a horse, a sheep and a pig"
    )
    assert brief.words == ("dog", "cat", "frog", "duck", "goat", "horse")
    assert dropped == ("sheep", "pig")
