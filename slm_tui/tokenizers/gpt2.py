"""`gpt2`: GPT-2's byte-level BPE (50,257 ids) through tiktoken. Pretrained: nothing to train.

The seed notebook's tokenizer, and the TinyStories paper's models' (GPT-Neo with GPT-2's
vocabulary). Where the vocabulary comes from:
- `tiktoken.get_encoding("gpt2")`: downloaded once by tiktoken (and cached in its cache
  folder, `TIKTOKEN_CACHE_DIR`) on a machine with a network;
- `vocab_file=encoder.json` (`slm-train tokenizer --kind gpt2 --vocab-file encoder.json`):
  GPT-2's vocabulary file, offline. Its ids are the merge ranks (byte tokens aside), so the
  same tiktoken `Encoding` is built from this one file.
Either way the folder holds `encoder.json`, written the same way (json.dumps in id order:
byte for byte OpenAI's file, sha256 196139668be6...), so both give the same fingerprint and
the folder is self-contained: a checkpoint copied to another machine needs no download. A
vocabulary that is not GPT-2's is refused (use `bytelevel-bpe` for other byte-level BPEs).

Ids: `<|endoftext|>` = 50256 is BOS, EOS, pad and unk at once, as in GPT-2 and Hugging
Face's GPT-2 tokenizer: it separates stories and ends one. A shard is written
`<|endoftext|> story <|endoftext|> story <|endoftext|> ...` (one separator between two
stories, not two: shards.py). Text is encoded with `encode_ordinary`: the literal text
"<|endoftext|>" in a story is ordinary text, never the special id, so encoding is lossless
on any UTF-8 text. `token_text` shows pieces readably ("▁upon", "\\n", "<0xF0><0x9F>"),
not in GPT-2's byte spelling ("Ġupon", "Ċ", "ðŁ").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from slm_tui.errors import TokenizerError
from slm_tui.tokenizers.base import Tokenizer
from slm_tui.tokenizers.bytemap import (
    ENDOFTEXT,
    GPT2_PATTERN,
    piece_bytes,
    piece_string,
    readable,
)
from slm_tui.untrusted import MiB, read_bounded

VOCAB_FILE = "encoder.json"
VOCAB_SIZE = 50257
EOT_ID = 50256
# sha256 of GPT-2's encoder.json (the hash tiktoken checks for it).
ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_LIMIT = 16 * MiB


def encoder_json_bytes(ranks: dict[bytes, int]) -> bytes:
    """encoder.json for `ranks` (token bytes -> id, specials aside), in GPT-2's own layout."""
    vocab = {piece_string(b): i for b, i in sorted(ranks.items(), key=lambda kv: kv[1])}
    vocab[ENDOFTEXT] = EOT_ID
    return json.dumps(vocab).encode("utf-8")


def ranks_from_vocab(vocab: Any, origin: str) -> dict[bytes, int]:
    """Token bytes -> rank from a byte-level vocabulary mapping (encoder.json / vocab.json);
    TokenizerError unless it is GPT-2's exactly."""
    if not isinstance(vocab, dict) or len(vocab) != VOCAB_SIZE:
        n = len(vocab) if isinstance(vocab, dict) else type(vocab).__name__
        raise TokenizerError(f"{origin} is not GPT-2's vocabulary ({n} entries, not {VOCAB_SIZE})")
    if vocab.get(ENDOFTEXT) != EOT_ID:
        raise TokenizerError(f"{origin} is not GPT-2's vocabulary (no {ENDOFTEXT} at {EOT_ID})")
    ranks: dict[bytes, int] = {}
    for piece, rank in vocab.items():
        if piece == ENDOFTEXT:
            continue
        data = piece_bytes(piece) if isinstance(piece, str) else None
        if data is None or isinstance(rank, bool) or not isinstance(rank, int):
            raise TokenizerError(f"{origin} is not a byte-level vocabulary (entry {piece!r:.40})")
        ranks[data] = rank
    if sorted(ranks.values()) != list(range(EOT_ID)):
        raise TokenizerError(f"{origin} is not GPT-2's vocabulary (ids are not 0..{EOT_ID - 1})")
    digest = hashlib.sha256(encoder_json_bytes(ranks)).hexdigest()
    if digest != ENCODER_SHA256:
        raise TokenizerError(
            f"{origin} is a byte-level vocabulary of {VOCAB_SIZE} ids but not GPT-2's "
            f"(sha256 {digest[:12]}..., GPT-2's is {ENCODER_SHA256[:12]}...); the gpt2 kind "
            "is GPT-2's vocabulary: train a bytelevel-bpe tokenizer for another"
        )
    return ranks


