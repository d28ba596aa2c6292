"""The tokenizer of a Hugging Face folder as one of our kinds, checked against transformers.

`import_tokenizer(folder, work)` returns a saved `Tokenizer` that segments text exactly as
the folder's own tokenizer does, or refuses with one line naming what cannot be held.

Notable:
- A SentencePiece model (`tokenizer.model`) is required: its pieces, scores and rules are
  the tokenizer. It becomes `sentencepiece-bpe` / `sentencepiece-unigram` when it follows
  our conventions (identity normalization, no dummy prefix, byte fallback, pad/unk/bos/eos;
  an export of ours comes back as the same files, so the same fingerprint), else the
  `sentencepiece` kind, which runs any SentencePiece model as SentencePiece does (Llama-2's
  tokenizer: dummy prefix, no pad piece).
- When the folder also has `tokenizer.json` (what `AutoTokenizer` loads), the candidate kind
  must give the same ids as `AutoTokenizer` on probe text (spaces, newlines, CRLF, tabs,
  emoji, CJK, a literal "▁", unseen characters); a disagreement, or added tokens beyond the
  SentencePiece vocabulary, is refused. Left out of the probe, two known differences where
  the import follows SentencePiece (the model's own tokenizer): literal special-token names
  (transformers reads "<s>" in text as BOS, SentencePiece and we as text) and, with a dummy
  prefix, text that starts with a space (transformers' Metaspace then adds no "▁").
- A byte-level BPE `tokenizer.json` (GPT-2's, GPT-Neo's, ours) becomes the `gpt2` or the
  `bytelevel-bpe` kind (hf_bytelevel.py), checked against `AutoTokenizer` on probe text.
  Another `tokenizer.json` with no SentencePiece model is refused, except the exact form
  our `byte` kind exports to.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slm_tui.errors import SlmError
from slm_tui.interop.common import InteropError, check_size, read_json, read_limited
from slm_tui.interop.hf_bytelevel import import_bytelevel, is_bytelevel, read_spec
from slm_tui.interop.hf_tokenizer import byte_tokenizer_json
from slm_tui.interop.sp_model import UNUSED, SentencePieceModel, parse_model
from slm_tui.tokenizers import Tokenizer
from slm_tui.tokenizers.byte import ByteTokenizer
from slm_tui.tokenizers.spm import SentencePieceBPE, SentencePieceUnigram
from slm_tui.tokenizers.spm_model import SentencePieceModel as AsFound  # the kind

SP_LIMIT = 64 << 20
# tokenizer.json: a 256k-piece vocabulary with its merges is ~35 MB; transformers holds
# several times a file's size in memory while it reads one.
JSON_LIMIT = 64 << 20
SMALL_JSON = 4 << 20
# What AutoTokenizer reads whole, with the size each may have (checked before it runs).
READ_BY_TRANSFORMERS = {
    "tokenizer.json": JSON_LIMIT,
    "tokenizer_config.json": SMALL_JSON,
    "special_tokens_map.json": SMALL_JSON,
    "added_tokens.json": SMALL_JSON,
    "chat_template.json": SMALL_JSON,
    "chat_template.jinja": SMALL_JSON,
}
PROBES = [
    "Once upon a time, there was a little girl named Lily.",
    'She said, "Look!" and ran\nto the park.\n\nThe end.',
    "  leading, trailing  and many     spaces ",
    "tabs\there\t\tand\r\nwindows line endings\r\n",
    "emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷",
    "CJK 漢字かなカナ 한국어, unseen: Ω ∑ ≈ ç √ ж ש ع",
    "a literal ▁ and ▁▁ here▁",
    "digits 1234567890 and 3.14159 and Zyxwvq-quokkafied",
    "\n\n\nx\n",
]
# Byte-level tokenizers are also probed with what GPT-2's pattern splits in odd ways: long
# runs of spaces and newlines, a lone "\r", NUL, contractions, and its own byte spellings.
BYTELEVEL_PROBES = [
    *PROBES,
    " " * 40 + "x" + "\n" * 9 + "\t \t",
    "lone\rreturn and NUL\x00 and \x1b[0m escapes",
    "they'll we've I'm it's O'Neil's 'quoted'",
    "GPT-2 spellings: Ġ Ċ âĢĻ ĠĠ",
]


def conventional_kind(sp: SentencePieceModel) -> str | None:
    """`sentencepiece-bpe`/`-unigram` if the model follows the settings our kinds train with."""
    ok = (
        sp.model_type in ("bpe", "unigram")
        and sp.identity_normalization()
        and not sp.add_dummy_prefix
        and not sp.remove_extra_whitespaces
        and sp.escape_whitespaces
        and not sp.treat_whitespace_as_suffix
        and sp.byte_fallback
        and min(sp.pad_id, sp.unk_id, sp.bos_id, sp.eos_id) >= 0
        and not sp.ids_of_type(UNUSED)
    )
    return f"sentencepiece-{sp.model_type}" if ok else None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' log lines and warnings off (the CLI's output is one line on error)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)


def _reference(folder: Path) -> Any:
    """`AutoTokenizer` on the folder (local files, no remote code), after the files it reads
    whole have passed their bounds (`READ_BY_TRANSFORMERS`)."""
    for name, limit in READ_BY_TRANSFORMERS.items():
        check_size(folder / name, limit)
        if name.endswith(".json") and limit <= SMALL_JSON and (folder / name).is_file():
            read_json(folder / name, limit)  # nested too deeply: one line, not a crash
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise InteropError(
            "importing a Hugging Face tokenizer needs transformers: pip install 'slm-tui[interop]'"
        ) from None
    try:
        with _quiet():
            return AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            )
    except Exception as exc:  # transformers raises many types for a bad folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InteropError(
            f"transformers cannot load the tokenizer in {folder} "
            f"({type(exc).__name__}: {first[:200]})"
        ) from None


def _disagreement(tok: Tokenizer, ref: Any, dummy_prefix: bool) -> str | None:
    """The first probe text whose ids differ between `tok` and the reference, if any.

    With a dummy prefix, text that starts with a space is left out: transformers' Metaspace
    adds no "▁" before a text that already starts with one, SentencePiece always adds it
    (" a" is ["▁", "▁a"] in SentencePiece, ["▁a"] in transformers). The import follows
    SentencePiece, the model's own tokenizer."""
    for text in PROBES:
        if dummy_prefix:
            text = text.lstrip(" ")
        with _quiet():
            theirs = ref(text, add_special_tokens=False)["input_ids"]
        if tok.encode(text) != list(theirs):
            return text
    return None


