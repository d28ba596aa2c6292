"""`byte`: UTF-8 bytes as ids 0-255, then pad, unk, bos, eos (vocab 260). Nothing to train.

Lossless by construction; the baseline every learned tokenizer is compared with (1 byte per
token). `vocab_size` passed to `train` is ignored: the vocabulary is fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from slm_tui.tokenizers.base import Tokenizer

_BYTES = [bytes([b]) for b in range(256)]
_NAMES = {256: "<pad>", 257: "<unk>", 258: "<bos>", 259: "<eos>"}


class ByteTokenizer(Tokenizer):
    kind = "byte"
    files = ()
    fixed_vocab_size = 260

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.vocab_size = 260
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = 256, 257, 258, 259
        self.options = {}
        self.fingerprint = ""

    @classmethod
    def train(
        cls, stories: Iterable[str], vocab_size: int, output_dir: Path, **options: Any
    ) -> ByteTokenizer:
        tok = cls()
        tok.save(output_dir)
        return tok

    @classmethod
    def from_dir(cls, path: Path, meta: dict[str, Any]) -> ByteTokenizer:
        tok = cls(path)
        tok.fingerprint = meta["fingerprint"]
        return tok

    def write_files(self, directory: Path) -> None:
        return None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # bytes -> list is a single C call per text; threads would only add overhead.
        return [list(t.encode("utf-8")) for t in texts]

    def token_bytes(self, id: int) -> bytes:
        self.check_id(id)
        return _BYTES[id] if id < 256 else b""

    def token_text(self, id: int) -> str:
        self.check_id(id)
        if id >= 256:
            return _NAMES[id]
        if 0x21 <= id <= 0x7E:
            return chr(id)
        return f"<0x{id:02X}>"

    def decode(self, ids: Sequence[int]) -> str:
        data = bytearray()
        for i in ids:
            i = int(i)
            self.check_id(i)
            if i < 256:
                data.append(i)
        return data.decode("utf-8", errors="replace")
