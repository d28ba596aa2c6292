"""Tokenizer kinds by name: built-ins, `register_tokenizer`, and installed plugins.

A third-party package adds a kind by declaring an entry point in the group
`slm_tui.tokenizers` (`my-kind = my_pkg.module:MyTokenizer`, a `Tokenizer` subclass).
Entry points are read on every lookup that misses, so a package installed while the
process runs is found. The built-ins are also known without entry points, so a
source checkout that was never pip-installed still works.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from slm_tui.errors import TokenizerError
from slm_tui.tokenizers.base import Tokenizer, fingerprint_files, read_tokenizer_meta

ENTRY_POINT_GROUP = "slm_tui.tokenizers"
DEFAULT_KIND = "sentencepiece-bpe"

_BUILTIN = {
    "sentencepiece-bpe": "slm_tui.tokenizers.spm:SentencePieceBPE",
    "sentencepiece-unigram": "slm_tui.tokenizers.spm:SentencePieceUnigram",
    "byte": "slm_tui.tokenizers.byte:ByteTokenizer",
    "sentencepiece": "slm_tui.tokenizers.spm_model:SentencePieceModel",
    "gpt2": "slm_tui.tokenizers.gpt2:GPT2Tokenizer",
    "bytelevel-bpe": "slm_tui.tokenizers.bytelevel:ByteLevelBPE",
}
_registered: dict[str, type[Tokenizer]] = {}


def register_tokenizer(kind: str, cls: type[Tokenizer]) -> None:
    """Make `cls` available as `kind` in this process (entry points do it for packages)."""
    if not (isinstance(cls, type) and issubclass(cls, Tokenizer)):
        raise TokenizerError(f"cannot register {cls!r} as '{kind}': not a Tokenizer subclass")
    _registered[kind] = cls


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_kinds() -> list[str]:
    """Every kind that `train_tokenizer`/`load_tokenizer` accept, sorted."""
    return sorted(set(_BUILTIN) | set(_registered) | set(_entry_points()))


def _load_target(kind: str, target: str, origin: str) -> type[Tokenizer]:
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # a broken plugin must not take the CLI down with a traceback
        raise TokenizerError(
            f"tokenizer kind '{kind}' ({origin}) failed to load: {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, Tokenizer)):
        raise TokenizerError(f"tokenizer kind '{kind}' ({origin}) is not a Tokenizer subclass")
    return obj


def get_tokenizer_class(kind: str) -> type[Tokenizer]:
    """The class for `kind`; TokenizerError listing the known kinds if there is none."""
    if kind in _registered:
        return _registered[kind]
    eps = _entry_points()
    if kind in eps:
        ep = eps[kind]
        dist = getattr(ep, "dist", None)
        origin = f"from package {dist.name}" if dist is not None else "entry point"
        return _load_target(kind, ep.value, origin)
    if kind in _BUILTIN:
        return _load_target(kind, _BUILTIN[kind], "built in")
    raise TokenizerError(
        f"unknown tokenizer kind '{kind}'; known kinds: {', '.join(available_kinds())}"
    )


def train_tokenizer(
    kind: str,
    stories: Iterable[str],
    vocab_size: int,
    output_dir: str | os.PathLike[str],
    **options: Any,
) -> Tokenizer:
    """Train a `kind` tokenizer on `stories` and save it to `output_dir` (replaced if present)."""
    cls = get_tokenizer_class(kind)
    if vocab_size is None or int(vocab_size) < 1:
        raise TokenizerError(f"vocab size must be a positive integer, got {vocab_size}")
    return cls.train(stories, int(vocab_size), Path(output_dir), **options)


def load_tokenizer(path: str | os.PathLike[str], kind: str | None = None) -> Tokenizer:
    """Load a tokenizer directory; checks its files against the recorded fingerprint.

    `kind`, when given, is the kind the caller expects; a directory of another kind is an
    error rather than a silent swap.
    """
    p = Path(path).expanduser()
    meta = read_tokenizer_meta(p)
    if kind is not None and meta["kind"] != kind:
        raise TokenizerError(f"{p} holds a '{meta['kind']}' tokenizer, expected '{kind}'")
    cls = get_tokenizer_class(meta["kind"])
    missing = [name for name in meta["files"] if not (p / name).is_file()]
    if missing:
        raise TokenizerError(
            f"{p} is incomplete: missing {', '.join(missing)}; re-train or restore the tokenizer"
        )
    if fingerprint_files(meta["kind"], p, meta["files"]) != meta["fingerprint"]:
        raise TokenizerError(
            f"{p}: files do not match the fingerprint in tokenizer.json (modified, corrupt or "
            "mixed from two tokenizers); re-train or restore the tokenizer"
        )
    tok = cls.from_dir(p.resolve(), meta)
    tok.path = p.resolve()
    return tok
