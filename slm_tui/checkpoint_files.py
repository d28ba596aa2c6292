"""The checkpoint directory format: file names, validated readers, and discovery.

Torch-free on purpose: listing checkpoints (the TUI's picker, `slm-train eval` resolving a
run dir) reads only YAML, JSON and the safetensors header, so it is fast and never imports
torch. Saving and loading weights live in `slm_tui.checkpoints`, which re-exports all of this.

Layout of a checkpoint directory (any directory with `model.safetensors` + `config.yaml`):

    model.safetensors   weights (safetensors: no pickle); a tied head is stored once
    config.yaml         the full resolved run config (its model section matches the weights)
    tokenizer/          a copy of the tokenizer; its fingerprint is recorded in meta.json
    meta.json           step, tokens_seen, params, val_loss, val_bpb, created, tokenizer_*, ...
    trainer_state.pt    optimizer, schedule, RNG, data cursor: plain tensors/numbers/strings,
                        loaded with `torch.load(weights_only=True)`
    metrics.jsonl, loss.png   copied in when the trainer passes them

A run directory holds `latest/` and `best/`; `resolve_checkpoint` maps it to best/, else
latest/. A truncated or corrupt weights file is caught by checking the safetensors header
against the file size, before anything is read.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from slm_tui.config import Config, config_from_dict
from slm_tui.errors import CheckpointError, SlmError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
TRAINER_FILE = "trainer_state.pt"
TOKENIZER_DIR = "tokenizer"
FORMAT = "slm-tui-checkpoint"
VERSION = 1
HIDDEN_PREFIXES = (".tmp-", ".trash-")  # interrupted saves; never listed


@dataclass
class CheckpointInfo:
    path: Path
    name: str
    step: int
    tokens_seen: int
    params: int
    val_loss: float | None
    val_bpb: float | None
    tokenizer_kind: str
    vocab_size: int
    context_length: int
    n_layer: int
    d_model: int
    created: str
    error: str | None = None  # set (and the rest left at defaults) for unreadable dirs


# ---- finding checkpoints ------------------------------------------------------------------
def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return (p / MODEL_FILE).is_file() and (p / CONFIG_FILE).is_file()


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint directory itself, or a run directory's best/ (else latest/)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} not found")
    if not p.is_dir():
        raise CheckpointError(f"{p} is a file; a checkpoint is a directory with {MODEL_FILE}")
    if is_checkpoint(p):
        return p
    for sub in ("best", "latest"):
        if is_checkpoint(p / sub):
            return p / sub
    have = [f for f in (MODEL_FILE, CONFIG_FILE) if (p / f).is_file()]
    if have:
        missing = CONFIG_FILE if have == [MODEL_FILE] else MODEL_FILE
        raise CheckpointError(f"checkpoint {p} is incomplete: {missing} is missing")
    raise CheckpointError(
        f"{p} is not a checkpoint (no {MODEL_FILE} + {CONFIG_FILE}, nor a best/ or latest/ "
        "holding them)"
    )


def bundled_demo_path() -> Path | None:
    """The demo model: $SLM_TUI_DEMO, else checkpoints/tinystories-demo next to the package
    (a repo checkout or editable install), else the copy installed under sys.prefix."""
    package_parent = Path(__file__).resolve().parent.parent
    candidates = [
        package_parent / "checkpoints" / "tinystories-demo",
        Path(sys.prefix) / "share" / "slm-tui" / "checkpoints" / "tinystories-demo",
    ]
    if os.environ.get("SLM_TUI_DEMO"):
        candidates.insert(0, Path(os.environ["SLM_TUI_DEMO"]).expanduser())
    for c in candidates:
        try:
            return resolve_checkpoint(c)
        except CheckpointError:
            continue
    return None


def safetensors_header(path: Path) -> dict[str, Any]:
    """Parse the header and check the file is exactly as long as it says (catches truncation
    and garbage without reading the weights)."""
    where = f"{path.parent}: {MODEL_FILE}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{where} is truncated ({size} bytes); re-save or re-train")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100_000_000):
                raise ValueError("header length beyond the end of the file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a mapping")
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where} is corrupt ({exc}); re-save or re-train") from None
    except OSError as exc:
        raise CheckpointError(f"{where} cannot be read ({exc.strerror})") from None
    if 8 + n + end != size:
        raise CheckpointError(
            f"{where} is truncated or corrupt ({size} bytes, header says {8 + n + end}); "
            "re-save or re-train"
        )
    return header


def read_config(path: Path) -> Config:
    """config.yaml, parsed and validated like any user config (CheckpointError if not)."""
    try:
        data = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CheckpointError(f"{path}: {CONFIG_FILE} is not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: {CONFIG_FILE} is unreadable ({type(exc).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {CONFIG_FILE} is not a mapping of config sections")
    try:
        cfg = config_from_dict(data, f"{path / CONFIG_FILE}").validate()
    except SlmError as exc:
        raise CheckpointError(f"{path}: {CONFIG_FILE} is invalid: {exc}") from None
    if cfg.model.vocab_size is None:
        raise CheckpointError(f"{path}: {CONFIG_FILE} does not set model.vocab_size")
    return cfg


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    file = path / META_FILE
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {META_FILE} is missing")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: {META_FILE} is corrupt ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: {META_FILE} is not a JSON object")
    return meta


def _display_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.name in ("best", "latest") else path.name


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Metadata of one checkpoint without loading the weights (CheckpointError if broken)."""
    p = resolve_checkpoint(path)
    return info_from(p, read_config(p), read_checkpoint_meta(p), safetensors_header(p / MODEL_FILE))


