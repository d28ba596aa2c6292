"""`sentencepiece`: any SentencePiece model, run as SentencePiece runs it (imported tokenizers).

Our own kinds (`sentencepiece-bpe`, `sentencepiece-unigram`, spm.py) are trained here with
fixed settings (identity normalization, no dummy prefix, pad/unk/bos/eos at 0-3, newline
pieces). A model that comes with a Hugging Face checkpoint (`slm-train import`) was trained
elsewhere: Llama-2's tokenizer, for one, adds a dummy prefix ("Hello" is "▁Hello") and has
no pad piece. This kind holds such a model without changing it:

- `encode` is SentencePiece's own (its normalizer, its dummy prefix, byte fallback; a literal
  "▁" reads as a space, as in SentencePiece and the Hugging Face tokenizer it came with).
- `token_bytes` is a piece's text with "▁" as a space (byte pieces their byte, specials
  nothing): the text a piece adds when it continues a story. `decode` joins them and, for a
  model with a dummy prefix, drops the space that prefix put before the first piece, as
  SentencePiece's decoder does.
- Models without a pad piece take the pad id recorded at import (tokenizer.json's
  `pad_id`), by default the unknown piece's id.
- There is nothing to train: `train` refuses and names the kinds that train.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from slm_tui.errors import TokenizerError
from slm_tui.tokenizers.base import Tokenizer
from slm_tui.tokenizers.spm import byte_piece

MODEL_FILE = "spm.model"
_SPACE = "\u2581"
_DISPLAY = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


class SentencePieceModel(Tokenizer):
    """A SentencePiece model file as found, any settings (see the module docstring)."""

    kind = "sentencepiece"
    files = (MODEL_FILE,)

    def __init__(
        self,
        model_bytes: bytes,
        path: Path | None = None,
        options: dict[str, Any] | None = None,
        pad_id: int | None = None,
    ) -> None:
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model_bytes)
        except Exception as exc:
            where = path / MODEL_FILE if path else "the model"
            raise TokenizerError(
                f"{where} is not a valid SentencePiece model ({type(exc).__name__})"
            ) from None
        self._sp = sp
        self._model_bytes = model_bytes
        self.path = path
        self.options = dict(options or {})
        self.fingerprint = ""
        self.vocab_size = sp.get_piece_size()
        self.unk_id, self.bos_id, self.eos_id = sp.unk_id(), sp.bos_id(), sp.eos_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise TokenizerError(f"{path or 'the SentencePiece model'} has no BOS or EOS piece")
        self.pad_id = (
            sp.pad_id() if sp.pad_id() >= 0 else (self.unk_id if pad_id is None else pad_id)
        )
        self.check_id(self.pad_id)
        # SentencePiece does not say whether it adds a dummy prefix; its first piece shows it.
        first = sp.encode("x", out_type=str)
        self.dummy_prefix = bool(first) and first[0].startswith(_SPACE)
        self._bytes: list[bytes] = []
        self._text: list[str] = []
        self._prefixed: list[bool] = []  # a normal piece that starts with "▁"
        for i in range(self.vocab_size):
            piece = sp.id_to_piece(i)
            special = sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)
            if sp.is_byte(i):
                self._bytes.append(byte_piece(piece))
                self._text.append(piece)
            elif special:
                self._bytes.append(b"")
                self._text.append(piece)
            else:
                self._bytes.append(piece.replace(_SPACE, " ").encode("utf-8"))
                self._text.append(piece.translate(_DISPLAY))
            self._prefixed.append(not special and not sp.is_byte(i) and piece.startswith(_SPACE))
        self._threads = os.cpu_count() or 1

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def train(
        cls, stories: Iterable[str], vocab_size: int, output_dir: Path, **options: Any
    ) -> Tokenizer:
        raise TokenizerError(
            "the 'sentencepiece' kind holds a model trained elsewhere (`slm-train import`); "
            "train a sentencepiece-bpe or sentencepiece-unigram tokenizer instead"
        )

    @classmethod
    def from_dir(cls, path: Path, meta: dict[str, Any]) -> Tokenizer:
        tok = cls((path / MODEL_FILE).read_bytes(), path, meta.get("options") or {},
                  pad_id=meta.get("pad_id"))  # fmt: skip
        tok.fingerprint = meta["fingerprint"]
        if tok.vocab_size != meta["vocab_size"]:
            raise TokenizerError(
                f"{path}: tokenizer.json says vocab size {meta['vocab_size']} but the model has "
                f"{tok.vocab_size}"
            )
        return tok

    def write_files(self, directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(self._model_bytes)

    # ---- the protocol ---------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts, num_threads=self._threads)

    def token_bytes(self, id: int) -> bytes:
        self.check_id(id)
        return self._bytes[id]

    def token_text(self, id: int) -> str:
        self.check_id(id)
        return self._text[id]

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        for i in ids:
            self.check_id(i)
        data = b"".join(self._bytes[i] for i in ids)
        if self.dummy_prefix:
            first = next((i for i in ids if self._bytes[i]), None)
            if first is not None and self._prefixed[first]:
                data = data[1:]
        return data.decode("utf-8", errors="replace")
