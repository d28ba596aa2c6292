"""Byte-level BPE helpers shared by the `gpt2` and `bytelevel-bpe` kinds and their exporters.

- GPT-2's byte <-> unicode table (`BYTE_TO_CHAR`, `CHAR_TO_BYTE`): byte-level vocabularies
  (GPT-2's encoder.json, Hugging Face's vocab.json and tokenizer.json, llama.cpp's `gpt2`
  token lists) spell every byte as one printable character, so a space is "Ġ" and a newline
  "Ċ". `piece_bytes` / `piece_string` go between the two forms.
- `readable(data)`: how the TUI, `token_text` and the inspector show a byte-level piece:
  its UTF-8 text with a space as "▁" (as SentencePiece pieces are shown), newline, return and
  tab escaped, and any byte that is not part of a whole character in this piece (half an
  emoji, a control character) as <0xXX>. "Ġupon" is shown "▁upon", "âĢ" is "<0xE2><0x80>".
- `derive_merges(ranks)`: the merge list of a vocabulary whose ids are merge ranks (GPT-2's
  and tiktoken's): each token's merge is the last step of byte-pair encoding its own bytes
  with the ranks below it. For GPT-2 this rebuilds OpenAI's vocab.bpe byte for byte (sha256
  1ce16647...; tests/test_gpt2_kinds.py checks it through tiktoken's own loader).
- `GPT2_PATTERN`: the pre-tokenizer split of GPT-2, tiktoken's spelling of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def _byte_table() -> list[str]:
    """GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68
    bytes (controls, space, DEL, NBSP, soft hyphen) take the characters from U+0100 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    table, extra = [""] * 256, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR: list[str] = _byte_table()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_CHAR)}
# tiktoken's r50k/gpt2 pattern (the original GPT-2 pattern, written to run faster).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
ENDOFTEXT = "<|endoftext|>"
_ESCAPES = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x20: "▁"}


def piece_string(data: bytes) -> str:
    """Bytes in the byte-level vocabulary spelling ("Ġthe" for b" the")."""
    return "".join(BYTE_TO_CHAR[b] for b in data)


def piece_bytes(piece: str) -> bytes | None:
    """The bytes a byte-level piece spells, or None when a character is not in the table."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in piece)
    except KeyError:
        return None


def readable(data: bytes) -> str:
    """A piece's bytes for display (see the module docstring)."""
    out: list[str] = []
    i = 0
    while i < len(data):
        b = data[i]
        if b < 0x80:
            out.append(_ESCAPES.get(b) or (chr(b) if 0x20 < b < 0x7F else f"<0x{b:02X}>"))
            i += 1
            continue
        width = 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 0
        chunk = data[i : i + width] if width else b""
        try:
            if len(chunk) != width or not width:
                raise UnicodeDecodeError("utf-8", chunk, 0, 1, "partial")
            out.append(chunk.decode("utf-8"))
            i += width
        except UnicodeDecodeError:
            out.append(f"<0x{b:02X}>")
            i += 1
    return "".join(out)


def derive_merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merges, in rank order, of a vocabulary whose ranks are its merge order (tokens of
    more than one byte, each the merge of two tokens of lower rank). ValueError if a token
    cannot be built that way."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, at = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) != 2 or any(ranks.get(p, rank) >= rank for p in parts):
            raise ValueError(f"token {token!r} (rank {rank}) is not a merge of two lower ranks")
        merges.append((parts[0], parts[1]))
    return merges


def merges_text(merges: Iterable[tuple[bytes, bytes]]) -> str:
    """merges.txt / vocab.bpe: a version line, then one "left right" line per merge."""
    lines = [f"{piece_string(a)} {piece_string(b)}" for a, b in merges]
    return "#version: 0.2\n" + "\n".join(lines) + "\n"
