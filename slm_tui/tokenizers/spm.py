"""SentencePiece tokenizers (`sentencepiece-bpe`, `sentencepiece-unigram`), set up lossless.

Lossless on any UTF-8 text: identity normalization, no dummy prefix, extra whitespace kept,
byte fallback for characters never seen in training, and "\\n\\n" and "\\n" as user-defined
pieces (the paragraph break as one piece is worth +0.06 bytes/token on TinyStories).
SentencePiece trains on lines, so each story is fed as its lines (written to a temporary
file, never held in memory); "\\n" is its own piece, so nothing is lost by splitting there.
Training samples at most `max_sentences` lines (`input_sentence_size` with
`shuffle_input_sentence`), which keeps memory flat however large the corpus is.

One SentencePiece quirk is fixed here: it reads a literal "▁" (U+2581) in the input as a
space. Texts containing it are encoded piecewise with "▁" spelled in byte-fallback ids, and
`decode` goes through the exact `token_bytes` table, so the round trip holds for it too.

Ids: pad 0, unk 1, bos 2, eos 3, "\\n\\n" 4, "\\n" 5, then 256 byte pieces, then learned pieces.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sentencepiece as spm

from slm_tui.errors import TokenizerError
from slm_tui.tokenizers.base import Tokenizer
from slm_tui.tokenizers.spm_words import WordCache

MODEL_FILE = "spm.model"
_SPACE = "\u2581"  # SentencePiece's visible space
_SPECIAL_NAMES = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}
_BYTE_PIECE = re.compile(r"^<0x([0-9A-F]{2})>$")
_DISPLAY = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def byte_piece(piece: str) -> bytes:
    """The byte a byte-fallback piece (`<0x0A>`) stands for."""
    m = _BYTE_PIECE.match(piece)
    if m is None:
        raise TokenizerError(f"the byte piece {piece!r} is not of the form <0xXX>")
    return bytes([int(m.group(1), 16)])


def _translate_error(exc: Exception, vocab_size: int) -> TokenizerError:
    """SentencePiece's CHECK failures as one sentence that says what to do."""
    msg = " ".join(str(exc).split())
    m = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
    if m:
        need = int(m.group(2))
        return TokenizerError(
            f"vocab size {vocab_size} is too small: this corpus needs at least {need} "
            f"(4 specials, 256 byte-fallback pieces and its characters); "
            f"use --vocab-size {need} or more"
        )
    m = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", msg)
    if m:
        most = int(m.group(2))
        return TokenizerError(
            f"vocab size {vocab_size} is too large for this corpus: it supports at most "
            f"{most} pieces; use --vocab-size {most} or less, or train on more text"
        )
    msg = re.sub(r"^\w+: src/\S+ \[.*?\] ", "", msg)
    return TokenizerError(f"sentencepiece training failed: {msg}")


