"""Our tokenizers as Hugging Face `tokenizer.json` files, built from the SentencePiece model.

`hf_tokenizer_files(tok, context_length)` returns the files of a Hugging Face tokenizer
folder (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, and
`tokenizer.model`, a copy of the SentencePiece model) that `AutoTokenizer.from_pretrained`
loads as a `PreTrainedTokenizerFast`, with no custom code and no conversion at load time.

Notable (each checked by tests/test_interop.py against `AutoTokenizer` on adversarial text):
- Written directly, not by transformers' converter (which needs `protobuf` and adds a
  Metaspace pre-tokenizer that splits "▁▁▁hello" where SentencePiece does not).
- BPE only. A SentencePiece unigram model is refused: transformers' Unigram model would
  read control and byte pieces ("<s>", "<0x41>") out of the text, which SentencePiece never
  does. Merges: every split of every normal piece into two normal pieces, ranked by the
  merged piece's score (SentencePiece merges the best-scored pair first, leftmost on ties).
- No pre-tokenizer: SentencePiece's BPE merges over the whole text, not word by word.
- Our `spm` kinds keep a literal "▁" in the input as three byte pieces: their pieces are
  written with real spaces and no normalizer touches the text, so transformers does the
  same. The `sentencepiece` kind (imported models) reads "▁" as a space, as SentencePiece
  does: pieces keep "▁" and a normalizer replaces spaces; a dummy prefix is a `Prepend`
  normalizer and a `Strip` decoder.
- User-defined pieces ("\\n\\n", "\\n") are added tokens, matched before the model
  runs, longest first, as SentencePiece matches them; control pieces (`<s>`, `</s>`,
  `<pad>`, `<unk>`: SentencePiece's own names, not `<bos>`/`<eos>`, which would add tokens)
  are special tokens not read out of the text (`split_special_tokens`), as in SentencePiece.
- `tok(text)` adds BOS (a post-processor), as our prompts are BOS + text;
  `add_special_tokens=False` gives the bare ids. `clean_up_tokenization_spaces` is off.
- The `byte` kind becomes a BPE with no merges and byte fallback for every character.
- The byte-level kinds (`gpt2`, `bytelevel-bpe`) become GPT-2-style byte-level BPE files:
  hf_bytelevel.py.
"""

from __future__ import annotations

import json
from typing import Any

from slm_tui.interop.common import InteropError
from slm_tui.interop.hf_bytelevel import BYTELEVEL_KINDS, bytelevel_files
from slm_tui.interop.sp_model import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    SentencePieceModel,
    parse_model,
)
from slm_tui.tokenizers import Tokenizer

SPACE = "\u2581"
SP_KINDS = ("sentencepiece-bpe", "sentencepiece-unigram", "sentencepiece")


def sentencepiece_model(tok: Tokenizer) -> tuple[SentencePieceModel, bytes]:
    """The parsed SentencePiece model of a SentencePiece-kind tokenizer, and its bytes."""
    if tok.kind not in SP_KINDS or tok.path is None:
        raise InteropError(f"tokenizer kind '{tok.kind}' has no SentencePiece model")
    name = tok.files[0]
    data = (tok.path / name).read_bytes()
    return parse_model(data, f"{tok.path / name}"), data


def check_exportable(model: SentencePieceModel, fmt: str) -> None:
    """Refuse, naming the feature, a SentencePiece model an exporter cannot reproduce."""
    problems = []
    if model.model_type not in ("bpe", "unigram"):
        problems.append(f"model type {model.model_type}")
    if not model.identity_normalization():
        problems.append(f"text normalization '{model.normalizer_name or 'custom rules'}'")
    if model.remove_extra_whitespaces:
        problems.append("remove_extra_whitespaces")
    if not model.escape_whitespaces:
        problems.append("escape_whitespaces off")
    if model.treat_whitespace_as_suffix:
        problems.append("treat_whitespace_as_suffix")
    if model.ids_of_type(UNUSED):
        problems.append("unused pieces")
    if not model.byte_fallback:
        problems.append("no byte fallback")
    if model.add_dummy_prefix and model.ids_of_type(USER_DEFINED):
        problems.append("a dummy prefix together with user-defined pieces")
    if problems:
        raise InteropError(
            f"the tokenizer cannot be written as {fmt} exactly: its SentencePiece model has "
            f"{', '.join(problems)}"
        )


def _surface(piece: str) -> str:
    return piece.replace(SPACE, " ")


