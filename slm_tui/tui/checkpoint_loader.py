"""Checkpoint discovery and loading for the TUI, off the UI thread: from local folders, or
the models of an OpenAI-compatible server (`slm-tui --server URL`).

`scan_checkpoints` lists every checkpoint under the checkpoints folder plus the bundled
demo (and an explicitly opened one) with the torch-free `slm_tui.checkpoint.format`, so
listing never imports torch; the app runs it every two seconds in a thread worker, so a
checkpoint a training run saves shows up without a restart. `load` runs in another thread
worker and is the only place the TUI imports torch (through `slm_tui.checkpoint.io`).
`start_scan` and `start_load` run them in a thread worker of the node that asks (the app,
or the compare screen for its side B), and the outcome comes back to that node as a
message (`CheckpointsScanned`, `CheckpointLoaded` / `CheckpointFailed`); a failed load
leaves the current model in place. Both workers always answer: a scan that fails, however
it fails, still reports what it found (the app waits for the first scan before it opens
`--checkpoint`, so a scan that died once hung the app at "Looking for checkpoints"), and a
broken checkpoint is listed with its reason, never hiding the others.

Where the models come from is a `Source`: `LocalCheckpoints` (the folder, the bundled demo,
`--checkpoint`; loading reads the weights) or `ServerModels` (the server's `/v1/models`).
Either way a load gives a `ModelHandle` (`slm_tui.handle`: a `LocalModel` or a
`ServerModel`), which the app writes with without asking which it is. A server that cannot
be reached is a scan with an `error`, retried at the next rescan, never a crash.

What is loaded is named by a `Target`: a checkpoint's folder (a Path), or a server model's
id (a str, whole: vLLM's `org/model` included, never read as a path). `target_of(info)`
gives a listed entry's target and `identity(...)` what two targets are compared by. A
server's list is taken as it comes (any id: a NUL, markup, a duplicate, which is listed
once), at most `MODELS_SHOWN` of them, parsed in the scan's thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from textual.dom import DOMNode
from textual.message import Message

from slm_tui.checkpoint.format import (
    CheckpointInfo,
    bundled_demo_path,
    list_checkpoints,
    read_info,
    resolve_checkpoint,
)
from slm_tui.errors import SlmError
from slm_tui.generation.remote import Remote
from slm_tui.handle import (
    LocalModel,
    ModelHandle,
    ServerModel,
    ServerModelInfo,
    folder_identity,
    server_info,
)


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
    return tuple((str(target_of(i)), i.step, i.created, i.error) for i in infos)


Target = Path | str  # a checkpoint folder, or a server model's id


def target_of(info: CheckpointInfo) -> Target:
    """What loading a listed entry asks for: a server model's id, else the folder."""
    return info.model_id if isinstance(info, ServerModelInfo) else Path(info.path)


def identity(target: Target | None) -> Path | str | None:
    """What two targets are compared by (as `ModelHandle.identity`): the id, or the resolved
    folder."""
    if target is None or isinstance(target, str):
        return target
    return folder_identity(target)


def target_name(target: Target) -> str:
    """A target in one short line: the model id, or the folder's name."""
    return target if isinstance(target, str) else Path(target).name


def load(path: Path, device: str) -> LocalModel:
    """Load a checkpoint on `device` (the user's --device: auto, cpu, cuda, cuda:N, mps);
    raises SlmError with a one-line reason. Torch is imported here, in the worker."""
    try:
        return LocalModel.load(path, device)
    except SlmError:
        raise
    except Exception as exc:  # a torch or safetensors failure on a damaged file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SlmError(f"{path}: cannot load ({type(exc).__name__}: {first})") from None


class Source(Protocol):
    """Where the app's models come from."""

    def scan(self) -> list[CheckpointInfo]: ...

    def load(self, target: Target) -> ModelHandle: ...


@dataclass
class LocalCheckpoints:
    """Checkpoints on disk: the folder the picker lists, `--checkpoint`, the bundled demo."""

    root: Path
    extra: tuple[Path, ...] = ()
    demo: bool = True
    device: str = "auto"

    def scan(self) -> list[CheckpointInfo]:
        return scan_checkpoints(self.root, self.extra, demo=self.demo)

    def load(self, target: Target) -> LocalModel:
        return load(Path(target), self.device)


MODELS_SHOWN = 1000  # a server's models listed (the first ones, in its order)


@dataclass
class ServerModels:
    """The models of an OpenAI-compatible server."""

    url: str
    api_key: str | None = None
    remote: Remote = field(init=False)
    listed: int = 0  # distinct ids the server listed at the last scan (MODELS_SHOWN shown)

    def __post_init__(self) -> None:
        self.remote = Remote(self.url, self.api_key, timeout=30)

    def scan(self) -> list[CheckpointInfo]:
        ids = list(dict.fromkeys(self.remote.models()))  # a duplicate id is one model
        self.listed = len(ids)
        return [server_info(name) for name in ids[:MODELS_SHOWN]]

    def note(self) -> str | None:
        """What the last scan left out, when it did."""
        if self.listed <= MODELS_SHOWN:
            return None
        return (
            f"the server lists {self.listed:,} models; the picker shows the first {MODELS_SHOWN:,}"
        )

    def load(self, target: Target) -> ServerModel:
        return ServerModel(self.remote, str(target))


def start_scan(host: DOMNode, source: Source) -> None:
    """Scan in a thread worker of `host`, which receives `CheckpointsScanned` (with the
    reason, when the source could not be read: a server that is down)."""

    def job() -> None:
        error = None
        try:
            infos = source.scan()
        except Exception as exc:  # whatever went wrong, the app must hear back
            infos, error = [], str(exc) if isinstance(exc, SlmError) else type(exc).__name__
        note = getattr(source, "note", lambda: None)() if error is None else None
        host.post_message(CheckpointsScanned(infos, error, scan_signature(infos), note))

    host.run_worker(job, thread=True, exclusive=True, group="scan", exit_on_error=False)


def start_load(host: DOMNode, source: Source, target: Target, group: str = "load") -> None:
    """Load in a thread worker of `host`, which receives `CheckpointLoaded` or
    `CheckpointFailed` (a newer load in the same group replaces a running one)."""

    def job() -> None:
        try:
            loaded = source.load(target)
        except SlmError as exc:
            host.post_message(CheckpointFailed(target, str(exc)))
        else:
            host.post_message(CheckpointLoaded(loaded))

    host.run_worker(job, thread=True, exclusive=True, group=group, exit_on_error=False)


@dataclass
class CheckpointsScanned(Message):
    infos: list[CheckpointInfo]
    error: str | None = None  # why the source could not be read (the list is then empty)
    signature: tuple = ()  # scan_signature(infos), computed in the worker
    note: str | None = None  # what the list left out (a server's thousands of models)


@dataclass
class CheckpointLoaded(Message):
    loaded: ModelHandle


@dataclass
class CheckpointFailed(Message):
    target: Target
    reason: str


@dataclass(frozen=True)
class CheckpointList:
    """What the app publishes on its `checkpoints_changed` signal: the scanned checkpoints
    and the identity of the loaded one (the picker marks it)."""

    infos: list[CheckpointInfo]
    loaded: Path | str | None
