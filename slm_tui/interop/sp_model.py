"""A reader for SentencePiece model files (`spm.model`, `tokenizer.model`), without protobuf.

The file is a serialized `sentencepiece.ModelProto`. The Python `protobuf` package is not a
dependency of this project (sentencepiece's own `sentencepiece_model_pb2` needs it), and the
exporters need only a handful of fields, so this decodes the wire format directly: pieces
(text, score, type), the trainer fields that change how text is segmented (model type, byte
fallback, whitespace handling, special ids) and the normalizer fields (rule name, dummy
prefix, whitespace handling, a precompiled character map).

Field numbers are those of sentencepiece's `sentencepiece_model.proto`. Unknown fields are
skipped, so newer files still read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from slm_tui.errors import TokenizerError

# SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# TrainerSpec.ModelType
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


@dataclass
class Piece:
    text: str
    score: float = 0.0
    type: int = NORMAL


@dataclass
class SentencePieceModel:
    pieces: list[Piece] = field(default_factory=list)
    model_type: str = "unigram"
    byte_fallback: bool = False
    split_by_whitespace: bool = True
    treat_whitespace_as_suffix: bool = False
    allow_whitespace_only_pieces: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    normalization_rule_tsv: str = ""

    def ids_of_type(self, kind: int) -> list[int]:
        return [i for i, p in enumerate(self.pieces) if p.type == kind]

    def identity_normalization(self) -> bool:
        """True when the normalizer changes nothing but spaces to "▁" (no NFKC, no rules)."""
        return (
            self.normalizer_name in ("identity", "")
            and not self.precompiled_charsmap
            and not self.normalization_rule_tsv
        )


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of one message: a number for a
    varint, bytes for the others."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, wire, value


def _data(value: int | bytes) -> bytes:
    """A field that must be bytes (text, a sub-message, a float): a number is a damaged file."""
    if not isinstance(value, bytes):
        raise ValueError("a number where bytes belong")
    return value


def _number(value: int | bytes) -> int:
    """A field that must be a varint: bytes are a damaged file."""
    if not isinstance(value, int):
        raise ValueError("bytes where a number belongs")
    return value


def _int32(value: int | bytes) -> int:
    """A protobuf int32 sent as a 64-bit varint (negative numbers are 10 bytes)."""
    value = _number(value) & ((1 << 64) - 1)
    return value - (1 << 64) if value >= 1 << 63 else value


def _piece(buf: bytes) -> Piece:
    p = Piece("")
    for number, _wire, value in _fields(buf):
        if number == 1:
            p.text = _data(value).decode("utf-8")
        elif number == 2:
            (p.score,) = struct.unpack("<f", _data(value))
        elif number == 3:
            p.type = _number(value)
    return p


_TRAINER_BOOLS = {
    35: "byte_fallback",
    22: "split_by_whitespace",
    24: "treat_whitespace_as_suffix",
    26: "allow_whitespace_only_pieces",
}
_TRAINER_IDS = {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
_NORMALIZER_BOOLS = {3: "add_dummy_prefix", 4: "remove_extra_whitespaces", 5: "escape_whitespaces"}


def parse_model(data: bytes, where: str = "the SentencePiece model") -> SentencePieceModel:
    """Decode a serialized ModelProto; TokenizerError if it is not one."""
    model = SentencePieceModel()
    try:
        for number, wire, value in _fields(data):
            if number == 1 and wire == 2:
                model.pieces.append(_piece(_data(value)))
            elif number == 2 and wire == 2:
                for n, _w, v in _fields(_data(value)):
                    if n == 3:
                        kind = _number(v)
                        model.model_type = MODEL_TYPES.get(kind, f"type {kind}")
                    elif n in _TRAINER_BOOLS:
                        setattr(model, _TRAINER_BOOLS[n], bool(v))
                    elif n in _TRAINER_IDS:
                        setattr(model, _TRAINER_IDS[n], _int32(v))
            elif number == 3 and wire == 2:
                for n, _w, v in _fields(_data(value)):
                    if n == 1:
                        model.normalizer_name = _data(v).decode("utf-8")
                    elif n == 2:
                        model.precompiled_charsmap = _data(v)
                    elif n in _NORMALIZER_BOOLS:
                        setattr(model, _NORMALIZER_BOOLS[n], bool(v))
                    elif n == 6:
                        model.normalization_rule_tsv = _data(v).decode("utf-8")
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise TokenizerError(f"{where} is not a valid SentencePiece model ({exc})") from None
    if not model.pieces:
        raise TokenizerError(f"{where} is not a valid SentencePiece model (no pieces)")
    return model
