"""The byte-level kinds: `gpt2` (GPT-2's BPE through tiktoken) and `bytelevel-bpe` (trained with
Hugging Face tokenizers), and what every stage does with them.

Judged from outside: GPT-2's ids against tiktoken's own `get_encoding("gpt2")` (run offline
from a tiktoken cache this file builds out of encoder.json, hash-checked by tiktoken) and
against transformers' `GPT2TokenizerFast` built from the same vocabulary. Every kind
round-trips a corpus of hostile strings exactly. Shards are uint32 for GPT-2's vocabulary
with one <|endoftext|> between stories; bits per byte agree between in-run validation and
`slm-train eval`; pieces are shown readably. Cases that need GPT-2's vocabulary read
../shared/data/gpt2/encoder.json (or $SLM_GPT2_ENCODER) and skip when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, _synthetic_stories
from typer.testing import CliRunner

from slm_tui.cli.train import app
from slm_tui.errors import TokenizerError
from slm_tui.shards import corpus_source, load_shard, prepare_shards
from slm_tui.tokenizers import ENTRY_POINT_GROUP, load_tokenizer, train_tokenizer
from slm_tui.tokenizers.bytemap import derive_merges, merges_text, readable
from slm_tui.tokenizers.gpt2 import ENCODER_SHA256, GPT2Tokenizer

VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_URLS = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"

# Strings a tokenizer has to survive: every one must come back exactly.
HOSTILE = [
    "",
    " ",
    "Once upon a time",
    "emoji 😀🎉 👩‍👩‍👧‍👦 👍🏽 flags 🇫🇷🇯🇵 keycap 1️⃣",
    "CJK 漢字かなカナ 한국어 中文，标点。",
    "RTL שלום مرحبا \u200f\u200e mixed",
    "combining e\u0301 a\u0308 Z\u0335\u0321\u0358 ﬁ ligature",
    "C0 controls \x00\x01\x02\x07\x08\x0b\x0c\x0e\x1b\x1f and DEL \x7f",
    "C1 controls \x80\x85\x9f and NBSP\xa0soft\xadhyphen",
    "lone\rreturn\r\rand\r\nCRLF\n\r",
    "NUL in the middle\x00\x00 and at the end\x00",
    " " * 3000 + "x" + " " * 3000,
    "\t" * 500 + "\n" * 500 + "\r\n" * 200 + " \t \n" * 100,
    "\n\n\n\n",
    "invalid-looking: \\x00 \\u0000 <0xFF> <0x0A> %00 &#0; \\n",
    "mojibake: â€™ Ã© Ã¼ ï»¿ \ufffd\ufffd",
    "GPT-2's own spellings: Ġ Ċ âĢĻ ĠĠ ĉ",
    "sentencepiece's space ▁ and ▁▁ here▁",
    "special names as text: <|endoftext|> <s> </s> <pad> <unk> <bos> <eos> <mask>",
    "BOM \ufeff zero-width \u200b\u200c\u200d and line/para separators \u2028\u2029",
    "private use \ue000\U000f0000 and the last code point \U0010ffff",
    "they'll we've I'm it's O'Neil's 'quoted' ''double''",
    "digits 1234567890123456789 and 3.14159 and 1e-9",
    "a" * 5000,
    "supercalifragilisticexpialidocious-antidisestablishmentarianism" * 40,
]


def encoder_path() -> Path | None:
    env = os.environ.get("SLM_GPT2_ENCODER")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "gpt2" / "encoder.json"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def encoder() -> Path:
    path = encoder_path()
    if path is None:
        pytest.skip("GPT-2's encoder.json not found (../shared/data/gpt2)")
    return path


@pytest.fixture(scope="session")
def gpt2(encoder, tmp_path_factory) -> GPT2Tokenizer:
    out = tmp_path_factory.mktemp("gpt2") / "gpt2"
    return train_tokenizer("gpt2", [], 50257, out, vocab_file=encoder)


@pytest.fixture(scope="session")
def tiktoken_cache(gpt2, encoder, tmp_path_factory) -> Path:
    """tiktoken's download cache holding GPT-2's two files, as tiktoken names them: its
    encoder.json and the vocab.bpe derived from it (checked against the hash tiktoken
    checks), so `tiktoken.get_encoding("gpt2")` runs exactly as it does after a download."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    bpe = merges_text(derive_merges(gpt2.ranks)).encode()
    assert hashlib.sha256(bpe).hexdigest() == VOCAB_BPE_SHA256  # else tiktoken would download
    for name, data in (("encoder.json", encoder.read_bytes()), ("vocab.bpe", bpe)):
        (cache / hashlib.sha1((GPT2_URLS + name).encode()).hexdigest()).write_bytes(data)
    return cache


