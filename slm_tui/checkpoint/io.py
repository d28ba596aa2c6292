"""Checkpoints: save a model atomically as a self-contained directory; load it validated.

The directory format and discovery (`CheckpointInfo`, `is_checkpoint`, `resolve_checkpoint`,
`read_info`, `list_checkpoints`, `bundled_demo_path`) live in `slm_tui.checkpoint.format`
(torch-free); the ones a caller of save/load also needs are re-exported here.

Notable:
- Saving writes a hidden sibling `.tmp-<name>-<pid>`, fsyncs every file, then swaps it in
  with `fileio.replace_dir` (one atomic exchange on Linux). At no moment is there a
  half-written directory under the real name; what a killed save left beside it is cleaned
  up (or put back) by the next save (`fileio.recover_leftovers`). A full disk is one
  `CheckpointError` saying so and what was kept.
- meta.json records the sha256 of model.safetensors; loading checks it (7 ms for the
  demo's 11.7 MB, under a tenth of the load), so flipped bits are refused instead of giving
  a model that writes noise. A checkpoint saved before the checksum existed loads without
  the check. The weights are read once, hashed and loaded from the same bytes.
- A load reads the folder's files under its shared lock and a save swaps a folder in under
  the old one's exclusive lock (`slm_tui.checkpoint.lock`), so `latest/` of a run in
  progress loads whole (never meta.json of one save with the weights of the next); where
  the lock is not had in time, a load that failed while the folder was replaced is read
  again.
- The tied output head is stored once; weights may be saved in bf16 to halve the file (the
  bundled demo) and always load as float32.
- Loading refuses, with one-line `CheckpointError`s: a folder that is not a checkpoint,
  missing files, a corrupt or truncated weights file, an invalid config.yaml, weights whose
  shapes differ from the config (checked on a model built on the `meta` device, before any
  memory is allocated for it), and a tokenizer whose fingerprint differs from the one
  recorded at save time (a checkpoint is a sealed unit).
- trainer_state.pt is checked at save time to hold only what `torch.load(weights_only=True)`
  accepts, so a resume never needs pickle; at load its size is bounded by the weights' size
  (the trainer checks the fields it reads: `trainer.run`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from slm_tui.checkpoint.format import (
    CONFIG_FILE,
    FORMAT,
    META_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    TRAINER_FILE,
    VERSION,
    CheckpointInfo,
    bundled_demo_path,
    info_from,
    is_checkpoint,
    list_checkpoints,
    read_checkpoint_meta,
    read_config,
    read_info,
    resolve_checkpoint,
    safetensors_header,
)
from slm_tui.checkpoint.lock import READ_WAIT, SAVE_WAIT, folder_lock
from slm_tui.config import Config, copy_config
from slm_tui.devices import resolve_device
from slm_tui.errors import CheckpointError, SlmError
from slm_tui.fileio import (
    disk_full_reason,
    fsync_tree,
    is_disk_full,
    json_safe,
    recover_leftovers,
    replace_dir,
)
from slm_tui.model import GPT
from slm_tui.tokenizers import Tokenizer, load_tokenizer

__all__ = [
    "CheckpointInfo",
    "LoadedCheckpoint",
    "bundled_demo_path",
    "is_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_trainer_state",
    "read_info",
    "resolve_checkpoint",
    "save_checkpoint",
]


@dataclass
class LoadedCheckpoint:
    model: GPT
    tokenizer: Tokenizer
    config: Config
    info: CheckpointInfo
    path: Path
    device: torch.device

    def __iter__(self) -> Iterator[Any]:  # model, tokenizer, config = loaded
        yield self.model
        yield self.tokenizer
        yield self.config


# ---- saving ------------------------------------------------------------------------------
def _unwrap(model: torch.nn.Module) -> GPT:
    """The GPT inside torch.compile (`_orig_mod`) and/or DDP (`module`) wrappers."""
    for _ in range(4):
        model = getattr(model, "_orig_mod", model)
        model = getattr(model, "module", model)
    if not isinstance(model, GPT):
        raise TypeError(f"save_checkpoint needs a GPT, got {type(model).__name__}")
    return model


def _check_plain(value: Any, where: str) -> None:
    """trainer_state must load under weights_only=True: tensors, numbers, strings, containers."""
    if value is None or isinstance(value, (torch.Tensor, bool, int, float, str, bytes)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"trainer_state key {where}[{k!r}] must be a str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise CheckpointError(
        f"trainer_state{where} is a {type(value).__name__}; only tensors, numbers, strings, "
        "lists and dicts can be loaded safely"
    )


def weights_state(model: GPT, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors written to model.safetensors: contiguous CPU copies, the tied head once."""
    state = model.state_dict()
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)  # same storage as tok_emb.weight
    out = {}
    for key, t in state.items():
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.to("cpu").contiguous()
    return out


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    config: Config,
    tokenizer: Tokenizer,
    meta: dict[str, Any],
    *,
    trainer_state: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write a complete checkpoint at `path` atomically (replacing one already there).

    The saved config's model section is the model's own config, so config.yaml always
    describes the weights. Extra files whose source does not exist (yet) are skipped."""
    gpt = _unwrap(model)
    out = Path(path).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file; choose a directory for the checkpoint")
    if trainer_state is not None:
        _check_plain(trainer_state, "")
    cfg = copy_config(config)
    cfg.model = dataclasses.replace(gpt.cfg)
    full_meta = {
        "format": FORMAT,
        "version": VERSION,
        "step": 0,
        "tokens_seen": 0,
        "val_loss": None,
        "val_bpb": None,
        **meta,
        "params": gpt.num_params(),
        "created": meta.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tokenizer_kind": tokenizer.kind,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "weights_dtype": str(weights_dtype or gpt.tok_emb.weight.dtype).removeprefix("torch."),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    recover_leftovers(out.parent)  # what saves killed earlier left here
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        weights = safetensors.torch.save(
            weights_state(gpt, weights_dtype), metadata={"format": "pt"}
        )
        full_meta["weights_sha256"] = hashlib.sha256(weights).hexdigest()
        (tmp / MODEL_FILE).write_bytes(weights)
        del weights
        (tmp / CONFIG_FILE).write_text(cfg.to_yaml(), encoding="utf-8")
        # A copy, so saving does not repoint the caller's tokenizer at our directory.
        saved_tok = copy.copy(tokenizer)
        saved_tok.path = None
        saved_tok.save(tmp / TOKENIZER_DIR)
        if saved_tok.fingerprint != tokenizer.fingerprint:
            raise CheckpointError(
                f"the tokenizer's files do not match its fingerprint {tokenizer.fingerprint[:12]}"
                "; reload it from its directory before saving"
            )
        (tmp / META_FILE).write_text(
            json.dumps(json_safe(full_meta), indent=2) + "\n", encoding="utf-8"
        )
        if trainer_state is not None:
            # Serialised in memory and written by Python, so a full disk is an OSError
            # (torch's own file writer reports it as a RuntimeError).
            buffer = io.BytesIO()
            torch.save(trainer_state, buffer)
            (tmp / TRAINER_FILE).write_bytes(buffer.getbuffer())
            del buffer
        for name, src in (extra_files or {}).items():
            if Path(src).exists():
                shutil.copyfile(src, tmp / name)
        fsync_tree(tmp)
        _swap_in(tmp, out)
    except BaseException as exc:  # an error or Ctrl-C: `out` stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            kept = f"the previous {out.name}/ is kept" if is_checkpoint(out) else "nothing kept"
            raise CheckpointError(
                f"{disk_full_reason(exc)}: saving {out} failed and was undone ({kept}); "
                "free some space and try again"
            ) from None
        raise
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """`replace_dir(tmp, out)`, holding the old folder's lock exclusive (a bounded wait) so
    the swap never lands inside a load or an `eval --record` of it (`checkpoint.lock`)."""
    with folder_lock(out, exclusive=True, wait=SAVE_WAIT, save=True):  # none: a first save
        replace_dir(tmp, out)


# ---- loading -----------------------------------------------------------------------------
def _check_shapes(path: Path, model: GPT, header: dict[str, Any]) -> None:
    """The weights file holds exactly the model's tensors, each of the model's shape."""
    expected = {k: tuple(v.shape) for k, v in _stored_state(model).items()}
    stored = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    missing = sorted(expected.keys() - stored.keys())
    unexpected = sorted(stored.keys() - expected.keys())
    if missing or unexpected:
        detail = f"missing {', '.join(missing[:3])}" if missing else ""
        if unexpected:
            detail += ("; " if detail else "") + f"unexpected {', '.join(unexpected[:3])}"
        raise CheckpointError(f"{path}: weights do not match {CONFIG_FILE} ({detail})")
    for key, shape in expected.items():
        if stored[key] != shape:
            raise CheckpointError(
                f"{path}: weights do not match {CONFIG_FILE}: {key} is {list(stored[key])} "
                f"but the config gives {list(shape)}"
            )


def _read_weights(path: Path, meta: dict[str, Any]) -> bytes:
    """model.safetensors, checked against the sha256 recorded in meta.json (when there is
    one). The bytes are read once, then both hashed and loaded, so weights that pass the
    check are the weights that `meta` describes."""
    try:
        data = (path / MODEL_FILE).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: {MODEL_FILE} cannot be read ({exc.strerror})") from None
    recorded = meta.get("weights_sha256")
    if recorded is not None:  # None: saved before checksums were recorded
        digest = hashlib.sha256(data).hexdigest()
        if digest != recorded:
            raise CheckpointError(
                f"{path}: {MODEL_FILE} does not match the sha256 recorded in {META_FILE} "
                f"({recorded[:12]}, the file gives {digest[:12]}): the weights are "
                "damaged; restore them from a copy or re-train"
            )
    return data


def _load_weights(path: Path, model: GPT, data: bytes) -> None:
    """Checked safetensors bytes (`_read_weights`) into `model`."""
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error type for bad files
        raise CheckpointError(
            f"{path}: {MODEL_FILE} is corrupt ({str(exc).splitlines()[0]}); re-save or re-train"
        ) from None
    tensors = {k: t.float() if t.is_floating_point() else t for k, t in tensors.items()}
    model.load_state_dict(tensors, strict=False)  # strictness checked above (tied head)


def _stored_state(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict as stored (tied head left out), without copying anything."""
    state = model.state_dict()
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Load a checkpoint (or a run dir's best/ else latest/): model in eval mode, float32,
    on `device` (`auto`: CUDA > MPS > CPU, see `slm_tui.devices`).

    A running trainer replaces latest/ whole while it may be read here (one atomic swap,
    see `fileio.replace_dir`). The files are read under the folder's shared lock
    (`checkpoint.lock`), which the swap waits for, so they all come from one save; should a
    swap come anyway (a lock not held in time, a filesystem without flock), the weights'
    checksum refuses a mix and a read that failed while the folder was replaced is read
    again."""
    dev = resolve_device(device)
    for _ in range(_REPLACED_RETRIES):
        p = resolve_checkpoint(path)
        before = _meta_bytes(p)
        try:
            with folder_lock(p, exclusive=False, wait=READ_WAIT) as lock:
                if lock.locked and not lock.current():
                    continue  # replaced between finding it and locking it: find it again
                parts = _read_parts(p, dev)
                whole = bool(lock.locked)  # one save's files, whatever happens next
        except Exception:
            if _meta_bytes(p) == before:
                raise  # the checkpoint itself is bad, not replaced under us
            continue
        try:
            return _build(p, parts, dev)
        except Exception:
            if whole or _meta_bytes(p) == before:
                raise
    raise CheckpointError(
        f"{path} was replaced {_REPLACED_RETRIES} times while it loaded (a run saving very "
        "often?); try again, or load its best/"
    )


_REPLACED_RETRIES = 6  # a run that saves every step replaces latest/ every few hundred ms


def _meta_bytes(p: Path) -> bytes | None:
    """meta.json as it is now: every save writes a new one (its weights' sha256)."""
    try:
        return (p / META_FILE).read_bytes()
    except OSError:
        return None


@dataclass
class _Parts:
    """What a load reads from the folder (under its lock), before any model is built."""

    config: Config
    info: CheckpointInfo
    tokenizer: Tokenizer
    weights: bytes  # model.safetensors, checked against meta.json's sha256


def _read_parts(p: Path, dev: torch.device) -> _Parts:
    cfg = read_config(p)
    meta = read_checkpoint_meta(p)
    header = safetensors_header(p / MODEL_FILE)
    info = info_from(p, cfg, meta, header)
    if not (p / TOKENIZER_DIR).is_dir():
        raise CheckpointError(f"checkpoint {p} is incomplete: {TOKENIZER_DIR}/ is missing")
    try:
        tokenizer = load_tokenizer(p / TOKENIZER_DIR)
    except SlmError as exc:
        raise CheckpointError(f"{p}: its {TOKENIZER_DIR}/ cannot be loaded: {exc}") from None
    recorded = meta.get("tokenizer_fingerprint")
    if recorded != tokenizer.fingerprint:
        raise CheckpointError(
            f"{p}: {TOKENIZER_DIR}/ (fingerprint {tokenizer.fingerprint[:12]}) is not the "
            f"tokenizer this model was trained with ({str(recorded)[:12]}); restore the original"
        )
    if tokenizer.vocab_size != cfg.model.vocab_size:
        raise CheckpointError(
            f"{p}: the tokenizer has {tokenizer.vocab_size} ids but the model "
            f"{cfg.model.vocab_size}; the checkpoint is inconsistent"
        )
    with torch.device("meta"):  # shapes only: nothing is allocated for a bogus config
        _check_shapes(p, GPT(cfg.model), header)
    return _Parts(cfg, info, tokenizer, _read_weights(p, meta))


def _build(p: Path, parts: _Parts, dev: torch.device) -> LoadedCheckpoint:
    model = GPT(parts.config.model)
    _load_weights(p, model, parts.weights)
    model.to(dev).eval()
    return LoadedCheckpoint(model, parts.tokenizer, parts.config, parts.info, p, dev)


def load_trainer_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """trainer_state.pt of a checkpoint dir (a run dir means its latest/), weights_only."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / TRAINER_FILE).is_file() and (p / "latest" / TRAINER_FILE).is_file():
            p = p / "latest"
        p = p / TRAINER_FILE
    if not p.is_file():
        raise CheckpointError(f"{p.parent} has no {TRAINER_FILE}; it cannot be resumed")
    weights = p.parent / MODEL_FILE
    limit = 8 * (weights.stat().st_size if weights.is_file() else 0) + (64 << 20)
    if p.stat().st_size > limit:
        raise CheckpointError(
            f"{p} is {p.stat().st_size:,} bytes, more than a trainer state for these weights "
            f"can be ({limit:,}); it is not one this program wrote"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(
            f"{p} cannot be loaded ({type(exc).__name__}); it is corrupt or not a trainer state"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} does not hold a trainer state dict")
    return state
