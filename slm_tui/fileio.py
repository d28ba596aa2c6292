"""Durable file writes shared by every layer: a crash leaves the old file or the new one.

- `atomic_write_bytes` / `atomic_write_text`: a file, via a temporary sibling and a rename.
- `temp_dir` + `replace_dir`: a directory (a tokenizer, a checkpoint), built in a hidden
  sibling and swapped into place in one step.
- `json_safe`: a value made fit for strict JSON (meta.json, metrics.jsonl).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` for strict JSON: NaN and inf become null (JSON has neither; a non-finite
    figure is "unknown"), paths become strings, tuples lists, dict keys strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


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


_renameat2 = None  # libc's renameat2, looked up on first use (False: not available)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`); False where
    the system or the filesystem cannot, and the caller falls back to two renames."""
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            _renameat2 = libc.renameat2
        except (OSError, AttributeError):
            _renameat2 = False
    if _renameat2 is False:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, dest: Path) -> None:
    """Move the finished directory `new` (a sibling of `dest`) to `dest`, deleting what was
    there, so that `dest` names a complete directory, old or new, at every moment.

    With an existing `dest` the two are swapped by one atomic rename where the system has
    one (Linux); elsewhere the old one is renamed aside first and, should the second rename
    fail, put back. The parent directory is fsynced, so the swap survives a power cut."""
    if not dest.exists():
        os.replace(new, dest)
    elif _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old directory
    else:
        trash = dest.with_name(f".trash-{dest.name}-{os.getpid()}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(dest, trash)
        try:
            os.replace(new, dest)
        except BaseException:
            os.replace(trash, dest)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    fsync_dir(dest.parent)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (before it is renamed into place)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(dirpath))


def as_ordinary_file(path: Path) -> None:
    """Give a file written by a library that makes it 0600 (safetensors' `save_file`) the
    permissions `open()` would have given it."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