def read_vocab_file(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """GPT-2's ranks from an encoder.json (or Hugging Face vocab.json) file, checked."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise TokenizerError(f"{p} is a folder; --vocab-file is GPT-2's encoder.json file")
    if not p.is_file():
        raise TokenizerError(f"vocab file {p} not found (GPT-2's encoder.json)")
    try:
        vocab = json.loads(read_bounded(p, VOCAB_LIMIT, TokenizerError))
    except (ValueError, RecursionError):
        raise TokenizerError(f"{p} is not a JSON file (GPT-2's encoder.json)") from None
    return ranks_from_vocab(vocab, str(p))


def ranks_from_tiktoken() -> dict[bytes, int]:
    """GPT-2's ranks from `tiktoken.get_encoding("gpt2")` (downloaded once, then cached)."""
    import tiktoken

    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception as exc:  # requests' connection errors, a hash mismatch, ...
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise TokenizerError(
            f"tiktoken could not get GPT-2's vocabulary ({type(exc).__name__}: {first}); "
            "without a network give GPT-2's encoder.json: `slm-train tokenizer --kind gpt2 "
            "--vocab-file encoder.json`, or `--set tokenizer.vocab_file=encoder.json`"
        ) from None
    return {enc.decode_single_token_bytes(i): i for i in range(EOT_ID)}


def gpt2_encoding(ranks: dict[bytes, int]) -> Any:
    """The tiktoken `Encoding` of GPT-2 built from its ranks (what tiktoken's gpt2 is)."""
    import tiktoken

    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )


class GPT2Tokenizer(Tokenizer):
    """GPT-2's tokenizer (see the module docstring)."""

    kind = "gpt2"
    files = (VOCAB_FILE,)
    fixed_vocab_size = VOCAB_SIZE
    pretrained = True

    def __init__(
        self, ranks: dict[bytes, int], path: Path | None = None, options: dict | None = None
    ) -> None:
        self._ranks = ranks
        self._enc = gpt2_encoding(ranks)
        self.path = path
        self.options = dict(options or {})
        self.fingerprint = ""
        self.vocab_size = VOCAB_SIZE
        self.bos_id = self.eos_id = self.pad_id = self.unk_id = EOT_ID
        self._bytes: list[bytes] = [b""] * VOCAB_SIZE
        for data, rank in ranks.items():
            self._bytes[rank] = data
        self._threads = os.cpu_count() or 1

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        stories: Iterable[str],
        vocab_size: int,
        output_dir: Path,
        *,
        vocab_file: str | os.PathLike[str] | None = None,
        **_ignored: Any,
    ) -> GPT2Tokenizer:
        """Nothing is learned from `stories`: the folder is GPT-2's vocabulary, from
        `vocab_file` (encoder.json) or tiktoken."""
        if vocab_file is not None:
            tok = cls(read_vocab_file(vocab_file), None, {"source": "encoder.json"})
        else:
            tok = cls(ranks_from_tiktoken(), None, {"source": "tiktoken"})
        tok.save(output_dir)
        return tok

    @classmethod
    def from_dir(cls, path: Path, meta: dict[str, Any]) -> GPT2Tokenizer:
        if meta["vocab_size"] != VOCAB_SIZE:
            raise TokenizerError(
                f"{path}: a gpt2 tokenizer has {VOCAB_SIZE} ids, not {meta['vocab_size']}"
            )
        tok = cls(read_vocab_file(path / VOCAB_FILE), path, meta.get("options") or {})
        tok.fingerprint = meta["fingerprint"]
        return tok

    def write_files(self, directory: Path) -> None:
        (directory / VOCAB_FILE).write_bytes(encoder_json_bytes(self._ranks))

    @property
    def ranks(self) -> dict[bytes, int]:
        """Token bytes -> id (= merge rank), `<|endoftext|>` aside."""
        return self._ranks

    # ---- the protocol ---------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=self._threads)

    def token_bytes(self, id: int) -> bytes:
        self.check_id(id)
        return self._bytes[id]

    def token_text(self, id: int) -> str:
        self.check_id(id)
        return ENDOFTEXT if id == EOT_ID else readable(self._bytes[id])

    def decode(self, ids: Sequence[int]) -> str:
        if len(ids) and min(ids) < 0:
            self.check_id(int(min(ids)))
        table = self._bytes
        try:
            data = b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            data = b"".join([self.token_bytes(int(i)) for i in ids])
        return data.decode("utf-8", errors="replace")
