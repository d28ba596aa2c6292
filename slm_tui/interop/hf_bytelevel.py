"""Byte-level BPE tokenizers (`gpt2`, `bytelevel-bpe`) to and from Hugging Face and GGUF.

- `bytelevel_parts(tok)`: the vocabulary (pieces in GPT-2's byte spelling, specials by
  name), the merges in order and the special ids: what every byte-level format stores. For
  the `gpt2` kind the merges are derived from the ranks (bytemap.derive_merges: OpenAI's
  vocab.bpe, byte for byte).
- `bytelevel_tokenizer_json(tok)`: the `tokenizer.json` transformers loads as a
  `PreTrainedTokenizerFast`: GPT-2's ByteLevel pre-tokenizer (its regex, no prefix space),
  BPE with the merges, the ByteLevel decoder, specials as special added tokens (not read out
  of text, `split_special_tokens`, as tiktoken's `encode_ordinary` and our kinds do), and
  BOS added by `tok(text)` as our prompts are BOS + text (`add_special_tokens=False`: the
  bare ids, tiktoken's). The export also writes `vocab.json` and `merges.txt`, the files a
  `GPT2Tokenizer` reads.
- `import_bytelevel(folder, ...)`: a Hugging Face folder's byte-level BPE as our `gpt2`
  kind (when it is GPT-2's vocabulary and merges: GPT-2, GPT-Neo, the TinyStories models) or
  our `bytelevel-bpe` kind, checked against `AutoTokenizer` on probe text; anything else
  in its pipeline (a normalizer, a prefix space, another pre-tokenizer, non-special added
  tokens, a vocabulary without every byte) is refused with one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slm_tui.errors import SlmError
from slm_tui.interop.common import InteropError, read_json
from slm_tui.tokenizers import Tokenizer
from slm_tui.tokenizers.bytelevel import ByteLevelBPE, merges_file, read_merges
from slm_tui.tokenizers.bytemap import ENDOFTEXT, derive_merges, piece_bytes, piece_string
from slm_tui.tokenizers.gpt2 import EOT_ID, GPT2Tokenizer, ranks_from_vocab

BYTELEVEL_KINDS = ("gpt2", "bytelevel-bpe")
JSON_LIMIT = 256 << 20
PRE_TOKENIZER = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": True}  # fmt: skip
_GPT2_MERGES: list[tuple[str, str]] | None = None  # derived once per process (~0.5 s)


def bytelevel_parts(tok: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]], dict[int, str]]:
    """(vocab piece -> id, merges, special id -> name) of a byte-level kind."""
    global _GPT2_MERGES
    if isinstance(tok, GPT2Tokenizer):
        vocab = {piece_string(b): i for b, i in tok.ranks.items()}
        vocab[ENDOFTEXT] = EOT_ID
        if _GPT2_MERGES is None:
            _GPT2_MERGES = [(piece_string(a), piece_string(b)) for a, b in derive_merges(tok.ranks)]
        return dict(sorted(vocab.items(), key=lambda kv: kv[1])), _GPT2_MERGES, {EOT_ID: ENDOFTEXT}
    if isinstance(tok, ByteLevelBPE):
        names = {i: p for p, i in tok.vocab.items()}
        specials = {i: names[i] for i in tok.special_ids.values() if i >= 0}
        return dict(tok.vocab), list(tok.merges), specials
    raise InteropError(f"tokenizer kind '{tok.kind}' is not a byte-level BPE")


def bytelevel_tokenizer_json(tok: Tokenizer) -> dict[str, Any]:
    from slm_tui.interop.hf_tokenizer import _tokenizer_json

    vocab, merges, specials = bytelevel_parts(tok)
    model = {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": False,
        "vocab": vocab,
        "merges": [f"{a} {b}" for a, b in merges],  # the form every tokenizers version reads
    }
    added = [
        {"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, name in sorted(specials.items())
    ]  # fmt: skip
    decoders = [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": True}]  # fmt: skip
    spec = _tokenizer_json(model, added, None, decoders, specials[tok.bos_id], tok.bos_id)
    spec["pre_tokenizer"] = dict(PRE_TOKENIZER)
    return spec


def bytelevel_files(tok: Tokenizer) -> tuple[dict[str, Any], dict[str, str], dict[str, bytes]]:
    """(tokenizer.json, special token names by role, extra files: vocab.json, merges.txt)."""
    vocab, merges, specials = bytelevel_parts(tok)
    roles = {"bos": tok.bos_id, "eos": tok.eos_id, "unk": tok.unk_id, "pad": tok.pad_id}
    names = {role: specials[i] for role, i in roles.items() if i >= 0 and i in specials}
    extra = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False).encode("utf-8"),
        "merges.txt": merges_file(merges).encode("utf-8"),
    }
    return bytelevel_tokenizer_json(tok), names, extra


# ---- import -------------------------------------------------------------------------------
def _refuse(what: str) -> InteropError:
    return InteropError(f"the byte-level tokenizer cannot be held exactly: {what}")


def _pipeline_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    if spec.get("normalizer") is not None:
        problems.append("a normalizer")
    pre = spec.get("pre_tokenizer") or {}
    if not isinstance(pre, dict) or pre.get("type") != "ByteLevel":
        kind = pre.get("type") if isinstance(pre, dict) else pre
        problems.append(f"pre-tokenizer {kind!r} (GPT-2's ByteLevel is needed)")
    else:
        if pre.get("add_prefix_space"):
            problems.append("add_prefix_space")
        if not pre.get("use_regex", True):
            problems.append("ByteLevel without GPT-2's split pattern")
    model = spec.get("model") or {}
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            problems.append(f"BPE {key} {model.get(key)!r}")
    if model.get("byte_fallback") or model.get("ignore_merges"):
        problems.append("BPE byte_fallback/ignore_merges")
    return problems


def is_bytelevel(spec: Any) -> bool:
    """A tokenizer.json whose model is BPE and whose pre-tokenizer is ByteLevel."""
    return (
        isinstance(spec, dict)
        and isinstance(spec.get("model"), dict)
        and spec["model"].get("type") == "BPE"
        and isinstance(spec.get("pre_tokenizer"), dict)
        and spec["pre_tokenizer"].get("type") == "ByteLevel"
    )


def read_spec(path: Path) -> Any:
    """A tokenizer.json, bounded and with one-line errors (`read_json`)."""
    return read_json(path, JSON_LIMIT)


def import_bytelevel(
    spec: dict[str, Any], ref: Any, config: dict[str, Any], work: Path, probes: list[str]
) -> Tokenizer:
    """`spec` (a byte-level tokenizer.json) as our `gpt2` or `bytelevel-bpe` kind, saved under
    `work`; `ref` is AutoTokenizer on the same folder, the judge of the probes."""
    problems = _pipeline_problems(spec)
    if problems:
        raise _refuse(", ".join(problems))
    model = spec["model"]
    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise _refuse("tokenizer.json has no vocabulary")
    try:
        pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
                 for m in model.get("merges") or []]  # fmt: skip
        merges = read_merges("".join(f"{a} {b}\n" for a, b in pairs))
    except (TypeError, ValueError, SlmError):
        raise _refuse("its merges are not pairs of pieces") from None
    specials: dict[str, int] = {}
    vocab = dict(vocab)
    for added in spec.get("added_tokens") or []:
        if not isinstance(added, dict):
            raise _refuse("an added token is not an object")
        content, i = added.get("content"), added.get("id")
        if not added.get("special"):
            raise _refuse(f"the added token {content!r:.30} is read out of text")
        if not isinstance(content, str) or not isinstance(i, int) or isinstance(i, bool):
            raise _refuse(f"the added token {content!r:.30} has no text or no whole-number id")
        if vocab.get(content, i) != i:
            raise _refuse(f"the added token {content!r:.30} has two ids")
        vocab[content] = i
        specials[content] = i
    singles = {piece_bytes(p) for p in vocab if p not in specials and len(p) == 1}
    if len(singles - {None}) != 256:
        raise _refuse("not every byte has a piece, so text could be lost")
    ids = _special_ids(ref, config, specials)
    candidates = []
    if set(specials) <= {ENDOFTEXT} and ids["bos"] == ids["eos"] == EOT_ID:
        try:
            ranks = ranks_from_vocab(vocab, "tokenizer.json")
            candidates.append(lambda: _gpt2_if_same_merges(ranks, merges))
        except SlmError:
            pass
    candidates.append(lambda: _bytelevel(vocab, merges, ids, specials))
    first_bad = None
    for build in candidates:
        tok = build()
        if tok is None:
            continue
        bad = _disagreement(tok, ref, probes)
        if bad is None:
            tok.save(work / tok.kind)
            return tok
        first_bad = first_bad or bad
    assert first_bad is not None  # the last candidate always builds
    raise _refuse(f"transformers segments {first_bad[:40]!r} differently from ours")


def _special_ids(ref: Any, config: dict[str, Any], specials: dict[str, int]) -> dict[str, int]:
    """bos, eos, pad, unk: config.json's ids where it gives them, else the tokenizer's."""

    def pick(key: str) -> int:
        theirs = config.get(f"{key}_token_id")
        if isinstance(theirs, int) and not isinstance(theirs, bool) and theirs >= 0:
            return theirs
        theirs = getattr(ref, f"{key}_token_id", None)
        return theirs if isinstance(theirs, int) and theirs >= 0 else -1

    ids = {k: pick(k) for k in ("bos", "eos", "pad", "unk")}
    if ids["eos"] < 0:
        raise _refuse("it has no end-of-text token (eos_token_id)")
    if ids["bos"] < 0:
        ids["bos"] = ids["eos"]  # GPT-2's convention: one token begins and ends a text
    if ids["pad"] < 0:
        ids["pad"] = ids["eos"]
    for key, i in ids.items():
        if i >= 0 and i not in specials.values():
            raise _refuse(f"its {key} id {i} is not a special token")
    return ids


def _gpt2_if_same_merges(
    ranks: dict[bytes, int], merges: list[tuple[str, str]]
) -> Tokenizer | None:
    tok = GPT2Tokenizer(ranks, None, {"imported": True})
    _vocab, ours, _specials = bytelevel_parts(tok)
    return tok if list(merges) == ours else None


def _bytelevel(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    ids: dict[str, int],
    specials: dict[str, int],
) -> Tokenizer:
    names = {f"special_{i}": i for i in specials.values()}
    try:
        return ByteLevelBPE(vocab, merges, {**names, **ids}, None, {"imported": True})
    except SlmError as exc:
        raise _refuse(str(exc)) from None


def _disagreement(tok: Tokenizer, ref: Any, probes: list[str]) -> str | None:
    from slm_tui.interop.hf_tokenizer_import import _quiet

    for text in probes:
        with _quiet():
            theirs = ref(text, add_special_tokens=False)["input_ids"]
        if tok.encode(text) != list(theirs):
            return text
    return None
