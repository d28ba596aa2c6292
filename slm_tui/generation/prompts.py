"""Prompts for a batch job (`slm-generate`): from a file or stdin, as plain lines or JSONL.

A prompts file is JSONL (a `prompt` field per line) when the first non-blank line starts
with `{` or the name ends in .jsonl, else one prompt per non-blank line. Input is read with
a bound (`PROMPTS_LIMIT`); invalid UTF-8, invalid JSON, a row without a `prompt` text field
or an empty file is one `GenerationError` naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path

from slm_tui.errors import GenerationError
from slm_tui.untrusted import read_bounded

PROMPTS_LIMIT = 64 << 20  # bytes of a prompts file or of stdin


def read_prompts_file(path: Path) -> list[str]:
    """Prompts from a file: JSONL (a `prompt` field per line) when the first non-blank line
    starts with `{` or the name ends in .jsonl, else one prompt per non-blank line."""
    if path.is_dir():
        raise GenerationError(f"--prompts {path} is a directory; give a file")
    if not path.exists():
        raise GenerationError(f"--prompts {path}: no such file")
    return parse_prompts(read_bounded(path, PROMPTS_LIMIT, GenerationError), str(path))


def parse_prompts(data: bytes, origin: str) -> list[str]:
    lines = data.split(b"\n")
    decoded = []
    for n, raw in enumerate(lines, 1):
        try:
            decoded.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            raise GenerationError(f"{origin} line {n} is not valid UTF-8 text") from None
    first = next((line for line in decoded if line.strip()), "")
    jsonl = origin.endswith(".jsonl") or first.lstrip().startswith("{")
    out: list[str] = []
    for n, line in enumerate(decoded, 1):
        if not line.strip():
            continue
        if not jsonl:
            out.append(line)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GenerationError(f"{origin} line {n} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise GenerationError(f'{origin} line {n} has no "prompt" text field')
        out.append(obj["prompt"])
    if not out:
        raise GenerationError(f"{origin} holds no prompts")
    return out
