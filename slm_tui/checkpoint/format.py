"""The checkpoint directory format: file names, validated readers, and discovery.

Torch-free on purpose: listing checkpoints (the TUI's picker, `slm-train eval` resolving a
run dir) reads only YAML, JSON and the safetensors header, so it is fast and never imports
torch. Saving and loading weights live in `slm_tui.checkpoint.io`, which re-exports all of this.

Layout of a checkpoint directory (any directory with `model.safetensors` + `config.yaml`):

    model.safetensors   weights (safetensors: no pickle); a tied head is stored once
    config.yaml         the full resolved run config (its model section matches the weights)
    tokenizer/          a copy of the tokenizer; its fingerprint is recorded in meta.json
    meta.json           step, tokens_seen, params, val_loss, val_bpb, created, tokenizer_*, ...
    trainer_state.pt    optimizer, schedule, RNG, data cursor: plain tensors/numbers/strings,
                        loaded with `torch.load(weights_only=True)`
    metrics.jsonl, loss.png   copied in when the trainer passes them

A run directory holds `latest/` and `best/`; `resolve_checkpoint` maps it to best/, else
latest/. A checkpoint may come from anyone, so every file is read bounded and checked:
- the safetensors header: at most 16 MiB; every entry's dtype, shape and data offsets, the
  offsets tiling the data exactly, the data ending where the file does (truncation and
  garbage are caught without reading the weights; `weights_sha256` in meta.json, checked at
  load, catches flipped bits);
- meta.json: at most 1 MiB, a JSON object, each known field of its type (`META_FIELDS`);
- config.yaml: at most 1 MiB, no YAML aliases, every value typed and bounded (`config`).
`list_checkpoints` lists a directory that fails any check with its reason, whatever the
failure: one bad checkpoint never hides the others.
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

from slm_tui.briefing import trained_with_briefs
from slm_tui.checkpoint.lock import RECORD_WAIT, folder_lock
from slm_tui.checkpoint.records import RecordedEval, quality_line, recorded_evals, with_recorded
from slm_tui.config import Config
from slm_tui.errors import CheckpointError, SlmError
from slm_tui.fileio import atomic_write_text, json_safe
from slm_tui.presets import config_from_dict
from slm_tui.untrusted import (
    JSON_LIMIT,
    YAML_LIMIT,
    MiB,
    check_fields,
    decode_text,
    finite_or_none,
    load_yaml,
    read_bounded,
    short_repr,
)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
TRAINER_FILE = "trainer_state.pt"
TOKENIZER_DIR = "tokenizer"
FORMAT = "slm-tui-checkpoint"
VERSION = 1
HIDDEN_PREFIXES = (".tmp-", ".trash-")  # interrupted saves; never listed
HEADER_LIMIT = 16 * MiB  # a safetensors header (ours: a few KB; the format allows 100 MB)
# Bytes per element of each safetensors dtype.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
# meta.json fields that are read, and what each must be when present.
META_FIELDS = {
    "format": "str",
    "version": "int",
    "step": "int",
    "tokens_seen": "int",
    "params": "int",
    "val_loss": "number?",
    "val_bpb": "number?",
    "train_loss": "number?",
    "max_steps": "int",
    "world_size": "int",
    "created": "str",
    "tokenizer_kind": "str",
    "tokenizer_fingerprint": "str",
    "weights_dtype": "str",
    "weights_sha256": "sha256",
    "evaluations": "list",  # recorded held-out figures (slm_tui.checkpoint.records)
    "speed": "dict",  # how the run computed (trainer.speed.SpeedChoice.as_record)
}


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
    evaluations: tuple[RecordedEval, ...] = ()  # held-out figures `slm-train eval --record` kept
    weights_sha256: str | None = None  # of model.safetensors, from meta.json (None: older)
    # The run's dtype/compile/attention record from meta.json (trainer.speed reads it).
    speed: dict[str, Any] | None = None
    # Trained with story briefs (config.yaml's data.briefs above 0): a front end says so
    # when a brief goes to a model trained without them.
    briefs: bool = False

    def quality(self) -> str:
        """Recorded held-out figures with their corpora, else the in-run one, said so."""
        return quality_line(self.evaluations, self.val_bpb)


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
    if have == [CONFIG_FILE] and not (p / META_FILE).is_file():  # a run's own config.yaml
        raise CheckpointError(f"run folder {p} holds no checkpoint yet (no whole best/ or latest/)")
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
    package_parent = Path(__file__).resolve().parents[2]  # slm_tui/checkpoint/format.py
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
    """Parse the header, check its schema, and check the file is exactly as long as it says
    (catches truncation and garbage without reading the weights)."""
    where = f"{path.parent}: {MODEL_FILE}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{where} is truncated ({size} bytes); re-save or re-train")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, HEADER_LIMIT):
                raise ValueError("header length beyond the end of the file")
            header = json.loads(f.read(n))
    except CheckpointError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where} is corrupt ({exc}); re-save or re-train") from None
    except OSError as exc:
        raise CheckpointError(f"{where} cannot be read ({exc.strerror})") from None
    end = _check_header(header, where)
    if 8 + n + end != size:
        raise CheckpointError(
            f"{where} is truncated or corrupt ({size} bytes, header says {8 + n + end}); "
            "re-save or re-train"
        )
    return header


def _check_header(header: Any, where: str) -> int:
    """The safetensors schema: {name: {dtype, shape, data_offsets}} whose spans tile the data
    from 0 without gaps or overlaps, plus an optional string-to-string `__metadata__`.
    Returns the length of the data; CheckpointError naming the first bad entry."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where} is corrupt ({what}); re-save or re-train")

    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
            ):
                raise bad("__metadata__ is not a map of strings")
            continue
        label = f"tensor {short_repr(name)}"
        if not isinstance(entry, dict):
            raise bad(f"{label} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_SIZES:
            raise bad(f"{label} has dtype {short_repr(dtype)}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_natural(d) for d in shape):
            raise bad(f"{label} has shape {short_repr(shape)}, not a list of sizes")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_natural(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise bad(f"{label} has data_offsets {short_repr(offsets)}, not [begin, end]")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise bad(f"{label}: data_offsets do not match its shape and dtype")
        spans.append((offsets[0], offsets[1], label))
    spans.sort()
    end = 0
    for begin, stop, label in spans:
        if begin != end:
            raise bad(f"{label} overlaps another tensor or leaves a gap before it")
        end = stop
    return end


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_config(path: Path) -> Config:
    """config.yaml, parsed and validated like any user config (CheckpointError if not)."""
    name = f"{path}: {CONFIG_FILE}"
    raw = read_bounded(path / CONFIG_FILE, YAML_LIMIT, CheckpointError, name)
    data = load_yaml(decode_text(raw, CheckpointError, name), CheckpointError, name)
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
    """meta.json: a JSON object of at most 1 MiB whose known fields have their types."""
    file = path / META_FILE
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {META_FILE} is missing")
    name = f"{path}: {META_FILE}"
    raw = read_bounded(file, JSON_LIMIT, CheckpointError, name)
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{name} is corrupt ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{name} is not a JSON object")
    check_fields(meta, META_FIELDS, CheckpointError, name)
    return meta


def _display_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.name in ("best", "latest") else path.name


def read_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Metadata of one checkpoint without loading the weights (CheckpointError if broken)."""
    p = resolve_checkpoint(path)
    return info_from(p, read_config(p), read_checkpoint_meta(p), safetensors_header(p / MODEL_FILE))


def info_from(p: Path, cfg: Config, meta: dict[str, Any], header: dict[str, Any]) -> CheckpointInfo:
    assert cfg.model.vocab_size is not None  # read_config refuses a config without it
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
        step=meta.get("step", 0),
        tokens_seen=meta.get("tokens_seen", 0),
        params=params,
        val_loss=finite_or_none(meta.get("val_loss")),
        val_bpb=finite_or_none(meta.get("val_bpb")),
        tokenizer_kind=str(meta.get("tokenizer_kind") or cfg.tokenizer.kind),
        vocab_size=cfg.model.vocab_size,
        context_length=cfg.model.context_length,
        n_layer=cfg.model.n_layer,
        d_model=cfg.model.d_model,
        created=created,
        evaluations=recorded_evals(meta),
        weights_sha256=meta.get("weights_sha256"),
        speed=meta.get("speed"),
        briefs=trained_with_briefs(cfg),
    )


def record_evaluation(path: Path, entry: RecordedEval, weights_sha256: str | None = None) -> Path:
    """Write `entry` into `<path>/meta.json` (replacing the same corpus's old entry), in one
    atomic replace; the weights are not touched, and a meta.json that does not pass its
    checks is refused and left as it is. Returns the file written.

    The read-modify-write holds the folder's lock (`checkpoint.lock`): concurrent records
    each keep their entry, and a save cannot swap the folder away in between. With
    `weights_sha256` (the weights the figure was measured on), a folder that a save has
    replaced since is refused: the figure belongs to the weights that are gone."""
    for _ in range(3):
        try:
            with folder_lock(path, exclusive=True, wait=RECORD_WAIT) as lock:
                if lock.locked is False:
                    raise CheckpointError(
                        f"{path} stayed in use (loading or saving) for {RECORD_WAIT:.0f} s; "
                        "the figure is not recorded; try again"
                    )
                if lock.locked and not lock.current():
                    continue  # a save replaced it while this waited: judge the new one
                meta = read_checkpoint_meta(path)
                found = meta.get("weights_sha256")
                if weights_sha256 is not None and found != weights_sha256:
                    raise CheckpointError(
                        f"{path} was replaced by a newer save (step {meta.get('step')}) while "
                        "it was evaluated; the figure is not recorded (evaluate it again, or a "
                        "copy of it)"
                    )
                file = path / META_FILE
                text = json.dumps(json_safe(with_recorded(meta, entry)), indent=2) + "\n"
                atomic_write_text(file, text)
                return file
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot record ({exc.strerror})") from None
    raise CheckpointError(f"{path} kept being replaced by new saves; the figure is not recorded")


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
        except Exception as exc:  # a check this reader lacks: list it as broken, go on
            info = _broken_info(here, name, f"{here} cannot be read ({type(exc).__name__})")
        found.append(info)
    found.sort(key=_sort_key, reverse=True)
    return found
