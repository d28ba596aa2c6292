"""Prompts for a batch job (`slm-generate`): from a file or stdin, as plain lines or JSONL.

A prompts file is JSONL (a `prompt` field per line) when the first non-blank line starts
with `{` or the name ends in .jsonl, else one prompt per non-blank line. Input is read with
a bound (`PROMPTS_LIMIT`); invalid UTF-8, invalid JSON, a row without a `prompt` text field
or an empty file is one `GenerationError` naming the file and line.

A JSONL row may carry a brief: `{"prompt": "...", "brief": {"words": [...], "name": "...",
"features": [...]}}` (`PromptRow.brief`; checked like any brief, an error naming the line).
A row without one (or `"brief": null`) has `brief` None: the caller's brief applies; `{}`
is an empty brief: none for that row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from slm_tui.briefs import Brief
from slm_tui.errors import GenerationError
from slm_tui.untrusted import json_problem, read_bounded

PROMPTS_LIMIT = 64 << 20  # bytes of a prompts file or of stdin


class PromptRow(NamedTuple):
    prompt: str
    brief: Brief | None = None  # None: the row names none (an empty Brief: it asks for none)


def read_prompts_file(path: Path) -> list[str]:
    """Prompts from a file (`read_prompt_rows` without the briefs)."""
    return [row.prompt for row in read_prompt_rows(path)]


def parse_prompts(data: bytes, origin: str) -> list[str]:
    return [row.prompt for row in parse_prompt_rows(data, origin)]


def read_prompt_rows(path: Path) -> list[PromptRow]:
    """Prompts from a file: JSONL (a `prompt` field per line, a `brief` where given) when
    the first non-blank line starts with `{` or the name ends in .jsonl, else one prompt per
    non-blank line."""
    if path.is_dir():
        raise GenerationError(f"--prompts {path} is a directory; give a file")
    if not path.exists():
        raise GenerationError(f"--prompts {path}: no such file")
    return parse_prompt_rows(read_bounded(path, PROMPTS_LIMIT, GenerationError), str(path))


def parse_prompt_rows(data: bytes, origin: str) -> list[PromptRow]:
    lines = data.split(b"\n")
    decoded = []
    for n, raw in enumerate(lines, 1):
        try:
            decoded.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            raise GenerationError(f"{origin} line {n} is not valid UTF-8 text") from None
    first = next((line for line in decoded if line.strip()), "")
    jsonl = origin.endswith(".jsonl") or first.lstrip().startswith("{")
    out: list[PromptRow] = []
    for n, line in enumerate(decoded, 1):
        if not line.strip():
            continue
        if not jsonl:
            out.append(PromptRow(line))
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise GenerationError(
                f"{origin} line {n} is not valid JSON ({json_problem(exc)})"
            ) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise GenerationError(f'{origin} line {n} has no "prompt" text field')
        brief = None
        if obj.get("brief") is not None:
            try:
                brief = Brief.from_dict(obj["brief"])
            except GenerationError as exc:
                raise GenerationError(f"{origin} line {n}: {exc}") from None
        out.append(PromptRow(obj["prompt"], brief))
    if not out:
        raise GenerationError(f"{origin} holds no prompts")
    return out
