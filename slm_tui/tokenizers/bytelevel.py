"""`bytelevel-bpe`: a byte-level BPE trained from scratch with Hugging Face `tokenizers`.

GPT-2's scheme with a vocabulary learned from the corpus: text is split by GPT-2's
pre-tokenizer pattern (words with their leading space, numbers, punctuation runs, whitespace
runs), each piece is spelled in bytes, and merges learned by `tokenizers`' `BpeTrainer`
join bytes into pieces. Every byte is a piece, so encoding is lossless on any UTF-8 text
and nothing is ever unknown.

Files: `vocab.json` (piece -> id, pieces in GPT-2's byte spelling, "Ġ" for a space) and
`merges.txt` (one merge a line, in order), the two files of a GPT-2-style tokenizer. The
pipeline around them (pre-tokenizer, no normalizer, no added tokens) is this code, not
data, so a folder from elsewhere cannot change how text is read. Ids of a trained one:
`<pad>` 0, `<unk>` 1 (never produced), `<bos>` 2, `<eos>` 3, the 256 bytes, then the merges.
Specials are never read out of text: "<eos>" in a story is ordinary text. An imported
tokenizer (`slm-train import`) keeps its own ids; `options["special_ids"]` lists its
specials.

Training feeds whole stories through `train_from_iterator` (the trainer keeps counts of
distinct words, not the text, so memory follows the vocabulary of the corpus, not its size).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from slm_tui.errors import TokenizerError
from slm_tui.tokenizers.base import Tokenizer
from slm_tui.tokenizers.bytemap import piece_bytes, readable
from slm_tui.untrusted import MiB, read_bounded

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
FILE_LIMIT = 64 * MiB


def hf_pipeline(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Any:
    """The `tokenizers.Tokenizer` that encodes as this kind does: GPT-2's byte-level
    pre-tokenizer (its regex, no prefix space), the BPE model, no normalizer, no specials."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    tk = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    return tk


