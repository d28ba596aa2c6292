"""The tokenizer protocol every kind implements, and its on-disk directory format.

A tokenizer directory holds the kind's own files (e.g. `spm.model`) plus `tokenizer.json`:
{format: "slm-tui-tokenizer", version: 1, kind, vocab_size, bos_id, eos_id, pad_id, unk_id,
fingerprint, files, options}. The fingerprint is a sha256 over the kind name and the kind's
own files (names and bytes, `tokenizer.json` excluded), so two directories with the same
fingerprint tokenize identically, and shards/checkpoints can check they match.

Notable: saving is atomic (a temporary sibling directory swapped into place by
`fileio.replace_dir`; what a killed save left is cleaned up by the next one), and
`token_bytes` is the exact UTF-8 contribution of an id to `decode`, which lets a streaming
decoder emit whole characters without re-decoding the whole sequence. A tokenizer folder may
come from anyone (inside a checkpoint): `tokenizer.json` is read bounded and every field
checked, `files` must name plain files inside the folder, and each is read bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from slm_tui.errors import TokenizerError
from slm_tui.fileio import fsync_tree, recover_leftovers, replace_dir, temp_dir
from slm_tui.untrusted import JSON_LIMIT, MiB, check_fields, read_bounded

META_FILE = "tokenizer.json"
META_FORMAT = "slm-tui-tokenizer"
META_VERSION = 1
FILE_LIMIT = 256 * MiB  # one of a kind's own files (a SentencePiece model: ~0.3 MB at 4k)
MAX_VOCAB = 1 << 24
# tokenizer.json fields and what each must be.
META_FIELDS = {
    "kind": "str",
    "vocab_size": ("int", 1, MAX_VOCAB),
    "bos_id": ("int", -1, MAX_VOCAB),
    "eos_id": ("int", -1, MAX_VOCAB),
    "pad_id": ("int", -1, MAX_VOCAB),
    "unk_id": ("int", -1, MAX_VOCAB),
    "fingerprint": "str",
    "options": "dict?",
}


def fingerprint_files(kind: str, directory: Path, files: Sequence[str]) -> str:
    """sha256 over the kind and the named files (name, length, bytes), in sorted order."""
    h = hashlib.sha256(f"slm-tui-tokenizer:{kind}\n".encode())
    for name in sorted(files):
        data = read_bounded(directory / name, FILE_LIMIT, TokenizerError, f"{directory}/{name}")
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


class Tokenizer(ABC):
    """Text <-> ids. Subclasses set `kind`, `files` and implement the abstract methods."""

    kind: ClassVar[str] = ""
    files: ClassVar[tuple[str, ...]] = ()  # the kind's own files inside the directory
    fixed_vocab_size: ClassVar[int | None] = None  # set by kinds that need no vocab size
    # Kinds that learn nothing from a corpus (`gpt2`): `train` ignores the stories, so
    # `slm-train tokenizer` reads a corpus only to report bytes per token.
    pretrained: ClassVar[bool] = False

    path: Path | None
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    fingerprint: str
    options: dict[str, Any]

    # ---- construction -------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def train(
        cls, stories: Iterable[str], vocab_size: int, output_dir: Path, **options: Any
    ) -> Tokenizer:
        """Train on `stories` (one document each) and save into `output_dir`."""

    @classmethod
    @abstractmethod
    def from_dir(cls, path: Path, meta: dict[str, Any]) -> Tokenizer:
        """Load from a directory whose `tokenizer.json` has already been validated."""

    @abstractmethod
    def write_files(self, directory: Path) -> None:
        """Write the kind's own files (exactly `self.files`) into `directory`."""

    # ---- the protocol ---------------------------------------------------------------------
    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids for `text`; no BOS/EOS added."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` over many texts on all cores (kinds with a native batch encoder override)."""
        if len(texts) < 64:
            return [self.encode(t) for t in texts]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return list(pool.map(self.encode, texts, chunksize=64))

    @abstractmethod
    def token_bytes(self, id: int) -> bytes:
        """Exact UTF-8 bytes `id` contributes to `decode`; b"" for specials."""

    @abstractmethod
    def token_text(self, id: int) -> str:
        """A printable form of the piece for display ("▁the", "<0x0A>", "<bos>")."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text for `ids`; specials dropped, an incomplete UTF-8 sequence becomes U+FFFD."""
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")

    def check_id(self, id: int) -> None:
        if not 0 <= id < self.vocab_size:
            raise TokenizerError(f"token id {id} is out of range for vocab size {self.vocab_size}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, path={self.path})"

    # ---- saving -----------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "format": META_FORMAT,
            "version": META_VERSION,
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "unk_id": self.unk_id,
            "fingerprint": self.fingerprint,
            "files": list(self.files),
            "options": self.options,
        }

    def save(self, output_dir: str | os.PathLike[str]) -> Path:
        """Write the directory atomically: a temporary sibling, fsync, then a rename.

        An existing directory at `output_dir` is replaced (callers that must not overwrite
        user files check first). Returns the resolved path; `self.path` points to it.
        """
        out = Path(output_dir).expanduser().resolve()
        if self.path is not None and out == self.path.resolve() and (out / META_FILE).is_file():
            return out
        if out.exists() and not out.is_dir():
            raise TokenizerError(f"{out} is a file; choose a directory for the tokenizer")
        out.parent.mkdir(parents=True, exist_ok=True)
        recover_leftovers(out.parent)  # what saves killed earlier left here
        tmp = temp_dir(out.parent, prefix=f".tmp-{out.name}-")
        try:
            self.write_files(tmp)
            self.fingerprint = fingerprint_files(self.kind, tmp, self.files)
            meta_path = tmp / META_FILE
            meta_path.write_text(json.dumps(self.meta(), indent=2) + "\n", encoding="utf-8")
            fsync_tree(tmp)
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.path = out
        return out


