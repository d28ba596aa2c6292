"""Tokenizers: lossless round trip on adversarial text, the token_bytes contract, batch
encoding, saving/loading, the plugin registry (a real package pip-installed at test time)
and every bad input: unknown kind, vocab too small/large, missing/corrupt/mixed directories."""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slm_tui.errors import TokenizerError
from slm_tui.tokenizers import (
    META_FILE,
    Tokenizer,
    available_kinds,
    load_tokenizer,
    register_tokenizer,
    train_tokenizer,
)
from slm_tui.tokenizers.byte import ByteTokenizer

_WORD_TEXT = (
    "once upon a time there was little girl named lily she loved to play outside with her "
    "big red ball one day mom said we can go park happy sun tree bird dog cat jumped ran "
    "fast slow friend together smiled because sky blue green"
)
WORDS = _WORD_TEXT.split(" ")

ADVERSARIAL = [
    "",
    "a",
    "Hello world",
    "  leading and trailing  ",
    "many     spaces   between",
    "tabs\there\t\tand\tthere",
    "windows\r\nline\r\nendings\r\n",
    "unix\nnewlines\n\n\nand blank lines\n",
    "emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷",
    "CJK 漢字かなカナ 한국어",
    "unseen: Ω ∑ ≈ ç √ ж ש ع",
    "literal sentencepiece space ▁ and ▁▁ here▁",
    "control \x00\x01\x7f chars",
    "digits 1234567890 and 3.14159",
    "\n",
    " ",
]


