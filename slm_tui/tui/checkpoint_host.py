"""Checkpoint discovery and loading for the app, off the UI thread.

`scan_checkpoints` lists every checkpoint under the checkpoints folder plus the bundled
demo (and an explicitly opened one); the app runs it every two seconds in a thread worker,
so a checkpoint a training run saves shows up without a restart. Loading runs in another
thread worker; the outcome comes back as a message, and a failed load leaves the current
model in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

from slm_tui.checkpoints import (
    bundled_demo_path,
    list_checkpoints,
    load_checkpoint,
    read_info,
    resolve_checkpoint,
)
from slm_tui.errors import SlmError


def scan_checkpoints(root: Path, extra: tuple[Path, ...] = (), demo: bool = True) -> list[Any]:
    """Checkpoints under `root` (newest first), then `extra` ones and the bundled demo."""
    infos = list(list_checkpoints(root)) if root.is_dir() else []
    seen = {Path(i.path).resolve() for i in infos}
    demo_path = bundled_demo_path() if demo else None
    for path in (*extra, *([demo_path] if demo_path else [])):
        try:
            resolved = resolve_checkpoint(path).resolve()
            if resolved in seen:
                continue
            infos.append(read_info(resolved))
        except (SlmError, OSError):
            continue  # an explicit path that is broken is reported when it is loaded
        seen.add(resolved)
    return infos


def scan_signature(infos: list[Any]) -> tuple:
    """What must differ for the list to be redrawn (a rescan usually finds nothing new)."""
    return tuple((str(i.path), i.step, i.created, i.error) for i in infos)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch  # the loader's business; imported here so the UI never needs it

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def load(path: Path, device: str) -> Any:
    """Load a checkpoint; raises SlmError with a one-line reason."""
    try:
        return load_checkpoint(path, resolve_device(device))
    except SlmError:
        raise
    except Exception as exc:  # a torch or safetensors failure on a damaged file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SlmError(f"{path}: cannot load ({type(exc).__name__}: {first})") from None


@dataclass
class CheckpointsScanned(Message):
    infos: list[Any]


@dataclass
class CheckpointLoaded(Message):
    loaded: Any  # LoadedCheckpoint


@dataclass
class CheckpointFailed(Message):
    path: Path
    reason: str
