"""Token shards on disk and the batch sampler that reads them (corpus sources: corpus.py).

A shard is one split: `<split>.bin` (token ids, uint16 when the vocab fits, else uint32) and
`<split>.json` (dtype, token/byte/story counts, tokenizer and source fingerprints). Each
story is written as BOS + ids + EOS; where BOS and EOS are one token (GPT-2's
`<|endoftext|>`), one of it stands between two stories: `<eot> a <eot> b <eot>`.

Notable:
- Written incrementally in chunks of stories (~1 MB of text), to temporary files that are
  renamed into place; the JSON sidecars are written last, so a directory with sidecars is
  complete. Memory stays flat in corpus size. A failed or interrupted write leaves nothing
  half-written behind (in the cache, not even the folder).
- `workers` processes encode the chunks (shard_encoder.py; the commands default to one per
  CPU core), and the shards are byte-identical whatever the count: chunks are cut and
  written in corpus order by this process. The sidecars differ only in
  `SIDECAR_TIMING_FIELDS`; every other field (`SIDECAR_CONTENT_FIELDS`) is the same for the
  same source and tokenizer.
- Cached by (source fingerprint, tokenizer fingerprint, briefs): a second run is free;
  shards from another source, tokenizer or brief setting are never reused (rebuilt in the
  cache, refused elsewhere without `force`).
- With `briefs` (`briefing.TrainingBriefs`: `data.briefs`), a share of the training stories
  is written after its brief block, in the worker that encodes them; each story's brief is
  fixed by its own text and the seed, so the shards are the same for any worker count.
  Validation stories are always plain. Shards with briefs live in a cache folder of their
  own and record the setting (`briefs` in the sidecars; `bytes` counts the text written,
  blocks included). `data.blank_lines` (a share of training stories with a blank line
  between paragraphs) travels in the same object and key, by the same rules.
- `BatchSampler` draws (T+1)-token windows at random offsets from a generator seeded by
  (seed, cursor), so a run resumes exactly from a saved cursor, and every rank takes its
  slice of the same global draw (DDP with N ranks sees what one process would).
- `iter_windows` is the one way text is cut for evaluation (in-run validation and
  `slm-train eval`): windows of T targets with stride T, the shorter tail included, so every
  token after the first is a target exactly once (BOS and EOS included).
- With a validation file of the user's choice (`refuse_overlap`), a training story whose
  words are also a validation story's is refused before any shard is complete.

(A little over the project's ~400-line guide: the writer, its cache rules and the sampler
all speak the shard format defined here; split, the format would live in two places.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slm_tui.briefing import TrainingBriefs
from slm_tui.corpus import (
    CorpusSource,
    SplitPlan,
    corpus_source,
    iter_stories,
    plan_split,
    source_fingerprint,
    source_size,
)
from slm_tui.errors import DataError
from slm_tui.shard_encoder import Chunk, ChunkEncoder, Part, check_workers, resolve_workers
from slm_tui.tokenizers import Tokenizer
from slm_tui.untrusted import JSON_LIMIT, check_fields, read_bounded, short_text

__all__ = [
    "BatchSampler",
    "CorpusSource",
    "ShardProgress",
    "Shards",
    "SplitPlan",
    "TokenShard",
    "corpus_source",
    "default_shards_dir",
    "iter_stories",
    "iter_windows",
    "load_shard",
    "plan_split",
    "prepare_shards",
    "source_fingerprint",
]

SHARD_FORMAT = "slm-tui-shard"
SHARD_VERSION = 1
SPLITS = ("train", "val")
_BATCH_BYTES = 1 << 20  # characters of text per chunk of stories (one encode_batch call)
# A sidecar's fields and what each must be (checked on every load: a shard folder can be
# copied from anywhere).
SIDECAR_FIELDS = dict.fromkeys(("tokens", "bytes", "stories"), "int") | dict.fromkeys(
    ("format", "dtype", "tokenizer_fingerprint", "source_fingerprint", "briefs"), "str"
)
# What a sidecar holds: fields that depend only on the source, the tokenizer and the split
# rule (the same for any worker count, any machine), and when it was written; shards written
# with briefs also hold `briefs` (the setting: `TrainingBriefs.key`).
SIDECAR_CONTENT_FIELDS = (
    "format", "version", "dtype", "source_fingerprint", "tokenizer_fingerprint",
    "tokenizer_kind", "vocab_size", "bos_id", "eos_id", "source", "split_rule", "split",
    "tokens", "bytes", "stories",
)  # fmt: skip
SIDECAR_TIMING_FIELDS = ("created",)
CACHE_KEY = ("source_fingerprint", "tokenizer_fingerprint", "briefs")  # None: no briefs


class TokenShard:
    """One split on disk, memory-mapped read-only."""

    def __init__(self, path: Path, meta: dict[str, Any], tokens: np.ndarray) -> None:
        self.path = path
        self.meta = meta
        self.tokens = tokens  # (N,) uint16 | uint32
        self.num_tokens = int(meta["tokens"])
        self.num_bytes = int(meta["bytes"])
        self.num_stories = int(meta.get("stories", 0))

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        return f"TokenShard({self.path}, tokens={self.num_tokens}, stories={self.num_stories})"


def _sidecar(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".bin", ".json") else path
    return stem.with_suffix(".bin"), stem.with_suffix(".json")


def load_shard(path: str | os.PathLike[str]) -> TokenShard:
    """Load `<split>.bin`/`.json` (either name, or the stem); DataError if incomplete."""
    bin_path, json_path = _sidecar(Path(path))
    if not json_path.is_file():
        raise DataError(f"{json_path}: no such shard; write shards with `slm-train data`")
    invalid = f"{json_path} is not a valid shard file; rebuild with --force"
    try:
        meta = json.loads(read_bounded(json_path, JSON_LIMIT, DataError))
    except (ValueError, RecursionError):
        raise DataError(invalid) from None
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
        raise DataError(invalid)
    check_fields(
        meta, SIDECAR_FIELDS, DataError, str(json_path), required=("dtype", "tokens", "bytes")
    )
    if meta["dtype"] not in ("uint16", "uint32"):
        raise DataError(invalid)
    dtype, n = np.dtype(meta["dtype"]), meta["tokens"]
    if not bin_path.is_file() or bin_path.stat().st_size != n * dtype.itemsize:
        raise DataError(f"{bin_path} is missing or truncated; rebuild with --force")
    tokens = np.memmap(bin_path, dtype=dtype, mode="r") if n else np.zeros(0, dtype)
    return TokenShard(bin_path, meta, tokens)


@dataclass
class ShardProgress:
    """How far `prepare_shards` has got (sent after every batch of stories)."""

    stories: int  # stories written so far (both splits)
    bytes: int  # UTF-8 bytes of those stories' text
    tokens: int  # tokens written so far (both splits, BOS/EOS included)
    total_bytes: int | None  # size of the training source on disk, when known
    elapsed: float  # seconds since writing began
    workers: int = 1  # processes encoding stories (1: this one)


@dataclass
class Shards:
    dir: Path
    train: TokenShard
    val: TokenShard
    cached: bool = False  # True when nothing had to be written


def _cache_root() -> Path:
    env = os.environ.get("SLM_SHARDS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_cache_path("slm-tui") / "shards"


def _slug(source: CorpusSource) -> str:
    name = Path(source.data_files[0]).stem if source.data_files else f"{source.dataset}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:40] or "corpus"


def default_shards_dir(
    source: CorpusSource, tokenizer: Tokenizer, briefs: TrainingBriefs | None = None
) -> Path:
    """<cache>/<name>-<source fp>-<kind>-<tokenizer fp>[-briefs-<key hash>] (cache:
    $SLM_SHARDS_DIR or the user cache)."""
    src = source_fingerprint(source)[:12]
    name = f"{_slug(source)}-{src}-{tokenizer.kind}-{tokenizer.fingerprint[:12]}"
    if briefs is not None:
        name += "-briefs-" + hashlib.sha256(briefs.key.encode()).hexdigest()[:8]
    return _cache_root() / name


def _dtype_for(tokenizer: Tokenizer) -> np.dtype:
    return np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)


def _cached(out: Path, key: dict[str, str]) -> Shards | None:
    try:
        train, val = (load_shard(out / s) for s in SPLITS)
    except DataError:
        return None
    for shard in (train, val):
        if any(shard.meta.get(k) != key.get(k) for k in CACHE_KEY):
            return None
    return Shards(out, train, val, cached=True)


class _Writer:
    """Appends encoded parts (BOS + ids + EOS per story) to a temporary .bin; counts what it
    wrote. A BOS that is the EOS token is written once, at the start: the previous story's
    EOS is it (the parts then hold ids + EOS per story)."""

    def __init__(self, out: Path, split: str, dtype: np.dtype, tokenizer: Tokenizer) -> None:
        self.tmp = out / f".{split}.bin.tmp"
        self.f = open(self.tmp, "wb")  # noqa: SIM115 (closed in finish/abort)
        self.dtype, self.bos = dtype, tokenizer.bos_id
        self.sep_only = tokenizer.bos_id == tokenizer.eos_id
        self.tokens = self.bytes = self.stories = 0

    def add(self, part: Part) -> None:
        if not part.stories:
            return
        if self.sep_only and self.tokens == 0:
            np.asarray([self.bos], dtype=self.dtype).tofile(self.f)
            self.tokens += 1
        part.tokens.tofile(self.f)
        self.tokens += len(part.tokens)
        self.bytes += part.nbytes
        self.stories += part.stories

    def finish(self, final: Path) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, final)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_shards(
    source: CorpusSource,
    tokenizer: Tokenizer,
    output_dir: str | os.PathLike[str] | None = None,
    *,
    val_source: CorpusSource | None = None,
    val_fraction: float = 0.005,
    force: bool = False,
    progress: Callable[[ShardProgress], None] | None = None,
    refuse_overlap: bool = False,
    workers: int = 1,
    briefs: TrainingBriefs | None = None,
) -> Shards:
    """Tokenize `source` into train/val shards (cached; see module docstring).

    `progress` gets a `ShardProgress` after every chunk of stories. `refuse_overlap` (a
    validation file of the user's choice): a training story whose text is also in
    `val_source` is a DataError before any shard is complete. `workers`: processes that
    encode stories: 1 (default) this process only, N that many, 0 one per CPU core (the
    shards are the same either way). More than one are started with 'spawn', so a script
    that calls this with workers != 1 needs the `if __name__ == "__main__":` guard.
    `briefs`: training stories with their briefs (module docstring).
    """
    check_workers(workers)
    plan = plan_split(source, val_source, val_fraction)
    key = {"source_fingerprint": plan.fingerprint(), "tokenizer_fingerprint": tokenizer.fingerprint}
    if briefs is not None:
        key["briefs"] = briefs.key
    in_cache = output_dir is None
    out = (
        default_shards_dir(source, tokenizer, briefs)
        if output_dir is None
        else Path(output_dir).expanduser()
    )
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; --output must be a directory")
    if not force and (hit := _cached(out, key)) is not None:
        return hit
    if not in_cache and not force and out.is_dir() and any(out.iterdir()):
        raise DataError(
            f"{out} already holds files (shards of another source, tokenizer or brief "
            "setting?); "
            "use --force to replace them, or choose another --output"
        )
    total = source_size(plan.train)
    held_out = _story_keys(plan.val) if refuse_overlap and plan.val is not None else None
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:  # from here on the directory is incomplete until the sidecars land
        (out / f"{split}.json").unlink(missing_ok=True)

    def chunks() -> Iterator[Chunk]:
        is_val: list[bool] = []
        stories: list[str] = []
        size = first = 0
        for flag, story in plan.iter_tagged():
            if held_out is not None and not flag and _story_key(story) in held_out:
                assert plan.val is not None  # held_out holds its stories
                raise DataError(
                    f"the validation text ({plan.val.describe()}) shares stories with the "
                    f'training text, e.g. "{short_text(" ".join(story.split()), 60)}"; validate on '
                    "stories kept out of training"
                )
            is_val.append(flag)
            stories.append(story)
            size += len(story)  # characters: a cheap stand-in for bytes when cutting chunks
            if size >= _BATCH_BYTES:
                yield Chunk(first, is_val, stories)
                first += len(stories)
                is_val, stories, size = [], [], 0
        if stories:
            yield Chunk(first, is_val, stories)

    dtype = _dtype_for(tokenizer)
    writers: dict[str, _Writer] = {}
    try:
        writers = {s: _Writer(out, s, dtype, tokenizer) for s in SPLITS}
        t0 = time.perf_counter()
        count = resolve_workers(workers, total)
        with ChunkEncoder(tokenizer, count, dtype, briefs) as encoder:
            for parts in encoder.map(chunks()):
                for split, part in zip(SPLITS, parts, strict=True):
                    writers[split].add(part)
                if progress is not None:
                    progress(
                        ShardProgress(
                            stories=sum(w.stories for w in writers.values()),
                            bytes=sum(w.bytes for w in writers.values()),
                            tokens=sum(w.tokens for w in writers.values()),
                            total_bytes=total,
                            elapsed=time.perf_counter() - t0,
                            workers=encoder.workers,
                        )
                    )
        for split in SPLITS:
            if writers[split].stories == 0:
                what = "training" if split == "train" else "validation"
                raise DataError(
                    f"{source.describe()} has too few stories: none left for {what} "
                    f"({plan.describe()}); add more text"
                )
        base = {
            "format": SHARD_FORMAT,
            "version": SHARD_VERSION,
            "dtype": dtype.name,
            **key,
            "tokenizer_kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "bos_id": tokenizer.bos_id,
            "eos_id": tokenizer.eos_id,
            "source": source.describe(),
            "split_rule": plan.describe(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        for split in SPLITS:
            w = writers[split]
            w.finish(out / f"{split}.bin")
            meta = {**base, "split": split, "tokens": w.tokens, "bytes": w.bytes}
            _write_json(out / f"{split}.json", {**meta, "stories": w.stories})
    except BaseException:
        for w in writers.values():
            if not w.f.closed:
                w.abort()
        if in_cache:
            _discard(out)
        raise
    train, val = (load_shard(out / s) for s in SPLITS)
    return Shards(out, train, val, cached=False)


def _discard(out: Path) -> None:
    """After a failed write into the cache: its shards (sidecars already gone) and, when
    nothing else is left, the folder."""
    for split in SPLITS:
        if not (out / f"{split}.json").exists():
            (out / f"{split}.bin").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else is in there: leave it
        out.rmdir()


def _story_key(story: str) -> bytes:
    """A story's identity for the overlap check: its words, whitespace-insensitive."""
    return hashlib.blake2b(" ".join(story.split()).encode("utf-8"), digest_size=16).digest()


def _story_keys(source: CorpusSource) -> set[bytes]:
    return {_story_key(story) for story in iter_stories(source)}


class BatchSampler:
    """Random (T+1)-token windows; deterministic from (seed, cursor); rank-sharded.

    `rows` is what one rank takes per draw; a draw is `rows * world_size` windows and rank r
    takes rows [r * rows, (r + 1) * rows), so the split always divides evenly (the trainer
    gets `rows` from `TrainConfig.micro_batch_size`, the one batch-divisibility check).
    """

    def __init__(
        self,
        shard: TokenShard,
        rows: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if rows < 1 or seq_len < 1:
            raise DataError(f"rows and sequence length must be positive ({rows}, {seq_len})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in a world of size {world_size}")
        if shard.num_tokens < seq_len + 1:
            raise DataError(
                f"{shard.path} has {shard.num_tokens} tokens, fewer than one window of "
                f"{seq_len + 1}; use more text or a shorter context"
            )
        self.shard, self.rows, self.seq_len, self.seed = shard, rows, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.cursor = 0
        self._span = np.arange(seq_len + 1)

    def next_batch(self) -> np.ndarray:
        """(rows, seq_len + 1) int64: this rank's rows of draw `cursor`."""
        rng = np.random.default_rng([self.seed, self.cursor])
        starts = rng.integers(
            0, self.shard.num_tokens - self.seq_len, size=self.rows * self.world_size
        )
        mine = starts[self.rank * self.rows : (self.rank + 1) * self.rows]
        self.cursor += 1
        return self.shard.tokens[mine[:, None] + self._span].astype(np.int64)  # (b, T+1)

    def state_dict(self) -> dict[str, int]:
        return {"cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = int(state["cursor"])


def iter_windows(
    tokens: np.ndarray | Iterable[np.ndarray],
    seq_len: int,
    batch_size: int,
    max_batches: int | None = None,
) -> Iterator[np.ndarray]:
    """Evaluation windows over a token sequence (an array, e.g. a shard's tokens, or a stream
    of 1-D chunks): int64 batches of `batch_size` rows of `seq_len + 1` tokens, stride
    `seq_len`, in order. Consecutive windows share one token (the last input of one is the
    first of the next), so every token after the very first is a target exactly once, BOS
    and EOS included. At the end come the remaining whole windows as one smaller batch, then
    the tail shorter than a window as a (1, n + 1) batch. At most `max_batches` batches.
    """
    if batch_size < 1 or seq_len < 1:
        raise DataError(f"batch size and window must be positive ({batch_size}, {seq_len})")
    step = batch_size * seq_len
    if isinstance(tokens, np.ndarray):  # read a memory-mapped shard a batch at a time
        array = tokens
        tokens = (array[i : i + step] for i in range(0, array.shape[0], step))
    idx = np.arange(batch_size)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    left = max_batches if max_batches is not None else -1
    buf = np.zeros(0, dtype=np.int64)
    for chunk in tokens:
        buf = np.concatenate([buf, np.asarray(chunk, dtype=np.int64)])
        while buf.size >= step + 1:
            if left == 0:
                return
            yield buf[idx]  # (b, T+1)
            left -= 1
            buf = buf[step:]
    whole = (buf.size - 1) // seq_len
    if whole > 0 and left != 0:
        yield buf[idx[:whole]]  # (k, T+1), k < b
        left -= 1
        buf = buf[whole * seq_len :]
    if buf.size > 1 and left != 0:
        yield buf[None, :]  # (1, n+1), n < T
