"""Checkpoint discovery and loading for the TUI, off the UI thread.

`scan_checkpoints` lists every checkpoint under the checkpoints folder plus the bundled
demo (and an explicitly opened one) with the torch-free `slm_tui.checkpoint_files`, so
listing never imports torch; the app runs it every two seconds in a thread worker, so a
checkpoint a training run saves shows up without a restart. `load` runs in another thread
worker and is the only place the TUI imports torch (through `slm_tui.checkpoints`).
`start_scan` and `start_load` run them in a thread worker of the node that asks (the app,
or the compare screen for its side B), and the outcome comes back to that node as a
message (`CheckpointsScanned`, `CheckpointLoaded` / `CheckpointFailed`); a failed load
leaves the current model in place. Both workers always answer: a scan that fails, however
it fails, still reports what it found (the app waits for the first scan before it opens
`--checkpoint`, so a scan that died once hung the app at "Looking for checkpoints"), and a
broken checkpoint is listed with its reason, never hiding the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual.dom import DOMNode
from textual.message import Message

from slm_tui.checkpoint_files import (
    CheckpointInfo,
    bundled_demo_path,
    list_checkpoints,
    read_info,
    resolve_checkpoint,
)
from slm_tui.errors import SlmError

if TYPE_CHECKING:
    from slm_tui.checkpoints import LoadedCheckpoint


def scan_checkpoints(
    root: Path, extra: tuple[Path, ...] = (), demo: bool = True
) -> list[CheckpointInfo]:
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
        except Exception:  # an explicit path that is broken is reported when it is loaded
            continue
        seen.add(resolved)
    return infos


def scan_signature(infos: list[CheckpointInfo]) -> tuple:
    """What must differ for the list to be redrawn (a rescan usually finds nothing new)."""
    return tuple((str(i.path), i.step, i.created, i.error) for i in infos)


def load(path: Path, device: str) -> LoadedCheckpoint:
    """Load a checkpoint on `device` (the user's --device: auto, cpu, cuda, cuda:N, mps) and
    return its `LoadedCheckpoint`; raises SlmError with a one-line reason."""
    from slm_tui.checkpoints import load_checkpoint  # torch: only a load needs it

    try:
        return load_checkpoint(path, device)
    except SlmError:
        raise
    except Exception as exc:  # a torch or safetensors failure on a damaged file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SlmError(f"{path}: cannot load ({type(exc).__name__}: {first})") from None


def start_scan(host: DOMNode, root: Path, extra: tuple[Path, ...], demo: bool) -> None:
    """Scan in a thread worker of `host`, which receives `CheckpointsScanned`."""

    def job() -> None:
        try:
            infos = scan_checkpoints(root, extra, demo=demo)
        except Exception:  # whatever went wrong, the app must hear back
            infos = []
        host.post_message(CheckpointsScanned(infos))

    host.run_worker(job, thread=True, exclusive=True, group="scan", exit_on_error=False)


def start_load(host: DOMNode, path: Path, device: str, group: str = "load") -> None:
    """Load in a thread worker of `host`, which receives `CheckpointLoaded` or
    `CheckpointFailed` (a newer load in the same group replaces a running one)."""

    def job() -> None:
        try:
            loaded = load(path, device)
        except SlmError as exc:
            host.post_message(CheckpointFailed(path, str(exc)))
        else:
            host.post_message(CheckpointLoaded(loaded))

    host.run_worker(job, thread=True, exclusive=True, group=group, exit_on_error=False)


@dataclass
class CheckpointsScanned(Message):
    infos: list[CheckpointInfo]


@dataclass
class CheckpointLoaded(Message):
    loaded: LoadedCheckpoint


@dataclass
class CheckpointFailed(Message):
    path: Path
    reason: str


@dataclass(frozen=True)
class CheckpointList:
    """What the app publishes on its `checkpoints_changed` signal: the scanned checkpoints
    and the resolved path of the loaded one (the picker marks it)."""

    infos: list[CheckpointInfo]
    loaded: Path | None