def _merges_of(hf_json: dict[str, Any]) -> list[tuple[str, str]]:
    """Merges of a tokenizers JSON model: ["a", "b"] pairs (tokenizers >= 0.20) or "a b"."""
    out = []
    for m in hf_json["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        out.append((a, b))
    return out


def check_files(
    vocab: Any, merges: list[tuple[str, str]], specials: set[int], origin: str
) -> dict[int, bytes]:
    """Validate a byte-level vocabulary and its merges; the bytes of every non-special id."""
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError(f"{origin}: {VOCAB_FILE} must map pieces to ids")
    ids = sorted(v for v in vocab.values() if isinstance(v, int) and not isinstance(v, bool))
    if ids != list(range(len(vocab))):
        raise TokenizerError(f"{origin}: the ids of {VOCAB_FILE} must be 0..{len(vocab) - 1}")
    table: dict[int, bytes] = {}
    for piece, i in vocab.items():
        if i in specials:
            continue
        data = piece_bytes(piece)
        if data is None or not data:
            raise TokenizerError(f"{origin}: {piece!r:.40} is not a byte-level piece")
        table[i] = data
    if len({d for d in table.values() if len(d) == 1}) != 256:
        raise TokenizerError(f"{origin}: not every byte has a piece, so text could be lost")
    for a, b in merges:
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise TokenizerError(
                f"{origin}: the merge {a!r:.20} {b!r:.20} is not in the vocabulary"
            )
    return table


def read_merges(text: str) -> list[tuple[str, str]]:
    lines = text.split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    out = []
    for line in lines:
        if line:
            a, sep, b = line.partition(" ")
            if not sep or not a or not b or " " in b:
                raise TokenizerError(f"{MERGES_FILE}: a line is not 'left right': {line!r:.40}")
            out.append((a, b))
    return out


def merges_file(merges: list[tuple[str, str]]) -> str:
    return "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)


class ByteLevelBPE(Tokenizer):
    """A byte-level BPE trained here or imported (see the module docstring)."""

    kind = "bytelevel-bpe"
    files = (VOCAB_FILE, MERGES_FILE)

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        special_ids: dict[str, int],
        path: Path | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """`special_ids`: bos, eos, pad, unk (-1 for none) and any other special as name -> id."""
        origin = str(path or "the tokenizer")
        self.vocab_size = len(vocab)
        self.bos_id = special_ids.get("bos", -1)
        self.eos_id = special_ids.get("eos", -1)
        self.pad_id = special_ids.get("pad", -1)
        self.unk_id = special_ids.get("unk", -1)
        specials = {i for i in special_ids.values() if i >= 0}
        for i in specials:
            if i >= self.vocab_size:
                raise TokenizerError(f"{origin}: special id {i} is outside the vocabulary")
        if min(self.bos_id, self.eos_id) < 0:
            raise TokenizerError(f"{origin}: a bytelevel-bpe tokenizer needs BOS and EOS ids")
        table = check_files(vocab, merges, specials, origin)
        self._vocab, self._merges = vocab, merges
        self._special_ids = dict(special_ids)
        self._bytes = [table.get(i, b"") for i in range(self.vocab_size)]
        names = {i: p for p, i in vocab.items()}
        self._text = [names[i] if i in specials else readable(self._bytes[i])
                      for i in range(self.vocab_size)]  # fmt: skip
        self._hf = hf_pipeline(vocab, merges)
        self.path = path
        self.options = {**(options or {}), "special_ids": dict(special_ids)}
        self.fingerprint = ""

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        stories: Iterable[str],
        vocab_size: int,
        output_dir: Path,
        *,
        min_frequency: int = 2,
        **_ignored: Any,
    ) -> ByteLevelBPE:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, pre_tokenizers, trainers

        need = len(SPECIALS) + 256
        if vocab_size < need:
            raise TokenizerError(
                f"vocab size {vocab_size} is too small: a bytelevel-bpe tokenizer needs at "
                f"least {need} (4 specials and 256 bytes); use --vocab-size {need} or more"
            )
        counted = {"stories": 0}

        def texts() -> Iterator[str]:
            for story in stories:
                if story:
                    counted["stories"] += 1
                    yield story

        tk = HFTokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tk.train_from_iterator(texts(), trainer=trainer)
        if counted["stories"] == 0:
            raise TokenizerError("no text to train the tokenizer on: the corpus is empty")
        spec = json.loads(tk.to_str())
        vocab = dict(spec["model"]["vocab"])
        if len(vocab) < vocab_size:
            raise TokenizerError(
                f"vocab size {vocab_size} is too large for this corpus: it supports at most "
                f"{len(vocab)} pieces (merges seen at least {min_frequency} times); use "
                f"--vocab-size {len(vocab)} or less, or train on more text"
            )
        ids = {
            name: vocab[s] for name, s in zip(("pad", "unk", "bos", "eos"), SPECIALS, strict=True)
        }
        tok = cls(vocab, _merges_of(spec), ids, None, {"min_frequency": min_frequency})
        tok.save(output_dir)
        return tok

    @classmethod
    def from_dir(cls, path: Path, meta: dict[str, Any]) -> ByteLevelBPE:
        try:
            vocab = json.loads(read_bounded(path / VOCAB_FILE, FILE_LIMIT, TokenizerError))
            merges_text = read_bounded(path / MERGES_FILE, FILE_LIMIT, TokenizerError)
            merges = read_merges(merges_text.decode("utf-8"))
        except (ValueError, RecursionError):
            raise TokenizerError(f"{path}: {VOCAB_FILE} or {MERGES_FILE} is corrupt") from None
        options = meta.get("options") or {}
        extra = options.get("special_ids") or {}
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= -1
            for k, v in extra.items()
        ):
            raise TokenizerError(f"{path}: tokenizer.json's special_ids must map names to ids")
        ids = {**extra, "bos": meta["bos_id"], "eos": meta["eos_id"], "pad": meta["pad_id"],
               "unk": meta["unk_id"]}  # fmt: skip
        if len(vocab) != meta["vocab_size"]:
            raise TokenizerError(
                f"{path}: tokenizer.json says vocab size {meta['vocab_size']} but "
                f"{VOCAB_FILE} has {len(vocab)}"
            )
        tok = cls(vocab, merges, ids, path, options)
        tok.fingerprint = meta["fingerprint"]
        return tok

    def write_files(self, directory: Path) -> None:
        text = json.dumps(dict(sorted(self._vocab.items(), key=lambda kv: kv[1])))
        (directory / VOCAB_FILE).write_text(text, encoding="utf-8")
        (directory / MERGES_FILE).write_text(merges_file(self._merges), encoding="utf-8")

    @property
    def vocab(self) -> dict[str, int]:
        """Piece (GPT-2 byte spelling) -> id, specials included."""
        return self._vocab

    @property
    def merges(self) -> list[tuple[str, str]]:
        return self._merges

    @property
    def special_ids(self) -> dict[str, int]:
        """Every special (bos, eos, pad, unk and others) by name; -1: none."""
        return self._special_ids

    # ---- the protocol ---------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # tokenizers' batch encode runs on its own native thread pool.
        return [e.ids for e in self._hf.encode_batch(texts, add_special_tokens=False)]

    def token_bytes(self, id: int) -> bytes:
        self.check_id(id)
        return self._bytes[id]

    def token_text(self, id: int) -> str:
        self.check_id(id)
        return self._text[id]

    def decode(self, ids: Sequence[int]) -> str:
        if len(ids) and min(ids) < 0:
            self.check_id(int(min(ids)))
        table = self._bytes
        try:
            data = b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            data = b"".join([self.token_bytes(int(i)) for i in ids])
        return data.decode("utf-8", errors="replace")
