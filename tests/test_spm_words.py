"""SentencePiece BPE encoded word by word from a cache (slm_tui/tokenizers/spm_words.py):
exactly SentencePiece's own ids on hostile text and on real TinyStories, and off for every
model where words are not independent (Unigram, a dummy prefix, NFKC, whitespace removed,
whitespace as a suffix). Real SentencePiece models throughout, trained here."""

from __future__ import annotations

import io

import pytest
import sentencepiece as spm
from conftest import _synthetic_stories
from test_gpt2_kinds import HOSTILE

from slm_tui.corpus import corpus_source, iter_stories
from slm_tui.tokenizers import load_tokenizer, spm_words, train_tokenizer
from slm_tui.tokenizers.spm_words import _WORD, WordCache, words_are_independent

TEXTS = [
    *HOSTILE,
    "",
    " ",
    "   leading spaces, trailing spaces   ",
    "a\n\n\nb\n \n  c\r\nd\t\te  \n",
    "digits 1234 5 67890, x1y2z3",
    "Ünïcödé naïve café 日本語 🎈🐉 \u3000 \u00a0 \ufb01 e\u0301",
    "Once upon a time, there was a little girl named Lily.\n\nShe loved her red ball.",
]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe") / "tok"
    return train_tokenizer("sentencepiece-bpe", _synthetic_stories(400), 400, out, num_threads=1)


def test_words_partition_every_text() -> None:
    for text in TEXTS:
        assert "".join(_WORD.findall(text)) == text


PLAIN = [t for t in TEXTS if "\u2581" not in t]  # spm.py spells a literal "▁" itself


def test_cache_is_on_for_our_bpe_and_gives_the_same_ids(bpe) -> None:
    tok, ref = load_tokenizer(bpe.path), load_tokenizer(bpe.path)
    assert tok._words is not None
    ref._words = None  # SentencePiece on whole texts, as before the cache
    expected = ref.encode_batch(TEXTS)
    assert tok.encode_batch(TEXTS) == expected
    assert tok.encode_batch(TEXTS) == expected  # warm: every word from the cache
    assert [tok.encode(t) for t in TEXTS] == expected
    assert tok._words.encode(PLAIN, threads=2) == [tok._sp.encode(t) for t in PLAIN]


def test_cache_stays_bounded(bpe, monkeypatch) -> None:
    tok = load_tokenizer(bpe.path)
    monkeypatch.setattr(spm_words, "MAX_WORDS", 50)
    for text in _synthetic_stories(200, seed=9):  # ~70 words in all, ~20 in each
        assert tok.encode_batch([text]) == [tok._sp.encode(text)]
        assert len(tok._words.ids) <= 50
    assert tok.encode_batch(PLAIN) == [tok._sp.encode(t) for t in PLAIN]


def test_real_tinystories_same_ids(tinystories_dir, tmp_path) -> None:
    train = list(iter_stories(corpus_source(data_files=[str(tinystories_dir / "train.txt")])))
    tok = train_tokenizer("sentencepiece-bpe", train[:3000], 4096, tmp_path / "tok")
    assert tok._words is not None
    held = list(iter_stories(corpus_source(data_files=[str(tinystories_dir / "valid.txt")])))
    held += train[3000:5000]
    assert tok.encode_batch(held) == tok._sp.encode(held)


def _model(tmp_path, **options) -> tuple[spm.SentencePieceProcessor, bytes]:
    base = dict(
        model_type="bpe",
        vocab_size=320,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        byte_fallback=True,
        user_defined_symbols=["\n\n", "\n"],
        minloglevel=2,
    )
    model = io.BytesIO()
    lines = [line for s in _synthetic_stories(300) for line in s.split("\n") if line]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, **{**base, **options}
    )
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model.getvalue())
    return sp, model.getvalue()


@pytest.mark.parametrize(
    "options",
    [
        {},  # the settings spm.py trains with: on
        {"model_type": "unigram"},
        {"add_dummy_prefix": True},
        {"remove_extra_whitespaces": True},
        {"normalization_rule_name": "nmt_nfkc"},
        {"treat_whitespace_as_suffix": True},
        {"split_by_whitespace": False, "vocab_size": 500},  # pieces such as "on▁a"
    ],
)
def test_on_only_where_words_are_independent(options, tmp_path) -> None:
    sp, model = _model(tmp_path, **options)
    on = words_are_independent(sp, model)
    assert on == (options == {}), options
    if on:
        assert WordCache(sp).encode(PLAIN) == [sp.encode(t) for t in PLAIN]


def test_a_damaged_model_proto_turns_the_cache_off(tmp_path) -> None:
    sp, model = _model(tmp_path)
    assert not words_are_independent(sp, model[:-7] + b"\xff\xff\xff\xff\xff\xff\xff")