@pytest.fixture(scope="module")
def bytelevel(tmp_path_factory):
    out = tmp_path_factory.mktemp("bytelevel") / "bl"
    return train_tokenizer("bytelevel-bpe", _synthetic_stories(400), 360, out)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---- every kind: the hostile corpus round-trips exactly -------------------------------------
@pytest.fixture(
    scope="module",
    params=["sentencepiece-bpe", "sentencepiece-unigram", "byte", "bytelevel-bpe", "gpt2"],
)
def any_kind(request, tmp_path_factory):
    kind, vocab_file = request.param, encoder_path()
    if kind == "gpt2" and vocab_file is None:
        pytest.skip("GPT-2's encoder.json not found (../shared/data/gpt2)")
    out = tmp_path_factory.mktemp(kind) / "tok"
    options = {"vocab_file": vocab_file} if kind == "gpt2" else {}
    if kind.startswith("sentencepiece"):
        options["num_threads"] = 1
    return train_tokenizer(kind, _synthetic_stories(400), 320, out, **options)


def test_every_kind_round_trips_the_hostile_corpus(any_kind) -> None:
    tok = load_tokenizer(any_kind.path)  # as a checkpoint would load it
    for text in HOSTILE:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text, (tok.kind, text[:40])
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert tok.encode_batch(HOSTILE) == [tok.encode(t) for t in HOSTILE]
    # Special names in text are text: never a special id.
    specials = {tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id}
    assert not specials & set(tok.encode(HOSTILE[18]))


# ---- gpt2: GPT-2's ids, from tiktoken and from encoder.json alike ---------------------------
def test_gpt2_ids_are_gpt2s(gpt2) -> None:
    assert gpt2.encode("Once upon a time") == [7454, 2402, 257, 640]
    assert gpt2.vocab_size == 50257
    assert gpt2.bos_id == gpt2.eos_id == gpt2.pad_id == gpt2.unk_id == 50256
    assert gpt2.token_text(50256) == "<|endoftext|>" and gpt2.token_bytes(50256) == b""
    # The folder is self-contained and holds OpenAI's encoder.json byte for byte.
    assert hashlib.sha256((gpt2.path / "encoder.json").read_bytes()).hexdigest() == ENCODER_SHA256
    assert sorted(p.name for p in gpt2.path.iterdir()) == ["encoder.json", "tokenizer.json"]


def test_tiktoken_get_encoding_gives_the_same_tokenizer(
    gpt2, tiktoken_cache, tmp_path, monkeypatch
):
    """The path a machine with a network takes: `tiktoken.get_encoding("gpt2")` (here from
    its cache), no vocab file; the same folder, fingerprint and ids as --vocab-file gives."""
    import tiktoken
    import tiktoken.registry

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # nothing cached in this process
    tok = train_tokenizer("gpt2", [], 50257, tmp_path / "from-tiktoken")
    assert tok.options["source"] == "tiktoken"
    assert tok.fingerprint == gpt2.fingerprint
    reference = tiktoken.get_encoding("gpt2")
    for text in HOSTILE:
        assert tok.encode(text) == reference.encode_ordinary(text), text[:40]
        assert gpt2.encode(text) == reference.encode_ordinary(text), text[:40]


