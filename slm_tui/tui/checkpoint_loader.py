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
`--checkpoint`; loading reads the weights) or `ServerModels` (the server's `/v1/models`;
"loading" one makes a `RemoteModel`, which streams stories from the server as the engine's
`Event`s). A server that cannot be reached is a scan with an `error`, retried at the next
rescan, never a crash.

What is loaded is named by a `Target`: a checkpoint's folder (a Path), or a server model's
id (a str, whole: vLLM's `org/model` included, never read as a path). `target_of(info)`
gives a listed entry's target and `identity(...)` what two targets are compared by. A
server's list is taken as it comes (any id: a NUL, markup, a duplicate, which is listed
once), at most `MODELS_SHOWN` of them, parsed in the scan's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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
from slm_tui.generation import Event, LiveSettings, SamplingSettings
from slm_tui.generation.remote import Remote

if TYPE_CHECKING:
    from slm_tui.checkpoint.io import LoadedCheckpoint


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
    """What two targets are compared by: the id, or the resolved folder (as given when it
    cannot be resolved)."""
    if target is None or isinstance(target, str):
        return target
    try:
        return Path(target).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL in the name, a symlink loop
        return Path(target)


def target_name(target: Target) -> str:
    """A target in one short line: the model id, or the folder's name."""
    return target if isinstance(target, str) else Path(target).name


def load(path: Path, device: str) -> LoadedCheckpoint:
    """Load a checkpoint on `device` (the user's --device: auto, cpu, cuda, cuda:N, mps) and
    return its `LoadedCheckpoint`; raises SlmError with a one-line reason."""
    from slm_tui.checkpoint.io import load_checkpoint  # torch: only a load needs it

    try:
        return load_checkpoint(path, device)
    except SlmError:
        raise
    except Exception as exc:  # a torch or safetensors failure on a damaged file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SlmError(f"{path}: cannot load ({type(exc).__name__}: {first})") from None


class Source(Protocol):
    """Where the app's models come from."""

    def scan(self) -> list[CheckpointInfo]: ...

    def load(self, target: Any) -> Any: ...


@dataclass
class LocalCheckpoints:
    """Checkpoints on disk: the folder the picker lists, `--checkpoint`, the bundled demo."""

    root: Path
    extra: tuple[Path, ...] = ()
    demo: bool = True
    device: str = "auto"

    def scan(self) -> list[CheckpointInfo]:
        return scan_checkpoints(self.root, self.extra, demo=self.demo)

    def load(self, path: Path) -> LoadedCheckpoint:
        return load(path, self.device)


SERVER_KIND = "server"  # CheckpointInfo.tokenizer_kind of a server's model
MODELS_SHOWN = 1000  # a server's models listed (the first ones, in its order)


@dataclass
class ServerModelInfo(CheckpointInfo):
    """A server's model in the picker: its id is all a server says of it."""

    model_id: str = ""


@dataclass
class RemoteModel:
    """A server's model, as the app holds a loaded checkpoint: `info` for the card and the
    picker, `device` for the status line, no tokenizer (tokens are counted on the server),
    and `stream()` instead of a local model."""

    remote: Remote
    info: ServerModelInfo
    tokenizer: None = None

    @property
    def device(self) -> str:
        return self.remote.base

    def stream(
        self, prompt: str, settings: SamplingSettings | LiveSettings, cancel: threading.Event
    ) -> Iterator[Event]:
        return self.remote.stream(self.info.model_id, prompt, settings, cancel=cancel)


def server_info(model: str) -> ServerModelInfo:
    """A server model's entry in the picker (what a server says of a model is its id)."""
    return ServerModelInfo(
        path=Path(),  # not a folder: the identity is `model_id`
        name=model,
        step=0,
        tokens_seen=0,
        params=0,
        val_loss=None,
        val_bpb=None,
        tokenizer_kind=SERVER_KIND,
        vocab_size=0,
        context_length=0,
        n_layer=0,
        d_model=0,
        created="",
        model_id=model,
    )


def loaded_identity(loaded: Any) -> Path | str | None:
    """The identity of what is loaded: a server model's id, or the checkpoint's folder."""
    if loaded is None:
        return None
    if isinstance(loaded, RemoteModel):
        return loaded.info.model_id
    return identity(Path(loaded.path))


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

    def load(self, target: Target) -> RemoteModel:
        return RemoteModel(self.remote, server_info(str(target)))


def stream_events(
    loaded: Any, prompt: str, settings: LiveSettings, cancel: threading.Event
) -> Iterator[Event]:
    """A story's events from a loaded checkpoint (the local engine) or a server's model."""
    if isinstance(loaded, RemoteModel):
        return loaded.stream(prompt, settings, cancel)
    from slm_tui.generation import generate  # the engine (torch), in the worker

    return generate(loaded.model, loaded.tokenizer, prompt, settings, cancel=cancel)


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
    loaded: LoadedCheckpoint | RemoteModel


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