def sentencepiece_tokenizer_json(model: SentencePieceModel, kind: str) -> dict[str, Any]:
    """tokenizer.json (as a dict) that segments text as our `kind` runs `model`."""
    check_exportable(model, "a Hugging Face tokenizer")
    if model.model_type != "bpe":
        raise InteropError(
            f"a SentencePiece {model.model_type} tokenizer has no exact Hugging Face form: its "
            "Unigram model would read control and byte pieces ('<s>', '<0x41>') out of the "
            "text, which SentencePiece never does; Hugging Face export needs a BPE tokenizer"
        )
    # Our own kinds keep a literal "▁" as three bytes: pieces are stored with real spaces and
    # no normalizer touches the text. The `sentencepiece` kind reads "▁" as a space, as
    # SentencePiece does: pieces keep "▁" and a normalizer turns spaces into it.
    literal = kind != "sentencepiece"
    pieces = model.pieces
    specials = {i for i, p in enumerate(pieces) if p.type in (CONTROL, UNKNOWN)}
    surface = [
        p.text if (i in specials or p.type == BYTE or not literal) else _surface(p.text)
        for i, p in enumerate(pieces)
    ]
    if len(set(surface)) != len(surface):
        raise InteropError("the tokenizer has two pieces with the same text; not exportable")
    vocab = {s: i for i, s in enumerate(surface)}
    normal = {s: i for i, s in enumerate(surface) if pieces[i].type == NORMAL}
    merges = []
    for i, s in enumerate(surface):
        if pieces[i].type != NORMAL:
            continue
        for k in range(1, len(s)):
            left, right = s[:k], s[k:]
            if left in normal and right in normal:
                merges.append((-pieces[i].score, normal[left], normal[right], left, right))
    merges.sort(key=lambda m: m[:3])
    tok_model = {
        "type": "BPE",
        "dropout": None,
        "unk_token": surface[model.unk_id],
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": True,
        "byte_fallback": True,
        "ignore_merges": False,
        "vocab": vocab,
        "merges": [[m[3], m[4]] for m in merges],
    }
    added = [
        {"id": i, "content": surface[i], "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": i in specials}
        for i, p in enumerate(pieces)
        if i in specials or p.type == USER_DEFINED
    ]  # fmt: skip
    space = " " if literal else SPACE
    steps: list[dict[str, Any]] = (
        [{"type": "Prepend", "prepend": space}] if model.add_dummy_prefix else []
    )
    if not literal:
        steps.append({"type": "Replace", "pattern": {"String": " "}, "content": SPACE})
    decoders: list[dict[str, Any]] = [{"type": "ByteFallback"}, {"type": "Fuse"}]
    if not literal:
        decoders.insert(0, {"type": "Replace", "pattern": {"String": SPACE}, "content": " "})
    if model.add_dummy_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    normalizer = {"type": "Sequence", "normalizers": steps} if steps else None
    return _tokenizer_json(
        tok_model, added, normalizer, decoders, surface[model.bos_id], model.bos_id
    )


def byte_tokenizer_json(tok: Tokenizer) -> dict[str, Any]:
    """tokenizer.json for the `byte` kind: 256 byte pieces, byte fallback for everything."""
    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    names = {tok.pad_id: "<pad>", tok.unk_id: "<unk>", tok.bos_id: "<bos>", tok.eos_id: "<eos>"}
    vocab.update({name: i for i, name in names.items()})
    tok_model: dict[str, Any] = {
        "type": "BPE",
        "dropout": None,
        "unk_token": "<unk>",
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": True,
        "ignore_merges": False,
        "vocab": vocab,
        "merges": [],
    }
    added = [
        {"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, name in sorted(names.items())
    ]  # fmt: skip
    decoders = [{"type": "ByteFallback"}, {"type": "Fuse"}]
    return _tokenizer_json(tok_model, added, None, decoders, "<bos>", tok.bos_id)


def _tokenizer_json(
    model: dict[str, Any],
    added: list[dict[str, Any]],
    normalizer: dict[str, Any] | None,
    decoders: list[dict[str, Any]],
    bos: str,
    bos_id: int,
) -> dict[str, Any]:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
        },
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": model,
    }


def hf_tokenizer_files(tok: Tokenizer, context_length: int) -> dict[str, bytes]:
    """File name -> bytes of a Hugging Face tokenizer folder equivalent to `tok`."""
    files: dict[str, bytes] = {}
    if tok.kind in SP_KINDS:
        model, data = sentencepiece_model(tok)
        tokenizer_json = sentencepiece_tokenizer_json(model, tok.kind)
        names = {k: model.pieces[i].text for k, i in _special_ids(tok).items()}
        files["tokenizer.model"] = data
    elif tok.kind == "byte":
        tokenizer_json = byte_tokenizer_json(tok)
        names = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}
    elif tok.kind in BYTELEVEL_KINDS:
        tokenizer_json, names, extra = bytelevel_files(tok)
        files.update(extra)
    else:
        raise InteropError(
            f"tokenizer kind '{tok.kind}' has no Hugging Face form; exportable kinds: "
            f"{', '.join((*SP_KINDS, 'byte', *BYTELEVEL_KINDS))}"
        )
    special_map = {f"{k}_token": v for k, v in names.items()}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": True,
        "model_max_length": context_length,
        "padding_side": "left",
    }
    files["tokenizer.json"] = _dump(tokenizer_json)
    files["tokenizer_config.json"] = _dump(config)
    files["special_tokens_map.json"] = _dump(special_map)
    return files


def _special_ids(tok: Tokenizer) -> dict[str, int]:
    ids = {"bos": tok.bos_id, "eos": tok.eos_id, "unk": tok.unk_id, "pad": tok.pad_id}
    return {k: v for k, v in ids.items() if v is not None and v >= 0}


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
