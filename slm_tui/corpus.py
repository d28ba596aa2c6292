"""Corpus sources -> a stream of stories, and the train/validation split over them.

A source is a Hugging Face dataset id (streamed through `datasets.load_dataset`) or local
files, globs allowed: `.txt` in the TinyStories dump format (stories separated by a line
`<|endoftext|>`; a file without that line is one story), `.jsonl`, `.json` (JSON lines, or
one array of objects, which is read whole) and `.parquet`, each with a `text` field.

Notable:
- Streamed one story at a time; memory stays flat however large the corpus is. A story may
  be at most 8 MiB (`MAX_STORY_BYTES`): a longer line or story is refused as soon as it is
  read, naming the line, so one 200 MB line costs 8 MiB and a moment, not gigabytes. A
  `.json` array is read whole, so it may be at most 256 MiB (JSON lines stream).
- Stories are stripped of surrounding whitespace; empty ones are skipped.
- Invalid UTF-8 is an error naming the file and byte offset (never silently replaced:
  a tokenizer trained on mojibake is worse than a clear stop).
- An unreachable hub fails fast (a 3 s connection probe) instead of after a minute of
  retries, and says to use `--data-files`. With HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set the
  probe is skipped so cached datasets still load.
- The split: a dataset's own `validation` split when it has one, else every k-th story
  (k = round(1 / val_fraction), starting with the first) is held out, deterministically.

(A little over the project's ~400-line guide: every reader here enforces the same bounds and
UTF-8 rule on untrusted text, and they are easiest to check side by side.)
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from slm_tui.config import DEFAULT_DATASET
from slm_tui.errors import DataError
from slm_tui.untrusted import MiB, json_problem, read_bounded, size_text

STORY_SEPARATOR = b"<|endoftext|>"
MAX_STORY_BYTES = 8 * MiB  # a TinyStories story is ~1 KB; a whole novel fits
JSON_ARRAY_LIMIT = 256 * MiB
_TOO_LONG = (
    f"a story may be at most {size_text(MAX_STORY_BYTES)}; separate stories with lines "
    f"{STORY_SEPARATOR.decode()} (.txt) or give one per line (.jsonl)"
)
SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
_USE_FILES = "use --data-files with local .txt/.jsonl/.json/.parquet files"


@dataclass(frozen=True)
class CorpusSource:
    """Where stories come from: a dataset id and split, or local files (globs allowed)."""

    dataset: str | None = None
    data_files: tuple[str, ...] = ()
    split: str = "train"

    def describe(self) -> str:
        if self.data_files:
            return ", ".join(self.data_files)
        return f"{self.dataset} [{self.split}]"


def corpus_source(
    dataset: str | None = None, data_files: Sequence[str] | None = None, split: str = "train"
) -> CorpusSource:
    """A source from CLI-style arguments: files win; neither given means the default dataset."""
    files = tuple(str(f) for f in (data_files or ()) if str(f))
    if files and dataset:
        raise DataError("give either --dataset or --data-files, not both")
    if files:
        return CorpusSource(None, files, split)
    return CorpusSource(dataset or DEFAULT_DATASET, (), split)


# ---- local files ----------------------------------------------------------------------------


def resolve_files(source: CorpusSource) -> list[Path]:
    """Expand globs; DataError for a missing file, a directory or an unsupported suffix."""
    paths: list[Path] = []
    for pattern in source.data_files:
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            if not matches:
                raise DataError(f"no files match {pattern}")
            matches = [m for m in matches if not os.path.isdir(m)]
            if not matches:
                raise DataError(f"{pattern} matches only directories; match files instead")
        else:
            matches = [expanded]
        for m in matches:
            p = Path(m)
            if not p.exists():
                raise DataError(f"{pattern}: no such file; check the path given to --data-files")
            if p.is_dir():
                raise DataError(
                    f"{p} is a directory; pass the files in it, e.g. --data-files '{p}/*.txt'"
                )
            if p.suffix.lower() not in SUFFIXES:
                raise DataError(
                    f"{p}: unsupported file type '{p.suffix}'; use {', '.join(SUFFIXES)}"
                )
            paths.append(p)
    return paths


def _decode(data: bytes, path: Path, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: invalid UTF-8 at byte {offset + exc.start}; "
            "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _iter_txt(path: Path) -> Iterator[str]:
    buf: list[bytes] = []
    start = offset = size = lineno = 0
    first = 1  # the line the story in `buf` starts at
    with open(path, "rb") as f:
        while line := f.readline(MAX_STORY_BYTES + 1):
            lineno += 1
            if len(line) > MAX_STORY_BYTES:
                raise DataError(f"{path}: line {lineno} is longer than {_TOO_LONG}")
            if line.strip() == STORY_SEPARATOR:
                text = _decode(b"".join(buf), path, start).strip()
                if text:
                    yield text
                buf, size, first = [], 0, lineno + 1
                start = offset + len(line)
            else:
                size += len(line)
                if size > MAX_STORY_BYTES:
                    raise DataError(
                        f"{path}: the story from line {first} is longer than {_TOO_LONG}"
                    )
                buf.append(line)
            offset += len(line)
    text = _decode(b"".join(buf), path, start).strip()
    if text:
        yield text


def _text_field(obj: Any, where: str) -> str:
    if not isinstance(obj, dict) or "text" not in obj:
        raise DataError(f"{where}: expected an object with a 'text' field")
    text = obj["text"]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise DataError(f"{where}: 'text' is {type(text).__name__}, expected a string")
    _check_length(text, where)
    return text.strip()


def _check_length(text: str, where: str) -> None:
    if len(text) * 4 > MAX_STORY_BYTES and len(text.encode("utf-8")) > MAX_STORY_BYTES:
        raise DataError(f"{where}: the story is longer than {_TOO_LONG}")


def _iter_jsonl(path: Path) -> Iterator[str]:
    offset = lineno = 0
    limit = 4 * MAX_STORY_BYTES  # the story, escaped as JSON (\n, \", \uXXXX), and its fields
    with open(path, "rb") as f:
        while line := f.readline(limit + 1):
            lineno += 1
            if len(line) > limit:
                raise DataError(
                    f"{path}:{lineno}: the line is longer than {size_text(limit)}; {_TOO_LONG}"
                )
            text = _decode(line, path, offset)
            offset += len(line)
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({json_problem(exc)})") from None
            story = _text_field(obj, f"{path}:{lineno}")
            if story:
                yield story


def _iter_json(path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if not head.startswith(b"["):
        yield from _iter_jsonl(path)  # JSON lines in a .json file, as `datasets` accepts
        return
    # An array cannot be streamed with the standard library; it is read whole.
    data = read_bounded(
        path, JSON_ARRAY_LIMIT, DataError, f"{path} (a JSON array, read whole; use JSON lines)"
    )
    try:
        rows = json.loads(_decode(data, path, 0))
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: invalid JSON ({type(exc).__name__})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected an array of objects with a 'text' field")
    for i, obj in enumerate(rows):
        story = _text_field(obj, f"{path}: item {i}")
        if story:
            yield story


def _iter_parquet(path: Path) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    if "text" not in pf.schema_arrow.names:
        raise DataError(f"{path}: no 'text' column (columns: {', '.join(pf.schema_arrow.names)})")
    try:
        for batch in pf.iter_batches(columns=["text"], batch_size=1024):
            for text in batch.column(0).to_pylist():
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise DataError(f"{path}: the 'text' column holds {type(text).__name__}")
                _check_length(text, f"{path}: row")
                if text.strip():
                    yield text.strip()
    except pa.ArrowException as exc:
        raise DataError(f"{path}: cannot read parquet data ({exc})") from None


_READERS = {".txt": _iter_txt, ".jsonl": _iter_jsonl, ".json": _iter_json}


def _iter_file(path: Path) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _iter_parquet(path)
    return _READERS[suffix](path)


# ---- Hugging Face datasets ------------------------------------------------------------------


def _offline_env() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _check_hub_reachable(dataset: str) -> None:
    if Path(dataset).expanduser().exists() or _offline_env():
        return  # a local dataset folder, or the user asked for the cache only
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        raise DataError(
            f"cannot load dataset '{dataset}': the Hugging Face hub ({host}) is unreachable; "
            f"{_USE_FILES} (or set HF_DATASETS_OFFLINE=1 to use a cached copy)"
        ) from None


def _hub_error(dataset: str, split: str, exc: Exception) -> DataError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return DataError(
        f"cannot load dataset '{dataset}' split '{split}' ({type(exc).__name__}: {first}); "
        f"check the id and split, or {_USE_FILES}"
    )


def _iter_hf(dataset: str, split: str) -> Iterator[str]:
    _check_hub_reachable(dataset)
    import datasets

    try:
        ds = datasets.load_dataset(dataset, split=split, streaming=True)
    except Exception as exc:  # offline, unknown id, unknown split: all end the same way
        raise _hub_error(dataset, split, exc) from None
    try:
        for row in ds:
            story = _text_field(row, f"{dataset} [{split}]")
            if story:
                yield story
    except DataError:
        raise
    except Exception as exc:  # the connection dropped mid-stream
        raise _hub_error(dataset, split, exc) from None


def dataset_splits(dataset: str) -> list[str]:
    """The split names a hub dataset has (DataError when the hub cannot be asked)."""
    _check_hub_reachable(dataset)
    import datasets

    try:
        return list(datasets.get_dataset_split_names(dataset))
    except Exception as exc:
        raise _hub_error(dataset, "*", exc) from None


# ---- the public stream --------------------------------------------------------------------


def iter_stories(source: CorpusSource) -> Iterator[str]:
    """Every non-empty story of `source`, streamed; DataError if there are none at all."""
    count = 0
    if source.data_files:
        for path in resolve_files(source):
            for story in _iter_file(path):
                count += 1
                yield story
    else:
        for story in _iter_hf(source.dataset or DEFAULT_DATASET, source.split):
            count += 1
            yield story
    if count == 0:
        raise DataError(f"no stories in {source.describe()}: the corpus is empty")


def source_size(source: CorpusSource) -> int | None:
    """Total bytes of the source files (for progress ETA); None for hub datasets."""
    if not source.data_files:
        return None
    return sum(p.stat().st_size for p in resolve_files(source))


def source_fingerprint(source: CorpusSource) -> str:
    """sha256 over the files' contents (local) or the dataset id and split (hub).

    Content, not mtime: a copied corpus reuses its shards, an edited one never does.
    """
    h = hashlib.sha256()
    if source.data_files:
        for path in resolve_files(source):
            h.update(f"file\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    else:
        h.update(f"hf\0{source.dataset}\0{source.split}".encode())
    return h.hexdigest()


# ---- train / validation split ---------------------------------------------------------------


def holdout_every(val_fraction: float) -> int:
    if not 0.0 < val_fraction < 0.5:
        raise DataError(f"validation fraction must be in (0, 0.5), got {val_fraction}")
    return max(2, round(1.0 / val_fraction))


@dataclass(frozen=True)
class SplitPlan:
    """How stories divide into train and validation: a separate source, or every k-th story."""

    train: CorpusSource
    val: CorpusSource | None  # None: hold out every `every`-th story of `train`
    every: int = 0

    def describe(self) -> str:
        if self.val is not None:
            return f"validation from {self.val.describe()}"
        return f"every {self.every}th story held out for validation"

    def fingerprint(self) -> str:
        h = hashlib.sha256(source_fingerprint(self.train).encode())
        h.update(
            source_fingerprint(self.val).encode() if self.val else f"every{self.every}".encode()
        )
        return h.hexdigest()

    def iter_tagged(self) -> Iterator[tuple[bool, str]]:
        """(is_validation, story) for the whole corpus, train and validation interleaved."""
        if self.val is None:
            for i, story in enumerate(iter_stories(self.train)):
                yield i % self.every == 0, story
        else:
            for story in iter_stories(self.train):
                yield False, story
            for story in iter_stories(self.val):
                yield True, story

    def iter_train(self) -> Iterator[str]:
        if self.val is not None:
            yield from iter_stories(self.train)
        else:
            yield from (s for is_val, s in self.iter_tagged() if not is_val)

    def iter_val(self) -> Iterator[str]:
        if self.val is not None:
            yield from iter_stories(self.val)
        else:
            yield from (s for is_val, s in self.iter_tagged() if is_val)


def plan_split(
    source: CorpusSource,
    val_source: CorpusSource | None = None,
    val_fraction: float = 0.005,
    val_split: str = "validation",
) -> SplitPlan:
    """The dataset's own validation split when it has one, else a held-out fraction."""
    if val_source is not None:
        return SplitPlan(source, val_source)
    hub = source.dataset if not source.data_files else None
    if hub and val_split != source.split and val_split in dataset_splits(hub):
        return SplitPlan(source, CorpusSource(hub, (), val_split))
    return SplitPlan(source, None, holdout_every(val_fraction))