def make_stories(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    stories = []
    for _ in range(n):
        paras = []
        for _ in range(rng.randint(1, 3)):
            sents = [
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                for _ in range(rng.randint(1, 4))
            ]
            paras.append(" ".join(sents))
        stories.append("\n\n".join(paras))
    return stories


@pytest.fixture(scope="module")
def stories() -> list[str]:
    return make_stories(300)


@pytest.fixture(scope="module", params=["sentencepiece-bpe", "sentencepiece-unigram", "byte"])
def tok(request, stories, tmp_path_factory) -> Tokenizer:
    out = tmp_path_factory.mktemp("tok") / request.param
    return train_tokenizer(request.param, iter(stories), 400, out)


def test_round_trip_adversarial(tok: Tokenizer) -> None:
    for text in ADVERSARIAL:
        ids = tok.encode(text)
        assert tok.decode(ids) == text, (tok.kind, text)
        assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.encode("") == []


def test_token_bytes_contract(tok: Tokenizer, stories) -> None:
    for text in [*ADVERSARIAL, *stories[:20]]:
        ids = tok.encode(text)
        assert b"".join(tok.token_bytes(i) for i in ids).decode("utf-8") == tok.decode(ids)
    for special in (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id):
        assert tok.token_bytes(special) == b""
    # Specials are dropped from decode and shown by name.
    ids = [tok.bos_id, *tok.encode("Hi there"), tok.eos_id]
    assert tok.decode(ids) == "Hi there"
    assert tok.token_text(tok.bos_id) == "<bos>"
    assert tok.token_text(tok.eos_id) == "<eos>"


def test_encode_batch_equals_encode(tok: Tokenizer, stories) -> None:
    texts = [*ADVERSARIAL, *stories[:200]]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_specials_distinct_and_in_range(tok: Tokenizer) -> None:
    ids = [tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id]
    assert len(set(ids)) == 4
    assert all(0 <= i < tok.vocab_size for i in ids)
    with pytest.raises(TokenizerError, match="out of range"):
        tok.token_text(tok.vocab_size)
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decode([-1])


def test_save_load_same_behaviour_and_metadata(tok: Tokenizer, tmp_path, stories) -> None:
    loaded = load_tokenizer(tok.path)
    assert type(loaded) is type(tok)
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.fingerprint == tok.fingerprint and len(tok.fingerprint) == 64
    assert loaded.encode(stories[0]) == tok.encode(stories[0])
    meta = json.loads((tok.path / META_FILE).read_text())
    assert meta["kind"] == tok.kind and meta["vocab_size"] == tok.vocab_size
    assert {meta["bos_id"], meta["eos_id"], meta["pad_id"], meta["unk_id"]} == {
        tok.bos_id,
        tok.eos_id,
        tok.pad_id,
        tok.unk_id,
    }
    # save() copies (as checkpoints do); the copy loads and has the same fingerprint.
    copy = loaded.save(tmp_path / "copy")
    assert load_tokenizer(copy).fingerprint == tok.fingerprint
    # An ordinary output directory: the umask's permissions, not mkdtemp's 0700.
    mask = os.umask(0o022)
    try:
        again = loaded.save(tmp_path / "again")
    finally:
        os.umask(mask)
    assert again.stat().st_mode & 0o777 == 0o755


def test_spm_learns_merges_and_compresses(stories, tmp_path) -> None:
    tok = train_tokenizer("sentencepiece-bpe", stories, 400, tmp_path / "bpe")
    assert tok.vocab_size == 400
    text = stories[0]
    assert len(text.encode()) / len(tok.encode(text)) > 2.0
    assert tok.token_text(tok.encode("\n")[0]) == "\\n"


def test_different_training_gives_different_fingerprint(stories, tmp_path) -> None:
    a = train_tokenizer("sentencepiece-bpe", stories, 400, tmp_path / "a")
    b = train_tokenizer("sentencepiece-bpe", stories, 420, tmp_path / "b")
    assert a.fingerprint != b.fingerprint


# ---- bad input ----------------------------------------------------------------------------


def test_unknown_kind_lists_known(tmp_path) -> None:
    with pytest.raises(TokenizerError) as exc:
        train_tokenizer("wordpiece", ["a b"], 100, tmp_path / "x")
    msg = str(exc.value)
    assert "unknown tokenizer kind 'wordpiece'" in msg
    for kind in ("byte", "sentencepiece-bpe", "sentencepiece-unigram"):
        assert kind in msg
    assert "\n" not in msg


@pytest.mark.parametrize("kind", ["sentencepiece-bpe", "sentencepiece-unigram"])
def test_vocab_too_small(kind, stories, tmp_path) -> None:
    with pytest.raises(TokenizerError, match=r"vocab size 100 is too small.*at least \d+") as e:
        train_tokenizer(kind, stories, 100, tmp_path / "x")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind", ["sentencepiece-bpe", "sentencepiece-unigram"])
def test_vocab_too_large(kind, stories, tmp_path) -> None:
    with pytest.raises(TokenizerError, match=r"vocab size 50000 is too large.*at most \d+") as e:
        train_tokenizer(kind, stories, 50000, tmp_path / "x")
    assert "\n" not in str(e.value)


def test_empty_corpus(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="corpus is empty"):
        train_tokenizer("sentencepiece-bpe", iter([]), 300, tmp_path / "x")


def test_load_missing_and_not_a_tokenizer(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="no such tokenizer directory"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TokenizerError, match="is a file"):
        load_tokenizer(tmp_path / "file")


@pytest.fixture()
def bpe_dir(stories, tmp_path) -> Path:
    return train_tokenizer("sentencepiece-bpe", stories, 400, tmp_path / "bpe").path


def test_load_missing_model_file(bpe_dir) -> None:
    (bpe_dir / "spm.model").unlink()
    with pytest.raises(TokenizerError, match=r"incomplete: missing spm\.model"):
        load_tokenizer(bpe_dir)


def test_load_corrupt_model_file(bpe_dir) -> None:
    (bpe_dir / "spm.model").write_bytes(b"this is not a protobuf \xff\x00" * 10)
    with pytest.raises(TokenizerError, match="do not match the fingerprint"):
        load_tokenizer(bpe_dir)
    # Even with a matching fingerprint, a corrupt model is named as such.
    from slm_tui.tokenizers.base import fingerprint_files

    meta = json.loads((bpe_dir / META_FILE).read_text())
    meta["fingerprint"] = fingerprint_files(meta["kind"], bpe_dir, meta["files"])
    (bpe_dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(TokenizerError, match="not a valid SentencePiece model"):
        load_tokenizer(bpe_dir)


def test_load_corrupt_metadata(bpe_dir) -> None:
    (bpe_dir / META_FILE).write_text("{not json")
    with pytest.raises(TokenizerError, match="corrupt"):
        load_tokenizer(bpe_dir)


def test_load_unknown_kind_in_metadata(bpe_dir) -> None:
    meta = json.loads((bpe_dir / META_FILE).read_text())
    meta["kind"] = "mystery"
    (bpe_dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'mystery'"):
        load_tokenizer(bpe_dir)


def test_directory_of_another_kind(bpe_dir) -> None:
    # Relabelled as unigram: the fingerprint covers the kind, so the mix-up is caught.
    meta = json.loads((bpe_dir / META_FILE).read_text())
    meta["kind"] = "sentencepiece-unigram"
    (bpe_dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(TokenizerError, match="do not match the fingerprint"):
        load_tokenizer(bpe_dir)
    meta["kind"] = "sentencepiece-bpe"
    (bpe_dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(TokenizerError, match="holds a 'sentencepiece-bpe' tokenizer, expected"):
        load_tokenizer(bpe_dir, kind="byte")


# ---- registry and plugins -------------------------------------------------------------------


def test_register_tokenizer_in_process(tmp_path, monkeypatch) -> None:
    class Shouty(ByteTokenizer):
        kind = "shouty-test"

    from slm_tui.tokenizers import registry

    monkeypatch.setattr(registry, "_registered", {})  # leave no trace for other tests

    register_tokenizer("shouty-test", Shouty)
    assert "shouty-test" in available_kinds()
    tok = train_tokenizer("shouty-test", [], 260, tmp_path / "s")
    assert isinstance(load_tokenizer(tok.path), Shouty)
    with pytest.raises(TokenizerError, match="not a Tokenizer subclass"):
        register_tokenizer("bad", dict)  # type: ignore[arg-type]


PLUGIN = '''
"""A third-party tokenizer kind: bytes, reversed ids (so it is visibly not the built-in)."""
from slm_tui.tokenizers.byte import ByteTokenizer


class MirrorBytes(ByteTokenizer):
    kind = "mirror-bytes"

    def encode(self, text):
        return [255 - b for b in text.encode("utf-8")]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def token_bytes(self, id):
        self.check_id(id)
        return bytes([255 - id]) if id < 256 else b""

    def decode(self, ids):
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", "replace")
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "slm-tui-mirror-plugin"
version = "0.0.1"

[project.entry-points."slm_tui.tokenizers"]
mirror-bytes = "mirror_plugin:MirrorBytes"
broken-kind = "mirror_plugin_missing:Nothing"

[tool.setuptools]
py-modules = ["mirror_plugin"]
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin package, really installed by pip into a target folder."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "mirror_plugin.py").write_text(textwrap.dedent(PLUGIN))
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(src)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert list(site.glob("*.dist-info"))
    return site


def test_plugin_discovered_through_entry_points(plugin_site, monkeypatch, tmp_path) -> None:
    assert "mirror-bytes" not in available_kinds()
    monkeypatch.syspath_prepend(str(plugin_site))
    importlib.invalidate_caches()
    assert "mirror-bytes" in available_kinds()
    tok = train_tokenizer("mirror-bytes", ["ignored"], 260, tmp_path / "m")
    assert tok.encode("A") == [255 - 65]
    loaded = load_tokenizer(tmp_path / "m")
    assert type(loaded).__name__ == "MirrorBytes"
    assert loaded.decode(loaded.encode("héllo 😀")) == "héllo 😀"
    with pytest.raises(TokenizerError, match=r"'broken-kind' .*slm-tui-mirror-plugin.* failed"):
        train_tokenizer("broken-kind", [], 260, tmp_path / "b")


def test_plugin_visible_to_a_fresh_process(plugin_site) -> None:
    code = "from slm_tui.tokenizers import available_kinds; print(','.join(available_kinds()))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(plugin_site), "PATH": ""},
    ).stdout
    assert "mirror-bytes" in out.split(",")


def test_training_is_deterministic(stories, tmp_path) -> None:
    a = train_tokenizer("sentencepiece-bpe", stories, 400, tmp_path / "a")
    b = train_tokenizer("sentencepiece-bpe", stories, 400, tmp_path / "b")
    assert a.fingerprint == b.fingerprint  # same corpus, same tokenizer: shards get reused
