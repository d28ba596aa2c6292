"""Stories -> token runs for the shard writer (shards.py), in this process or in N processes.

The writer reads the corpus and cuts it into chunks of stories (~1 MB of text); `encode_chunk`
turns one chunk into each split's flat run of token ids, ready to append to a `.bin`.
`ChunkEncoder` runs it here (`workers=1`: one process, the tokenizer's own threads) or in
`workers` processes, and hands the results back in the order the chunks were given. Same
function, same chunks, same order: the shards are byte-identical whatever the worker count.

Notable:
- Workers are started with 'spawn', never 'fork': the parent may hold torch's and the
  tokenizers' native thread pools, which do not survive a fork. Each loads the tokenizer
  from its folder once, checks it has the parent's fingerprint, and encodes on
  cpu_count // workers threads (so N workers do not each start a thread per core).
- At most 2 x workers chunks are in flight (read, not yet written): memory stays flat
  however large the corpus.
- A story the tokenizer refuses is a DataError naming it (its number and opening words); a
  worker that dies (killed, out of memory) is a DataError too. Workers ignore Ctrl-C (the
  parent stops them) and leave as soon as the parent is gone, however it ended.
- With `briefs`, `encode_chunk` writes each training story with its brief
  (`briefing.training_text`) before encoding it: in the workers, so the briefs are built on
  every core, and the same in any process (a story's brief depends on its text and the seed).
- `workers=0` means one per CPU core, except for a corpus under 16 MiB, which is encoded
  here: starting the workers (~0.5 s each) would cost more than they save.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from slm_tui.briefing import TrainingBriefs, training_text
from slm_tui.config import MAX_SHARD_WORKERS
from slm_tui.errors import DataError, SlmError
from slm_tui.tokenizers import Tokenizer, load_tokenizer, register_tokenizer
from slm_tui.untrusted import MiB, short_text

MAX_WORKERS = MAX_SHARD_WORKERS
PARALLEL_MIN_BYTES = 16 * MiB  # below this, `workers=0` encodes in this process


class Chunk(NamedTuple):
    """Consecutive stories of the corpus; `first` is the number of stories before them."""

    first: int
    is_val: list[bool]
    stories: list[str]


@dataclass
class Part:
    """One split's share of a chunk: its token run, UTF-8 bytes of text and story count."""

    tokens: np.ndarray  # (n,) the shard dtype
    nbytes: int
    stories: int


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def check_workers(workers: int) -> None:
    """DataError unless `workers` is 0 (auto) or 1..MAX_WORKERS."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise DataError(
            f"workers must be 0 (one per CPU core) or a positive number of processes, "
            f"got {workers!r}"
        )
    if workers > MAX_WORKERS:
        raise DataError(f"workers must be at most {MAX_WORKERS}, got {workers}")


def resolve_workers(workers: int, corpus_bytes: int | None) -> int:
    """How many processes encode: `workers`, or for 0 the CPU count (1 for a small corpus)."""
    check_workers(workers)
    if workers:
        return workers
    if corpus_bytes is not None and corpus_bytes < PARALLEL_MIN_BYTES:
        return 1
    return cpu_count()


def encode_chunk(
    tokenizer: Tokenizer,
    chunk: Chunk,
    dtype: np.dtype,
    sep_only: bool,
    briefs: TrainingBriefs | None = None,
) -> tuple[Part, Part]:
    """(train part, validation part) of `chunk`. Each story is BOS + ids + EOS; with
    `sep_only` (BOS is EOS) it is ids + EOS, and the writer puts one BOS before the first.
    With `briefs`, training stories are written with their briefs (`training_text`)."""
    try:
        texts = [
            training_text(s, v, briefs) for s, v in zip(chunk.stories, chunk.is_val, strict=True)
        ]
        encoded = tokenizer.encode_batch(texts)
        sizes = [len(text.encode("utf-8")) for text in texts]
    except Exception as exc:  # some story in the chunk: find which, for the message
        raise _refused(tokenizer, chunk, exc) from None
    parts = []
    for flag in (False, True):
        picked = [i for i, v in enumerate(chunk.is_val) if v is flag]
        runs: list[Iterable[int]] = []
        nbytes = 0
        for i in picked:
            if not sep_only:
                runs.append((tokenizer.bos_id,))
            runs.append(encoded[i])
            runs.append((tokenizer.eos_id,))
            nbytes += sizes[i]
        count = sum(map(len, runs))  # type: ignore[arg-type]
        tokens = np.fromiter(itertools.chain.from_iterable(runs), dtype=dtype, count=count)
        parts.append(Part(tokens, nbytes, len(picked)))
    return parts[0], parts[1]


def _refused(tokenizer: Tokenizer, chunk: Chunk, exc: Exception) -> DataError:
    where, cause = "a story in a batch", exc
    for i, story in enumerate(chunk.stories):
        try:
            tokenizer.encode(story)
            story.encode("utf-8")
        except Exception as one:
            opening = short_text(" ".join(story.split()), 40)
            where, cause = f'story {chunk.first + i + 1} ("{opening}")', one
            break
    text = (
        f"the {tokenizer.kind} tokenizer cannot encode {where}: "
        f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    )
    # The story may hold what cannot be printed (a lone surrogate): make the message safe.
    return DataError(text.encode("utf-8", "backslashreplace").decode("utf-8"))


# ---- the worker processes -------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(
    cls: type[Tokenizer], kind: str, path: str, fingerprint: str, threads: int
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the pool
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # Hugging Face tokenizers' pool
    try:
        register_tokenizer(kind, cls)  # a kind registered in the parent only is known here too
        tok = load_tokenizer(path, kind)
        if tok.fingerprint != fingerprint:
            raise DataError(
                f"the tokenizer at {path} changed while shards were being written; run again"
            )
        if hasattr(tok, "_threads"):  # the kinds with a native batch encoder (spm, gpt2)
            tok._threads = threads
        _worker["tokenizer"] = tok
    except Exception as exc:  # an initializer that raises breaks the pool without a word:
        _worker["error"] = (  # the first chunk reports it instead
            exc
            if isinstance(exc, SlmError)
            else DataError(f"a shard worker cannot load the tokenizer at {path} ({exc})")
        )


def _exit_with_parent() -> None:
    # A worker waits for work on a queue it also holds open: if the parent is killed
    # (SIGKILL, OOM), nothing would ever wake it. It leaves when the parent is gone.
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def _work(
    chunk: Chunk, dtype: str, sep_only: bool, briefs: TrainingBriefs | None
) -> tuple[Part, Part]:
    if "error" in _worker:
        raise _worker["error"]
    return encode_chunk(_worker["tokenizer"], chunk, np.dtype(dtype), sep_only, briefs)


def _spawnable(tokenizer: Tokenizer) -> bool:
    """A worker can rebuild this tokenizer: it has a folder and an importable class."""
    if tokenizer.path is None:
        return False
    try:
        pickle.dumps(type(tokenizer))
    except Exception:  # a class defined inside a function
        return False
    return True


class ChunkEncoder:
    """Encodes chunks in order, here or in `workers` processes (a context manager)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        workers: int,
        dtype: np.dtype,
        briefs: TrainingBriefs | None = None,
    ) -> None:
        self.tokenizer, self.dtype, self.briefs = tokenizer, dtype, briefs
        self.sep_only = tokenizer.bos_id == tokenizer.eos_id
        self.workers = workers if workers > 1 and _spawnable(tokenizer) else 1
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ChunkEncoder:
        if self.workers > 1:
            tok = self.tokenizer
            threads = max(1, cpu_count() // self.workers)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(type(tok), tok.kind, str(tok.path), tok.fingerprint, threads),
            )
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kind is None:
            pool.shutdown(wait=True)
            return
        # An error (a worker that died, a refused story, Ctrl-C): the workers may still wait
        # on work nobody will read, and a broken pool joins them without stopping them
        # (CPython < 3.14), which hangs forever. Stop them, then let the pool go.
        procs = list((getattr(pool, "_processes", None) or {}).values())  # no public way yet
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(5)

    def map(self, chunks: Iterable[Chunk]) -> Iterator[tuple[Part, Part]]:
        """(train part, validation part) of each chunk, in the order of `chunks`."""
        if self._pool is None:
            for chunk in chunks:
                yield encode_chunk(self.tokenizer, chunk, self.dtype, self.sep_only, self.briefs)
            return
        window = 2 * self.workers
        pending: deque[Future] = deque()
        for chunk in chunks:
            pending.append(self._submit(chunk))
            if len(pending) >= window:
                yield self._result(pending.popleft())
        while pending:
            yield self._result(pending.popleft())

    def _submit(self, chunk: Chunk) -> Future:
        assert self._pool is not None
        try:
            return self._pool.submit(_work, chunk, self.dtype.str, self.sep_only, self.briefs)
        except BrokenProcessPool:
            raise _broken() from None

    @staticmethod
    def _result(future: Future) -> tuple[Part, Part]:
        try:
            return future.result()
        except BrokenProcessPool:
            raise _broken() from None


def _broken() -> DataError:
    return DataError(
        "a shard worker process stopped unexpectedly (killed, or out of memory); nothing was "
        "written; run again, or with fewer workers (--workers / data.workers)"
    )
