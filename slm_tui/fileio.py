"""Durable file writes shared by every layer: a crash leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, make_parents: bool = False) -> None:
    """Write `data` to a temporary sibling, fsync, then rename it over `path`."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the user's outputs are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, make_parents: bool = False) -> None:
    """`atomic_write_bytes` of `text` encoded as UTF-8 (no newline translation)."""
    atomic_write_bytes(path, text.encode("utf-8"), make_parents=make_parents)


def temp_dir(parent: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """A fresh hidden directory in `parent` for building an output before renaming it into
    place, with the permissions `mkdir` would give (mkdtemp's are 0700: a tokenizer
    directory is an ordinary output, readable by whoever may read its parent)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(path, 0o777 & ~_umask())
    return path


def as_ordinary_file(path: Path) -> None:
    """Give a file written by a library that makes it 0600 (safetensors' `save_file`) the
    permissions `open()` would have given it."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
