"""Reading a run's config: bundled presets by name, YAML files, dotted overrides.

`load_config("tiny", ["train.lr=3e-4"])` reads the preset `slm_tui/configs/tiny.yaml` (or a
YAML path), applies the overrides, type-checks every value against the dataclass fields of
`slm_tui.config` and returns a validated `Config`. Unknown keys and wrong types raise
`ConfigError` with a one-line message that names the key and lists the valid ones. YAML is
read with `yaml.safe_load` rules, without anchors or aliases and at most 1 MiB
(`slm_tui.untrusted`): a config may come from a checkpoint someone else made.
"""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path
from typing import Any

from slm_tui.config import SECTIONS, Config, _coerce, _field_types
from slm_tui.errors import ConfigError
from slm_tui.untrusted import (
    YAML_LIMIT,
    decode_text,
    load_yaml,
    read_bounded,
    short_repr,
    short_text,
)


def list_presets() -> list[str]:
    """Names of the bundled presets (`tiny`, `small`, `seed-gpt`, ...)."""
    folder = resources.files("slm_tui") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(name_or_path: str) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file() or "/" in name_or_path:
        if path.is_dir():
            raise ConfigError(f"config {name_or_path} is a directory, not a YAML file")
        if not path.is_file():
            raise ConfigError(
                f"config file {name_or_path} not found (presets: {', '.join(list_presets())})"
            )
        origin = str(path)
        text = decode_text(read_bounded(path, YAML_LIMIT, ConfigError), ConfigError, origin)
    else:
        res = resources.files("slm_tui") / "configs" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(
                f"unknown config preset {name_or_path!r}; presets: {', '.join(list_presets())}"
            )
        text = res.read_text(encoding="utf-8")
        origin = f"preset {name_or_path}"
    data = load_yaml(text, ConfigError, origin) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must be a mapping of sections, got {type(data).__name__}")
    return data, origin


def _apply_section(section_obj: Any, section: str, values: Any, origin: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(
            f"{origin}: section {section} must be a mapping, got {short_repr(values)}"
        )
    types_ = _field_types(type(section_obj))
    for key, value in values.items():
        if key not in types_:
            raise ConfigError(
                f"unknown config key {section}.{short_text(key)} ({origin}); "
                f"valid keys in {section}: "
                f"{', '.join(types_)}"
            )
        setattr(section_obj, key, _coerce(f"{section}.{key}", value, types_[key]))


def config_from_dict(data: dict[str, Any], origin: str = "config") -> Config:
    cfg = Config()
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown config section {short_repr(section)} ({origin}); "
                f"sections: {', '.join(SECTIONS)}"
            )
        if values is None:
            continue
        _apply_section(getattr(cfg, section), section, values, origin)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """`"train.lr=3e-4"` -> ("train", "lr", 3e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"override key {dotted!r} must be section.key with section one of {', '.join(SECTIONS)}"
        )
    section, key = parts
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; sections: {', '.join(SECTIONS)}")
    try:
        value = load_yaml(raw, ConfigError, "override") if raw.strip() else ""
    except ConfigError:
        value = raw
    # YAML reads "3e-4" as a string (no dot); accept it as a number when the field wants one.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in ".eE") else int(value)
    return section, key, value


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    for text in overrides or []:
        section, key, value = parse_override(text)
        types_ = _field_types(SECTIONS[section])
        if key not in types_:
            raise ConfigError(
                f"unknown config key {section}.{key}; valid keys in {section}: {', '.join(types_)}"
            )
        tp = types_[key]
        if tp is str and not isinstance(value, str):
            value = text.split("=", 1)[1].strip()  # e.g. train.device=0 stays the string "0"
        setattr(getattr(cfg, section), key, _coerce(f"{section}.{key}", value, tp))
    return cfg


def load_config(name_or_path: str | None = "tiny", overrides: list[str] | None = None) -> Config:
    """Load a preset by name or a YAML file by path, apply `section.key=value` overrides,
    validate, and return the config. Raises ConfigError on any problem."""
    if name_or_path is None:
        cfg = Config()
    else:
        data, origin = _read_yaml(name_or_path)
        cfg = config_from_dict(data, origin)
    apply_overrides(cfg, overrides)
    return cfg.validate()