def read_tokenizer_meta(path: Path) -> dict[str, Any]:
    """Read and validate `tokenizer.json`; TokenizerError naming what is wrong."""
    if not path.exists():
        raise TokenizerError(
            f"{path}: no such tokenizer directory; train one with `slm-train tokenizer`"
        )
    if not path.is_dir():
        raise TokenizerError(f"{path} is a file; a tokenizer is a directory with {META_FILE}")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise TokenizerError(
            f"{path} is not a tokenizer directory (no {META_FILE}); "
            "train one with `slm-train tokenizer`"
        )
    try:
        meta = json.loads(read_bounded(meta_path, JSON_LIMIT, TokenizerError))
    except (ValueError, RecursionError) as exc:
        raise TokenizerError(
            f"{meta_path} is corrupt ({type(exc).__name__}); re-train the tokenizer"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise TokenizerError(f"{meta_path} is not an slm-tui tokenizer file")
    if meta.get("version") != META_VERSION:
        raise TokenizerError(
            f"{meta_path} has format version {meta.get('version')}, this slm-tui reads "
            f"version {META_VERSION}; re-train the tokenizer"
        )
    required = (
        "kind",
        "vocab_size",
        "bos_id",
        "eos_id",
        "pad_id",
        "unk_id",
        "fingerprint",
        "files",
    )
    missing = [k for k in required if k not in meta]
    if missing:
        raise TokenizerError(f"{meta_path} lacks {', '.join(missing)}; re-train the tokenizer")
    check_fields(meta, META_FIELDS, TokenizerError, str(meta_path))
    files = meta["files"]
    if (
        not isinstance(files, list)
        or len(files) > 64
        or not all(_plain_name(name) for name in files)
    ):
        raise TokenizerError(
            f"{meta_path}: files must list the names of files in the folder (no paths)"
        )
    for key in ("bos_id", "eos_id", "pad_id", "unk_id"):
        if meta[key] >= meta["vocab_size"]:
            raise TokenizerError(
                f"{meta_path}: {key} {meta[key]} is outside the vocabulary of {meta['vocab_size']}"
            )
    return meta


def _plain_name(name: object) -> bool:
    """A file name inside the folder: no separators, not hidden, not `.` or `..`."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )
