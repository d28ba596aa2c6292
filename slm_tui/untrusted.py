"""Reading files this process did not write: size bounds, YAML without aliases, typed fields.

Every file read from a checkpoint, a tokenizer folder, a shard sidecar, a config or a
prompts file may be damaged or hostile. The readers here make each such read end in one
line naming the file and the problem (the caller's `SlmError` subclass), in bounded time
and memory:
- `read_bounded`: at most `limit` bytes, checked before reading (and again while reading,
  for pipes and files that grow).
- `load_yaml`: `yaml.safe_load` that refuses anchors and aliases before anything is built
  (a 1 KB "billion laughs" file expands to gigabytes when walked); configs never need them.
- `check_fields`: the types (and ranges) of a JSON object's fields.
- `short_repr` / `short_text`: a value in a message, cut to a few dozen characters however
  big it is.
- `json_problem`: why `json.loads` refused a text, in a few words (its `ValueError`s are not
  all `JSONDecodeError`s, and deep nesting is a `RecursionError`).
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from slm_tui.errors import SlmError

KiB, MiB = 1 << 10, 1 << 20
JSON_LIMIT = 1 * MiB  # meta.json, tokenizer.json, shard sidecars
YAML_LIMIT = 1 * MiB  # config.yaml, keys.yaml

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 2, 40, 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4


def short_repr(value: Any) -> str:
    """`repr(value)`, bounded (nested and huge values are cut with `...`)."""
    return _repr.repr(value)


def short_text(value: Any, limit: int = 60) -> str:
    """`str(value)` cut to `limit` characters (a key or name from a file, in a message)."""
    text = str(value) if isinstance(value, str) else short_repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_problem(exc: ValueError | RecursionError) -> str:
    """Why `json.loads` refused a text: the parser's message (no position), a number too
    long to convert (Python's digit limit), or nesting too deep."""
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0]


def size_text(n: int) -> str:
    """1048576 -> '1 MiB'; 4096 -> '4 KiB'."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def read_bounded(path: Path, limit: int, error: type[SlmError], what: str | None = None) -> bytes:
    """The bytes of `path`, refused with `error` when there are more than `limit`."""
    name = what or str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise error(
                    f"{name} is {size_text(size)}, more than the {size_text(limit)} such a file "
                    "may hold"
                )
            data = f.read(limit + 1)
    except IsADirectoryError:
        raise error(f"{name} is a directory, not a file") from None
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except OSError as exc:
        raise error(f"{name} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise error(f"{name} holds more than {size_text(limit)}; refused")
    return data


def decode_text(data: bytes, error: type[SlmError], name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{name} is not UTF-8 text (byte {exc.start})") from None


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that stops at the first anchor or alias, before any node is built."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            mark = event.start_mark
            raise yaml.composer.ComposerError(
                None, None, f"YAML anchors and aliases (&{anchor}, *{anchor}) are not allowed", mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str, error: type[SlmError], name: str) -> Any:
    """`yaml.safe_load(text)` without anchors or aliases; `error` naming `name` and the line."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or ""
        if "anchors and aliases" in problem:
            raise error(
                f"{name} uses a YAML anchor or alias{where}; they are not allowed here, "
                "write the values out"
            ) from None
        raise error(f"{name} is not valid YAML{where}") from None
    except RecursionError:
        raise error(f"{name} is nested too deeply to be a config") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Field kinds for `check_fields`: a name, or ("int", lowest, highest) for a bounded integer.
def _fits(kind: Any, value: Any) -> bool:
    if isinstance(kind, tuple):  # ("int", minimum, maximum)
        _, low, high = kind
        return _is_int(value) and low <= value <= high
    if kind == "int":
        return _is_int(value) and value >= 0
    if kind == "number?":  # a finite or non-finite number, or null
        return value is None or _is_number(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "str?":
        return value is None or isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "dict?":
        return value is None or isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    if kind == "sha256":
        return (
            isinstance(value, str)
            and len(value) == 64
            and all(c in "0123456789abcdef" for c in value)
        )
    raise ValueError(kind)  # pragma: no cover


_KIND_TEXT = {
    "int": "a whole number >= 0",
    "number?": "a number or null",
    "str": "a string",
    "str?": "a string or null",
    "dict": "an object",
    "dict?": "an object or null",
    "list": "a list",
    "sha256": "64 hex digits",
}


def check_fields(
    obj: Mapping[str, Any],
    kinds: Mapping[str, Any],
    error: type[SlmError],
    name: str,
    required: tuple[str, ...] = (),
) -> None:
    """Refuse with `error` the first field of `obj` named in `kinds` whose value does not
    fit its kind ('int', 'number?', 'str', 'str?', 'dict', 'dict?', 'list', 'sha256',
    ('int', lo, hi));
    fields not named are not checked, `required` ones must be present."""
    missing = [k for k in required if k not in obj]
    if missing:
        raise error(f"{name} lacks {', '.join(missing)}")
    for key, kind in kinds.items():
        if key in obj and not _fits(kind, obj[key]):
            want = (
                f"a whole number from {kind[1]} to {kind[2]}"
                if isinstance(kind, tuple)
                else _KIND_TEXT[kind]
            )
            raise error(f"{name}: {key} must be {want}, got {short_repr(obj[key])}")


def finite_or_none(value: Any) -> float | None:
    """A finite number as a float; None for anything else (null, NaN, inf, 10**400)."""
    try:
        return float(value) if _is_number(value) and math.isfinite(value) else None
    except OverflowError:
        return None