_CONVENTIONAL = {
    "sentencepiece-bpe": SentencePieceBPE,
    "sentencepiece-unigram": SentencePieceUnigram,
}


def _build(kind: str, data: bytes, sp: SentencePieceModel, out: Path) -> Tokenizer:
    tok: Tokenizer
    if kind == "sentencepiece":
        tok = AsFound(data, None, {"imported": True})
    else:
        tok = _CONVENTIONAL[kind](data, None, {"model_type": sp.model_type, "imported": True})
    tok.save(out)
    return tok


def import_tokenizer(folder: Path, work: Path) -> Tokenizer:
    """The folder's tokenizer as one of our kinds, saved under `work` (a scratch folder)."""
    model_file, tokenizer_json = folder / "tokenizer.model", folder / "tokenizer.json"
    check_size(tokenizer_json, JSON_LIMIT)  # a FIFO or a huge one: refused, not skipped
    if model_file.is_file():
        data = read_limited(model_file, SP_LIMIT)
        sp = parse_model(data, str(model_file))
        if sp.model_type not in ("bpe", "unigram"):
            raise InteropError(
                f"{model_file} is a SentencePiece {sp.model_type} model; only bpe and unigram "
                "models are supported"
            )
        ref = _reference(folder) if tokenizer_json.is_file() else None
        if ref is not None and len(ref) != len(sp.pieces):
            raise InteropError(
                f"the folder's tokenizer has {len(ref)} tokens but its SentencePiece model "
                f"{len(sp.pieces)}: added tokens cannot be held by a SentencePiece tokenizer"
            )
        kinds = [k for k in (conventional_kind(sp), "sentencepiece") if k]
        first_bad = None
        for kind in kinds:
            try:
                tok = _build(kind, data, sp, work / kind)
            except SlmError as exc:
                raise InteropError(f"{model_file} cannot be used: {exc}") from None
            bad = _disagreement(tok, ref, sp.add_dummy_prefix) if ref is not None else None
            if bad is None:
                return tok
            first_bad = first_bad or bad
        assert first_bad is not None  # "sentencepiece" is always tried
        raise InteropError(
            f"the folder's tokenizer.json and tokenizer.model segment text differently (e.g. "
            f"{first_bad[:40]!r}); its tokenization cannot be held exactly"
        )
    if tokenizer_json.is_file():
        spec = read_spec(tokenizer_json)
        if is_bytelevel(spec):  # GPT-2's tokenizer and other byte-level BPEs (hf_bytelevel.py)
            config = _ids_of_config(folder)
            return import_bytelevel(spec, _reference(folder), config, work, BYTELEVEL_PROBES)
        return _byte_or_refuse(tokenizer_json, work)
    raise InteropError(
        f"{folder} has no tokenizer (tokenizer.model or tokenizer.json); "
        "a checkpoint needs its tokenizer"
    )


def _ids_of_config(folder: Path) -> dict[str, Any]:
    """config.json's special ids (bos/eos/pad/unk_token_id), or {} when it has none."""
    try:
        config = read_json(folder / "config.json", 4 << 20)
    except SlmError:
        return {}
    if not isinstance(config, dict):
        return {}
    return {k: v for k, v in config.items() if k.endswith("_token_id")}


def _byte_or_refuse(path: Path, work: Path) -> Tokenizer:
    spec = read_json(path, JSON_LIMIT)
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict):
        raise InteropError(f"{path} is not a tokenizers file (no model)")
    byte = ByteTokenizer()
    if model == byte_tokenizer_json(byte)["model"]:
        byte.save(work / "byte")
        return byte
    kind = model.get("type", "unknown")
    pre = spec.get("pre_tokenizer") or {}
    detail = f", pre-tokenizer {pre.get('type')}" if isinstance(pre, dict) and pre else ""
    raise InteropError(
        f"the tokenizer is a {kind} tokenizer.json without a SentencePiece model "
        f"(tokenizer.model){detail}; only SentencePiece tokenizers can be imported exactly"
    )
