"""One model handle for a local checkpoint and a server's model: what the front ends write with.

The TUI (story screen, compare), `slm-generate` and `slm-tui --server` hold a `ModelHandle`
and never ask which kind it is (oterm's one-agent design): it says what it is (`info` for
the card and the picker, `vocab_size` and `context_length` when known), where it runs, and
writes — one story as a stream of the engine's `Event`s read with live settings, or a
batch of stories as `GenerationResult`s.

- `LocalModel`: a loaded checkpoint (`slm_tui.checkpoint.io.LoadedCheckpoint`) through the
  engine (`generation.generate` / `generate_batch`, the row driver underneath). The engine
  and torch are imported by the methods that write, so holding a handle costs nothing.
- `ServerModel`: a model of an OpenAI-compatible server (`generation.remote.Remote`): a
  stream is one streamed request (a live settings change continues the story with a new
  request), a batch is one request per story, `batch_size` at a time (the server batches
  them); the first failure cancels the requests still out.

A brief travels in the settings (`SamplingSettings.brief`): `LocalModel`'s engine puts its
block before the prompt, `ServerModel` sends it in the request body; either way the story
written back is the story only. A batch takes one settings for all prompts or one per
prompt (each its own brief). `brief_note(handle)` is the line a front end says once when a
brief goes to a model trained without briefs (the handle knows, the front end says it:
library code never prints).

Torch-free: this module imports neither torch nor the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from slm_tui.briefing import untrained_note
from slm_tui.checkpoint.format import CheckpointInfo
from slm_tui.errors import GenerationError
from slm_tui.generation.events import Event, GenerationResult
from slm_tui.generation.remote import Cancelled, Remote
from slm_tui.generation.settings import LiveSettings, SamplingSettings

if TYPE_CHECKING:
    from slm_tui.checkpoint.io import LoadedCheckpoint
    from slm_tui.tokenizers.base import Tokenizer

Progress = Callable[[int, int], None]  # (stories done, stories in all)
SERVER_KIND = "server"  # CheckpointInfo.tokenizer_kind of a server's model


class ModelHandle(Protocol):
    """A model to write stories with, local or on a server."""

    @property
    def info(self) -> CheckpointInfo:
        """What the checkpoint card and the picker show of it."""
        ...

    @property
    def tokenizer(self) -> Tokenizer | None:
        """Its tokenizer where it is on this machine (None: on a server)."""
        ...

    @property
    def vocab_size(self) -> int | None: ...

    @property
    def context_length(self) -> int | None: ...

    @property
    def location(self) -> str:
        """Where it runs, for a status line: "cpu", "cuda:0", or the server's URL."""
        ...

    @property
    def identity(self) -> Path | str:
        """What two handles of one model compare equal by: the folder, or the model id."""
        ...

    def stream(
        self,
        prompt: str,
        settings: SamplingSettings | LiveSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """One story: a "token" event per token, then one "done" event."""
        ...

    def generate_batch(
        self,
        prompts: Sequence[str],
        settings: SamplingSettings | Sequence[SamplingSettings],
        batch_size: int = 8,
        *,
        seeds: Sequence[int],
        progress: Progress | None = None,
    ) -> list[GenerationResult]:
        """One story per prompt (story i seeded `seeds[i]`), in the order of `prompts`;
        `settings` for all, or one per prompt (each with its own brief, say)."""
        ...


@dataclass(frozen=True, eq=False)
class LocalModel:
    """A checkpoint loaded on this machine, written with the engine."""

    checkpoint: LoadedCheckpoint

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> LocalModel:
        """Load a checkpoint folder (one-line `CheckpointError`s; torch is imported here)."""
        from slm_tui.checkpoint.io import load_checkpoint

        return cls(load_checkpoint(path, device))

    @property
    def info(self) -> CheckpointInfo:
        return self.checkpoint.info

    @property
    def tokenizer(self) -> Tokenizer:
        return self.checkpoint.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.checkpoint.model.vocab_size

    @property
    def context_length(self) -> int:
        return self.checkpoint.model.cfg.context_length

    @property
    def location(self) -> str:
        return str(self.checkpoint.device)

    @property
    def identity(self) -> Path:
        return folder_identity(self.checkpoint.path)

    def stream(
        self,
        prompt: str,
        settings: SamplingSettings | LiveSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        from slm_tui.generation.stream import generate

        return generate(
            self.checkpoint.model, self.checkpoint.tokenizer, prompt, settings, cancel=cancel
        )

    def generate_batch(
        self,
        prompts: Sequence[str],
        settings: SamplingSettings | Sequence[SamplingSettings],
        batch_size: int = 8,
        *,
        seeds: Sequence[int],
        progress: Progress | None = None,
    ) -> list[GenerationResult]:
        from slm_tui.generation.batch import generate_batch

        model, tokenizer = self.checkpoint.model, self.checkpoint.tokenizer
        return generate_batch(
            model, tokenizer, prompts, settings, batch_size, seeds=seeds, progress=progress
        )


@dataclass
class ServerModelInfo(CheckpointInfo):
    """A server's model in the picker and on the card: its id is all a server says of it."""

    model_id: str = ""


def server_info(model: str) -> ServerModelInfo:
    """A server model's `info` (no step, size or figures: a server does not say them)."""
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


@dataclass(frozen=True, eq=False)
class ServerModel:
    """A model of an OpenAI-compatible server, written with its HTTP API."""

    remote: Remote
    model_id: str

    @classmethod
    def connect(cls, url: str, model: str | None = None, api_key: str | None = None,
                timeout: float = 60.0) -> ServerModel:  # fmt: skip
        """`model` on the server at `url` (default: the first it lists)."""
        remote = Remote(url, api_key, timeout=timeout)
        if model is None:
            names = remote.models()
            if not names:
                raise GenerationError(f"{remote.base} serves no model")
            model = names[0]
        return cls(remote, model)

    @property
    def info(self) -> ServerModelInfo:
        return server_info(self.model_id)

    @property
    def tokenizer(self) -> None:
        return None

    @property
    def vocab_size(self) -> None:
        return None  # the server checks top_k against its own vocabulary

    @property
    def context_length(self) -> None:
        return None

    @property
    def location(self) -> str:
        return self.remote.base

    @property
    def identity(self) -> str:
        return self.model_id

    def stream(
        self,
        prompt: str,
        settings: SamplingSettings | LiveSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        return self.remote.stream(self.model_id, prompt, settings, cancel=cancel)

    def generate_batch(
        self,
        prompts: Sequence[str],
        settings: SamplingSettings | Sequence[SamplingSettings],
        batch_size: int = 8,
        *,
        seeds: Sequence[int],
        progress: Progress | None = None,
    ) -> list[GenerationResult]:
        """One request per story, `batch_size` at a time (a brief goes in its body). The first failure (or Ctrl-C)
        cancels the requests still out: their sockets are closed, so the call ends at once
        instead of waiting for every request to time out."""
        if len(seeds) != len(prompts):
            raise GenerationError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        per_row = _per_row(settings, len(prompts))
        cancel = threading.Event()

        def one(j: int) -> GenerationResult:
            done = self.remote.complete(
                self.model_id, prompts[j], per_row[j].replace(seed=seeds[j]), cancel=cancel
            )
            return GenerationResult(
                prompt=prompts[j],
                text=done.text,
                token_ids=[],
                finish_reason=done.finish_reason,
                seed=seeds[j],
                num_tokens=done.tokens if done.tokens is not None else 0,
            )

        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(batch_size, len(prompts))) as pool:
            futures = [pool.submit(one, j) for j in range(len(prompts))]
            try:
                for n, future in enumerate(as_completed(futures), 1):
                    if progress is not None:
                        progress(n, len(prompts))
                    if future.exception() is not None:
                        break
            finally:
                cancel.set()  # a no-op when every story is written
                pool.shutdown(wait=True, cancel_futures=True)
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception()]
        first = next((f for f in failed if not isinstance(f.exception(), Cancelled)), None)
        if first is not None or failed:
            raise (first or failed[0]).exception()  # type: ignore[misc]
        return [f.result() for f in futures]


def _per_row(settings: SamplingSettings | Sequence[SamplingSettings], n: int) -> list:
    if isinstance(settings, SamplingSettings):
        return [settings] * n
    if len(settings) != n:
        raise GenerationError(f"got {len(settings)} settings for {n} prompts")
    return list(settings)


def brief_note(handle: ModelHandle) -> str | None:
    """The line a front end says (once) before a brief goes to a model trained without
    briefs; None when it was trained with them, or when that is not known (a server's
    model: a server does not say how its model was trained)."""
    info = handle.info
    if isinstance(info, ServerModelInfo) or info.briefs:
        return None
    return untrained_note(info.name)


def folder_identity(path: Path) -> Path:
    """A folder as two handles of it compare: resolved (as given when it cannot be)."""
    try:
        return Path(path).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL in the name, a symlink loop
        return Path(path)