def test_gpt2_ids_match_transformers(gpt2, tmp_path) -> None:
    """transformers' own GPT-2 tokenizer (GPT2TokenizerFast) built from the same vocabulary
    and merges (vocab.json is encoder.json; merges.txt derived from it, OpenAI's vocab.bpe)."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "gpt2-hf"
    folder.mkdir()
    (folder / "vocab.json").write_bytes((gpt2.path / "encoder.json").read_bytes())
    (folder / "merges.txt").write_text(merges_text(derive_merges(gpt2.ranks)))
    theirs = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    assert theirs("Once upon a time")["input_ids"] == [7454, 2402, 257, 640]
    stories = _synthetic_stories(50, seed=5)
    for text in [*HOSTILE, *stories]:
        ids = theirs(text, split_special_tokens=True)["input_ids"]  # specials' names as text
        assert ids == gpt2.encode(text), text[:40]
        assert theirs.decode(ids) == text


def test_gpt2_vocab_file_refusals(gpt2, encoder, tmp_path) -> None:
    vocab = json.loads(encoder.read_text())
    cases = {
        "missing.json": (None, "not found"),
        "notjson.json": ("{not json", "not a JSON file"),
        "short.json": (json.dumps(dict(list(vocab.items())[:100])), "100 entries"),
    }
    other = dict(vocab)
    a, b = "Ġthe", "Ġand"
    other[a], other[b] = vocab[b], vocab[a]  # two ids swapped: a byte-level vocab, not GPT-2's
    cases["swapped.json"] = (json.dumps(other), "not GPT-2's")
    for name, (text, needle) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(TokenizerError, match=needle):
            train_tokenizer("gpt2", [], 50257, tmp_path / f"out-{name}", vocab_file=tmp_path / name)
        assert not (tmp_path / f"out-{name}").exists()
    # A tampered folder is refused by the fingerprint, like any other kind's.
    copy = tmp_path / "copy"
    gpt2.save(copy)
    (copy / "encoder.json").write_text(json.dumps(other))
    with pytest.raises(TokenizerError, match="fingerprint"):
        load_tokenizer(copy)


def test_cli_writes_gpt2_offline_and_measures_it(encoder, tmp_path) -> None:
    out = tmp_path / "tok"
    res = invoke("tokenizer", "--kind", "gpt2", "--vocab-file", encoder, "--output", out)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out.resolve())
    assert "pretrained" in res.stderr and load_tokenizer(out).kind == "gpt2"
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n<|endoftext|>\n".join(_synthetic_stories(400)) + "\n")
    res = invoke("tokenizer", "--kind", "gpt2", "--vocab-file", encoder, "--data-files", corpus,
                 "--output", tmp_path / "measured")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "bytes / token" in res.stderr
    res = invoke("tokenizer", "--kind", "sentencepiece-bpe", "--vocab-file", encoder,
                 "--data-files", corpus, "--output", tmp_path / "spm")  # fmt: skip
    assert res.exit_code == 2 and "--vocab-file is for pretrained kinds" in res.stderr


# ---- bytelevel-bpe --------------------------------------------------------------------------
def test_bytelevel_learns_merges_deterministically(bytelevel, tmp_path) -> None:
    stories = _synthetic_stories(400)
    again = train_tokenizer("bytelevel-bpe", stories, 360, tmp_path / "again")
    assert again.fingerprint == bytelevel.fingerprint  # same corpus, same shards reused
    assert bytelevel.vocab_size == 360
    assert (bytelevel.pad_id, bytelevel.unk_id, bytelevel.bos_id, bytelevel.eos_id) == (0, 1, 2, 3)
    text = stories[0]
    assert len(bytelevel.encode(text)) < len(text.encode()) / 2.5  # it learned words
    assert "▁upon" in [bytelevel.token_text(i) for i in bytelevel.encode("Once upon a time")]
    assert sorted(p.name for p in bytelevel.path.iterdir()) == [
        "merges.txt", "tokenizer.json", "vocab.json"]  # fmt: skip


def test_bytelevel_refusals(tmp_path) -> None:
    stories = _synthetic_stories(50)
    with pytest.raises(TokenizerError, match=r"too small.*260"):
        train_tokenizer("bytelevel-bpe", stories, 100, tmp_path / "small")
    with pytest.raises(TokenizerError, match="too large for this corpus"):
        train_tokenizer("bytelevel-bpe", stories, 60000, tmp_path / "large")
    with pytest.raises(TokenizerError, match="empty"):
        train_tokenizer("bytelevel-bpe", ["", ""], 300, tmp_path / "empty")
    tok = train_tokenizer("bytelevel-bpe", stories, 300, tmp_path / "ok")
    vocab = json.loads((tok.path / "vocab.json").read_text())
    del vocab[next(p for p, i in vocab.items() if i == 200)]
    for name, text in (("vocab.json", json.dumps(vocab)), ("merges.txt", "#version: 0.2\nab\n")):
        broken = tmp_path / f"broken-{name}"
        tok.save(broken)
        (broken / name).write_text(text)
        meta = json.loads((broken / "tokenizer.json").read_text())
        from slm_tui.tokenizers.base import fingerprint_files

        meta["fingerprint"] = fingerprint_files("bytelevel-bpe", broken, meta["files"])
        (broken / "tokenizer.json").write_text(json.dumps(meta))  # fingerprint made to match
        with pytest.raises(TokenizerError):
            load_tokenizer(broken)


# ---- shown readably -------------------------------------------------------------------------
def test_pieces_are_shown_readably(bytelevel) -> None:
    assert readable(b" upon") == "▁upon"
    assert readable(b"\n\n") == "\\n\\n" and readable(b"\t\r") == "\\t\\r"
    assert readable("😀".encode()[:2]) == "<0xF0><0x9F>"
    assert readable("é".encode()) == "é" and readable(b"\x00\x7f") == "<0x00><0x7F>"
    from slm_tui.tui.widgets.inspector import inspect_content

    shown = inspect_content(bytelevel, "Once upon a time 😀\n").plain
    assert "▁upon" in shown and "Ġ" not in shown and "<0xF0>" in shown


def test_gpt2_pieces_in_the_inspector(gpt2) -> None:
    from slm_tui.tui.widgets.inspector import inspect_content

    shown = inspect_content(gpt2, "Once upon a time").plain
    assert shown.startswith("4 tokens") and "▁upon2402" in shown.replace(" ", "")


# ---- shards and evaluation ------------------------------------------------------------------
def test_gpt2_shards_have_one_separator_between_stories(gpt2, tmp_path) -> None:
    """50,257 ids fit uint16 (as the seed's memmaps); <|endoftext|> once between stories."""
    stories = _synthetic_stories(400)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n<|endoftext|>\n".join(stories) + "\n")
    shards = prepare_shards(corpus_source(None, [str(corpus)]), gpt2, tmp_path / "shards")
    train = load_shard(tmp_path / "shards" / "train")
    assert train.meta["dtype"] == "uint16" and train.meta["tokenizer_kind"] == "gpt2"
    tokens = np.asarray(train.tokens)
    eot = gpt2.eos_id
    assert tokens[0] == eot and tokens[-1] == eot
    assert int((tokens == eot).sum()) == shards.train.num_stories + 1  # one between two stories
    pieces = np.split(tokens, np.flatnonzero(tokens == eot))[1:-1]
    assert all(gpt2.decode(p[1:].tolist()) in stories for p in pieces)


def test_a_bytelevel_vocabulary_past_65536_ids_gets_uint32_shards(tmp_path) -> None:
    """A real byte-level BPE (tokenizers runs it) whose 65,796 ids need 32 bits: every pair of
    bytes is a piece, and the last merges (NUL and a byte) have ids above 65,535."""
    from slm_tui.tokenizers.bytelevel import SPECIALS, ByteLevelBPE
    from slm_tui.tokenizers.bytemap import BYTE_TO_CHAR

    vocab = {name: i for i, name in enumerate(SPECIALS)}
    vocab.update({c: 4 + b for b, c in enumerate(BYTE_TO_CHAR)})
    merges = [(a, b) for a in BYTE_TO_CHAR[::-1] for b in BYTE_TO_CHAR[::-1]]
    vocab.update({a + b: 260 + k for k, (a, b) in enumerate(merges)})
    tok = ByteLevelBPE(vocab, merges, {"pad": 0, "unk": 1, "bos": 2, "eos": 3})
    tok.save(tmp_path / "wide")
    tok = load_tokenizer(tmp_path / "wide")
    assert tok.vocab_size == 65_796
    stories = ["\x00\x00 story " + s for s in _synthetic_stories(60)]  # NUL NUL: id 65,795
    assert max(tok.encode(stories[0])) > 65_535 and tok.decode(tok.encode(stories[0])) == stories[0]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n<|endoftext|>\n".join(stories) + "\n")
    shards = prepare_shards(corpus_source(None, [str(corpus)]), tok, tmp_path / "shards")
    assert shards.train.tokens.dtype == np.uint32
    t = shards.train.tokens.tolist()
    assert t[0] == 2 and max(t) == 65_795 and tok.decode(t[1 : t.index(3)]) in stories


def test_eval_reads_text_as_the_shards_were_written(bytelevel, tmp_path) -> None:
    """The separator rule is the same in shards and in `slm-train eval` on text, for any
    tokenizer whose BOS is its EOS (GPT-2's convention; here a byte-level BPE set up so)."""
    from slm_tui.tokenizers.bytelevel import ByteLevelBPE
    from slm_tui.trainer.evaluation import _StoryTokens

    ids = {"pad": 0, "unk": 1, "bos": 3, "eos": 3}
    tok = ByteLevelBPE(bytelevel.vocab, bytelevel.merges, ids)
    tok.save(tmp_path / "tok")
    stories = _synthetic_stories(30)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n<|endoftext|>\n".join(stories) + "\n")
    streamed = np.concatenate(list(_StoryTokens(iter(stories), tok, None)))
    source = corpus_source(None, [str(corpus)])
    shards = prepare_shards(source, tok, tmp_path / "s", val_fraction=0.49)
    assert streamed[0] == 3 and int((streamed == 3).sum()) == 31
    both = [np.asarray(shards.train.tokens), np.asarray(shards.val.tokens)]
    assert sorted(np.concatenate(both).tolist()[1:]) == sorted([*streamed.tolist()[1:], 3])
    for shard, t in zip((shards.train, shards.val), both, strict=True):
        assert int((t == 3).sum()) == shard.num_stories + 1 and t[0] == t[-1] == 3


def test_entry_points_declare_both_kinds() -> None:
    """The kinds are registered the way a third-party package adds one (pyproject)."""
    eps = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert eps["gpt2"] == "slm_tui.tokenizers.gpt2:GPT2Tokenizer"
    assert eps["bytelevel-bpe"] == "slm_tui.tokenizers.bytelevel:ByteLevelBPE"
