"""Bugs the type checker found (`make lint` runs mypy): each was a traceback on a damaged or
hostile input where the house promises one line naming the problem.

- a SentencePiece model whose field has the wrong wire type (a number where text belongs:
  `int.decode`), read by `slm-train import`;
- a JSON line Python's parser refuses with a plain `ValueError` (a number past its 4300-digit
  limit has no `.msg`) or a `RecursionError` (nesting too deep), in a `.jsonl` corpus and in
  `slm-generate --prompts`;
- a byte-level tokenizer.json whose added token's text is not a string (unhashable).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from slm_tui.cli.train import app as train_app
from slm_tui.errors import GenerationError, SlmError, TokenizerError
from slm_tui.generation.prompts import read_prompt_rows
from slm_tui.interop.hf_bytelevel import import_bytelevel
from slm_tui.interop.sp_model import parse_model

HUGE_NUMBER = '{"text": "a story", "n": ' + "1" * 5000 + "}\n"
DEEP = '{"text": ' + "[" * 100_000 + "\n"


def field(number: int, wire: int, payload: bytes) -> bytes:
    """One protobuf field (numbers and lengths below 128: one-byte varints)."""
    key = bytes([number << 3 | wire])
    if wire == 2:
        return key + bytes([len(payload)]) + payload
    return key + payload


PIECE = field(1, 2, field(1, 2, b"a"))  # one well-formed piece, "a"


@pytest.mark.parametrize(
    "model",
    [
        field(1, 2, field(1, 0, b"\x05")),
        field(1, 2, field(2, 0, b"\x05")),
        field(1, 2, field(1, 2, b"a") + field(3, 2, b"x")),
        PIECE + field(2, 2, field(3, 2, b"x")),
        PIECE + field(3, 2, field(1, 0, b"\x01")),
    ],
    ids=[
        "piece-text-a-number",
        "piece-score-a-number",
        "piece-type-bytes",
        "model-type-bytes",
        "normalizer-name-a-number",
    ],
)
def test_a_sentencepiece_field_of_the_wrong_wire_type_is_one_line(model):
    with pytest.raises(TokenizerError, match="is not a valid SentencePiece model"):
        parse_model(model, "tokenizer.model")


@pytest.mark.parametrize(
    ("text", "reason"),
    [(HUGE_NUMBER, "integer string conversion"), (DEEP, "nested too deeply")],
    ids=["huge-number", "deep-nesting"],
)
def test_a_jsonl_corpus_line_python_cannot_parse_is_one_line(tmp_path, text, reason):
    corpus = tmp_path / "stories.jsonl"
    corpus.write_text(text, encoding="utf-8")
    out = tmp_path / "tok"
    result = CliRunner().invoke(
        train_app,
        ["tokenizer", "--data-files", str(corpus), "--output", str(out), "--vocab-size", "300"],
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.output.strip()
    assert message.startswith("error:") and len(message.splitlines()) == 1, message
    assert f"{corpus}:1: invalid JSON" in message and reason in message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (HUGE_NUMBER.replace('"text"', '"prompt"'), "integer string conversion"),
        (DEEP.replace('"text"', '"prompt"'), "nested too deeply"),
    ],
    ids=["huge-number", "deep-nesting"],
)
def test_a_prompts_line_python_cannot_parse_is_one_line(tmp_path, text, reason):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Once"}\n' + text, encoding="utf-8")
    with pytest.raises(GenerationError, match="line 2 is not valid JSON") as caught:
        read_prompt_rows(prompts)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_an_added_token_whose_text_is_not_a_string_is_refused(tmp_path):
    spec = {
        "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "pre_tokenizer": {"type": "ByteLevel"},
        "added_tokens": [{"content": ["<|endoftext|>"], "id": 0, "special": True}],
    }
    with pytest.raises(SlmError, match="has no text or no whole-number id"):
        import_bytelevel(spec, None, {}, Path(tmp_path), [])