def info_from(p: Path, cfg: Config, meta: dict[str, Any], header: dict[str, Any]) -> CheckpointInfo:
    params = meta.get("params")
    if not isinstance(params, int):
        params = sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    created = meta.get("created")
    if not isinstance(created, str):
        mtime = (p / MODEL_FILE).stat().st_mtime
        created = datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
    return CheckpointInfo(
        path=p,
        name=_display_name(p),
        step=int(meta.get("step") or 0),
        tokens_seen=int(meta.get("tokens_seen") or 0),
        params=params,
        val_loss=_float_or_none(meta.get("val_loss")),
        val_bpb=_float_or_none(meta.get("val_bpb")),
        tokenizer_kind=str(meta.get("tokenizer_kind") or cfg.tokenizer.kind),
        vocab_size=cfg.model.vocab_size,
        context_length=cfg.model.context_length,
        n_layer=cfg.model.n_layer,
        d_model=cfg.model.d_model,
        created=created,
    )


def _broken_info(path: Path, name: str, error: str) -> CheckpointInfo:
    try:
        created = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        created = datetime.fromtimestamp(0, timezone.utc)
    return CheckpointInfo(
        path=path,
        name=name,
        step=0,
        tokens_seen=0,
        params=0,
        val_loss=None,
        val_bpb=None,
        tokenizer_kind="",
        vocab_size=0,
        context_length=0,
        n_layer=0,
        d_model=0,
        created=created.isoformat(timespec="seconds"),
        error=error,
    )


def _sort_key(info: CheckpointInfo) -> tuple[float, float]:
    """(created, mtime of the weights): saves within the same second still order correctly."""
    try:
        created = datetime.fromisoformat(info.created)
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        stamp = created.timestamp()
    except ValueError:
        stamp = 0.0
    try:
        mtime = (info.path / MODEL_FILE).stat().st_mtime
    except OSError:
        mtime = 0.0
    return stamp, mtime


def list_checkpoints(root: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """Every checkpoint under `root` (recursive), newest first. A broken one is listed with
    `error` set; temporary and trash directories of interrupted saves are skipped."""
    base = Path(root).expanduser()
    if not base.is_dir():
        return []
    found: list[CheckpointInfo] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(HIDDEN_PREFIXES))
        here = Path(dirpath)
        # Weights, or the other parts of a checkpoint whose weights went missing.
        looks_like = MODEL_FILE in filenames or (
            {CONFIG_FILE, META_FILE} <= set(filenames) and TOKENIZER_DIR in dirnames
        )
        if not looks_like:
            continue
        dirnames[:] = [d for d in dirnames if d != TOKENIZER_DIR]
        rel = here.relative_to(base).as_posix()
        name = _display_name(here) if rel == "." else rel
        try:
            info = read_info(here)
            info.name = name
        except CheckpointError as exc:
            info = _broken_info(here, name, str(exc))
        except OSError as exc:
            info = _broken_info(here, name, f"{here} cannot be read ({exc.strerror})")
        found.append(info)
    found.sort(key=_sort_key, reverse=True)
    return found