class _SentencePiece(Tokenizer):
    model_type: ClassVar[str] = ""
    files = (MODEL_FILE,)

    def __init__(self, model_bytes: bytes, path: Path | None, options: dict[str, Any]) -> None:
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model_bytes)
        except Exception as exc:
            where = path / MODEL_FILE if path else "the model"
            raise TokenizerError(
                f"{where} is not a valid SentencePiece model ({type(exc).__name__}); "
                "re-train the tokenizer"
            ) from None
        self._sp = sp
        self._model_bytes = model_bytes
        self.path = path
        self.options = dict(options)
        self.fingerprint = ""
        self.vocab_size = sp.get_piece_size()
        self.pad_id, self.unk_id = sp.pad_id(), sp.unk_id()
        self.bos_id, self.eos_id = sp.bos_id(), sp.eos_id()
        if min(self.pad_id, self.unk_id, self.bos_id, self.eos_id) < 0:
            raise TokenizerError(f"{path or 'model'}: SentencePiece model lacks a special id")
        names = {
            self.pad_id: "<pad>",
            self.unk_id: "<unk>",
            self.bos_id: "<bos>",
            self.eos_id: "<eos>",
        }
        # Exact bytes per id: decode is a table lookup + one UTF-8 decode, and it agrees
        # with token_bytes by construction.
        self._bytes: list[bytes] = []
        self._text: list[str] = []
        for i in range(self.vocab_size):
            piece = sp.id_to_piece(i)
            if i in names:
                self._bytes.append(b"")
                self._text.append(names[i])
            elif sp.is_byte(i):
                self._bytes.append(byte_piece(piece))
                self._text.append(piece)
            elif sp.is_control(i) or sp.is_unknown(i):
                self._bytes.append(b"")
                self._text.append(piece)
            else:
                self._bytes.append(piece.replace(_SPACE, " ").encode("utf-8"))
                self._text.append(piece.translate(_DISPLAY))
        self._space_ids = [sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE.encode("utf-8")]
        self._threads = os.cpu_count() or 1
        # encode_batch word by word from a cache where that gives the same ids (spm_words.py)
        self._words = WordCache.for_model(sp, model_bytes)

    # ---- training / loading -----------------------------------------------------------------
    @classmethod
    def train(
        cls,
        stories: Iterable[str],
        vocab_size: int,
        output_dir: Path,
        *,
        max_sentences: int = 2_000_000,
        character_coverage: float = 0.9995,
        max_sentence_length: int = 1 << 16,
        num_threads: int | None = None,
        tmp_dir: str | None = None,
        seed: int = 0,
        **extra: Any,
    ) -> Tokenizer:
        """Train on `stories`; `extra` is passed to SentencePieceTrainer (expert knobs)."""
        with tempfile.TemporaryDirectory(prefix="slm-spm-", dir=tmp_dir) as tmp:
            text_path = Path(tmp) / "lines.txt"
            lines = 0
            with open(text_path, "w", encoding="utf-8", newline="\n") as f:
                for story in stories:
                    for line in story.split("\n"):
                        if line:
                            f.write(line)
                            f.write("\n")
                            lines += 1
            if lines == 0:
                raise TokenizerError("no text to train the tokenizer on: the corpus is empty")
            options = {
                "model_type": cls.model_type,
                "character_coverage": character_coverage,
                "max_sentences": max_sentences,
                "training_lines": lines,
            }
            # Lines are fed back from the file through an iterator and the model is written
            # to memory: no temporary paths end up inside the model, so with a fixed seed the
            # same corpus gives byte-identical models (and the same fingerprint).
            model = io.BytesIO()
            spm.set_random_generator_seed(seed)
            try:
                with open(text_path, encoding="utf-8", newline="\n") as f:
                    spm.SentencePieceTrainer.train(
                        sentence_iterator=(line[:-1] for line in f),
                        model_writer=model,
                        model_type=cls.model_type,
                        vocab_size=vocab_size,
                        character_coverage=character_coverage,
                        normalization_rule_name="identity",
                        add_dummy_prefix=False,
                        remove_extra_whitespaces=False,
                        byte_fallback=True,
                        split_digits=True,
                        allow_whitespace_only_pieces=True,
                        user_defined_symbols=["\n\n", "\n"],
                        pad_id=0,
                        unk_id=1,
                        bos_id=2,
                        eos_id=3,
                        input_sentence_size=max_sentences,
                        shuffle_input_sentence=True,
                        max_sentence_length=max_sentence_length,
                        num_threads=num_threads or os.cpu_count() or 1,
                        minloglevel=2,
                        **extra,
                    )
            except (RuntimeError, OSError) as exc:
                raise _translate_error(exc, vocab_size) from None
            model_bytes = model.getvalue()
        tok = cls(model_bytes, None, options)
        tok.save(output_dir)
        return tok

    @classmethod
    def from_dir(cls, path: Path, meta: dict[str, Any]) -> Tokenizer:
        tok = cls((path / MODEL_FILE).read_bytes(), path, meta.get("options") or {})
        tok.fingerprint = meta["fingerprint"]
        if tok.vocab_size != meta["vocab_size"]:
            raise TokenizerError(
                f"{path}: tokenizer.json says vocab size {meta['vocab_size']} but the model has "
                f"{tok.vocab_size}; re-train the tokenizer"
            )
        return tok

    def write_files(self, directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(self._model_bytes)

    # ---- the protocol -------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if _SPACE not in text:
            return self._sp.encode(text)
        return self._encode_with_literal_space(text)

    def _encode_with_literal_space(self, text: str) -> list[int]:
        ids: list[int] = []
        for k, part in enumerate(text.split(_SPACE)):
            if k:
                ids.extend(self._space_ids)
            if part:
                ids.extend(self._sp.encode(part))
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # SentencePiece's batch encode runs on `num_threads` native threads.
        plain = [i for i, t in enumerate(texts) if _SPACE not in t]
        if len(plain) == len(texts):
            return self._encode_plain(texts)
        out: list[list[int]] = [[] for _ in texts]
        encoded = self._encode_plain([texts[i] for i in plain])
        for i, ids in zip(plain, encoded, strict=True):
            out[i] = ids
        for i, t in enumerate(texts):
            if _SPACE in t:
                out[i] = self._encode_with_literal_space(t)
        return out

    def _encode_plain(self, texts: list[str]) -> list[list[int]]:
        if self._words is not None:
            return self._words.encode(texts, self._threads)
        return self._sp.encode(texts, num_threads=self._threads)

    def decode(self, ids: Sequence[int]) -> str:
        if len(ids) and min(ids) < 0:  # a negative index would silently wrap around
            self.check_id(int(min(ids)))
        table = self._bytes
        try:
            data = b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            data = b"".join([self.token_bytes(int(i)) for i in ids])
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, id: int) -> bytes:
        self.check_id(id)
        return self._bytes[id]

    def token_text(self, id: int) -> str:
        self.check_id(id)
        return self._text[id]


class SentencePieceBPE(_SentencePiece):
    """Byte-pair encoding (the default kind)."""

    kind = "sentencepiece-bpe"
    model_type = "bpe"


class SentencePieceUnigram(_SentencePiece):
    """Unigram language-model segmentation."""

    kind = "sentencepiece-unigram"
    model_type = "unigram"
