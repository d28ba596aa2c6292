"""What the TUI keeps on disk: story history, remembered preferences, the user's key map.

Locations follow the platform convention (platformdirs): history and preferences in
`user_data_dir("slm-tui")`, the key map in `user_config_dir("slm-tui")/keys.yaml`.
`SLM_TUI_DATA_DIR` and `SLM_TUI_CONFIG_DIR` override them (tests, portable installs).

History is append-only JSONL: a story is appended when it finishes (again after a
"continue" or a rename; the last line for an id wins), so a crash can tear at most the last
line, which loading skips. Deleting one story rewrites the file without its lines
(atomically): what the user deleted is gone from disk, not only hidden. A story keeps at
most `STORED_TEXT_LIMIT` characters of text there (marked `truncated`): a server that
floods one story cannot write a line of hundreds of MB. Exports go to the data folder's
`exports/` unless told otherwise, and say which sampling settings wrote which tokens: the
start's, then each change with the token it applied from; and a story's brief (Markdown: a
line with what of it the story has; JSONL: a "brief" object, as slm-generate's rows).
Clearing and preference writes are atomic (temp sibling + fsync + os.replace). Nothing
here raises for a damaged file: the app starts with what it can read and reports the rest
(undecodable bytes, lines that are not story objects, a key map with YAML aliases or over
1 MiB).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from platformdirs import user_config_dir, user_data_dir

from slm_tui.briefs import satisfies
from slm_tui.errors import ConfigError
from slm_tui.fileio import atomic_write_bytes, atomic_write_text
from slm_tui.tui.brief import brief_text, stored_brief
from slm_tui.tui.story import Story
from slm_tui.untrusted import YAML_LIMIT, decode_text, load_yaml, read_bounded

APP_NAME = "slm-tui"
HISTORY_LIMIT = (
    500  # stories kept in memory and in the list; the file keeps its lines until cleared
)
STORED_TEXT_LIMIT = 1 << 20  # characters of a story's text (and its tokens') history keeps
NAME_LIMIT = 200  # characters of a story's name


def data_dir() -> Path:
    env = os.environ.get("SLM_TUI_DATA_DIR")
    return Path(env) if env else Path(user_data_dir(APP_NAME))


def config_dir() -> Path:
    env = os.environ.get("SLM_TUI_CONFIG_DIR")
    return Path(env) if env else Path(user_config_dir(APP_NAME))


def keymap_path() -> Path:
    return config_dir() / "keys.yaml"


def exports_dir() -> Path:
    """Where F9 exports go by default: the user data folder's `exports/` (never the folder
    the app was started in, which may be a git clone)."""
    return data_dir() / "exports"


class History:
    """The session's stories plus every earlier session's, persisted as JSONL."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or data_dir() / "history.jsonl"
        self.stories: list[Story] = []
        self.skipped = 0  # unreadable lines found on load (reported once by the app)

    def load(self) -> list[Story]:
        by_id: dict[str, Story] = {}
        try:
            lines = self.path.read_bytes().decode("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError:
            lines = []
            self.skipped += 1
        for line in lines:
            if not line.strip():
                continue
            try:
                story = Story.from_dict(json.loads(line))
            except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
                self.skipped += 1
                continue
            by_id.pop(story.id, None)  # re-insert so a continued story moves to the end
            by_id[story.id] = story
        self.stories = list(by_id.values())[-HISTORY_LIMIT:]
        return self.stories

    def add(self, story: Story) -> None:
        if story not in self.stories:
            self.stories.append(story)
            del self.stories[:-HISTORY_LIMIT]

    def save(self, story: Story) -> None:
        """Append the story's current state (call when it finishes)."""
        self.add(story)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(story.to_dict(limit=STORED_TEXT_LIMIT), ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        self.stories.clear()
        atomic_write_text(self.path, "", make_parents=True)

    def rename(self, story: Story, name: str) -> None:
        """Give `story` a name ("" goes back to its opening words); saved at once, unless it
        is still being written (it is saved, name and all, when it finishes)."""
        story.name = " ".join(name.split())[:NAME_LIMIT]
        if not story.streaming:
            self.save(story)

    def delete(self, story_id: str) -> None:
        """Forget one story: from the list, and from the file (rewritten without its lines,
        atomically; lines that are not stories are kept as they are)."""
        self.stories = [s for s in self.stories if s.id != story_id]
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        kept = [line for line in data.splitlines(keepends=True) if _line_id(line) != story_id]
        atomic_write_bytes(self.path, b"".join(kept))


def _line_id(line: bytes) -> str | None:
    """The id of the story a history line holds (None: no story line)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return str(data.get("id")) if isinstance(data, dict) else None


class Preferences:
    """Small remembered choices: theme, side panel, last sampling settings."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or data_dir() / "settings.json"
        self.values: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.values = data if isinstance(data, dict) else {}
        except (OSError, ValueError, RecursionError):
            self.values = {}
        return self.values

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if self.values.get(key) == value:
            return
        self.values[key] = value
        atomic_write_text(
            self.path, json.dumps(self.values, indent=2, sort_keys=True) + "\n", make_parents=True
        )


def load_keymap(
    path: Path | None = None, valid_ids: Iterable[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """Read `binding-id: keys` pairs from a YAML file; return (keymap, problems).

    Keys are Textual key names, several separated by commas ("f3,ctrl+t"). Unknown ids and
    unreadable files are reported as problems, never raised, so a typo cannot stop the app.
    """
    path = path or keymap_path()
    if not path.is_file():
        return {}, []
    try:
        text = decode_text(read_bounded(path, YAML_LIMIT, ConfigError), ConfigError, str(path))
        data = load_yaml(text, ConfigError, str(path)) or {}
    except ConfigError as exc:
        return {}, [f"cannot read the key map: {exc}"]
    if not isinstance(data, dict):
        return {}, [f"{path}: expected a mapping of binding id to keys"]
    valid = set(valid_ids)
    keymap: dict[str, str] = {}
    problems: list[str] = []
    for key, value in data.items():
        binding_id = str(key)
        if valid and binding_id not in valid:
            problems.append(f"{path}: unknown binding id {binding_id!r}")
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{path}: keys for {binding_id!r} must be a string like 'ctrl+r'")
            continue
        keymap[binding_id] = value.replace(" ", "")
    return keymap, problems


# -- export ----------------------------------------------------------------------------
SETTINGS_ORDER = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_new_tokens")


def _settings_line(settings: dict[str, Any], every: bool = False) -> str:
    """The sampling fields that matter to a reader, in a fixed order (`every`: the others
    that are there too, after them)."""
    keys = [k for k in SETTINGS_ORDER if k in settings]
    if every:
        keys += sorted(k for k in settings if k not in SETTINGS_ORDER)
    return " · ".join(f"{k} {_value(settings, k)}" for k in keys)


def _value(settings: dict[str, Any], key: str) -> Any:
    if key == "brief":  # a brief changed for a continuation: in the row's words
        return f"[{brief_text(stored_brief(settings))}]" if settings[key] else "none"
    return settings[key]


def _brief_line(story: Story) -> list[str]:
    """The story's brief as a Markdown quote line, with what of it the story lacks."""
    brief = story.brief
    if brief is None:
        return []
    got = satisfies(story.prompt + story.text, brief)
    missing = [w for w, ok in got["words"].items() if not ok]
    missing += [brief.name] if got["name"] is False else []
    missing += [f for f, ok in got["features"].items() if not ok]
    has = f"missing: {', '.join(missing)}" if missing else "all there"
    return [f"> brief: {brief_text(brief)} ({has})"]


def _changes_lines(story: Story) -> list[str]:
    """One Markdown quote line per sampling change: from which token, what changed."""
    return [
        f"> from token {c['from_token']}: {_settings_line(c['settings'], every=True)}"
        for c in story.changes
    ]


def stories_to_markdown(stories: list[Story]) -> str:
    parts = ["# slm-tui stories", ""]
    for n, s in enumerate(stories, 1):
        parts += [
            f"## {n}. {s.name or s.title}",
            "",
            f"*{s.checkpoint or 'unknown checkpoint'} · seed {s.seed} · {s.created}*",
            "",
            f"**{s.prompt.strip()}**{s.text}" if s.prompt.strip() else s.text.lstrip(),
            "",
            *_brief_line(s),
            f"> {_settings_line(s.settings)} · {s.num_tokens} tokens · "
            f"finished: {s.finish_reason or 'streaming'}",
        ]
        if s.changes:
            parts += [">", *_changes_lines(s)]
        if s.truncated:
            parts += [">", "> (the text was cut to what history keeps)"]
        parts.append("")
    return "\n".join(parts)


def stories_to_jsonl(stories: list[Story]) -> str:
    """One object a story: the history's fields, and its brief (or null) as slm-generate's
    rows carry it."""
    rows = ({**s.to_dict(tokens=False), "brief": s.brief.to_dict() if s.brief else None}
            for s in stories)  # fmt: skip
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def export_stories(stories: list[Story], path: Path) -> Path:
    """Write stories to `path` (.jsonl or .json: JSON lines; anything else: Markdown), atomically."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name")
    fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".json") else "md"
    text = stories_to_jsonl(stories) if fmt == "jsonl" else stories_to_markdown(stories)
    atomic_write_text(path, text, make_parents=True)
    return path
