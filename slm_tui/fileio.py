"""Durable file writes shared by every layer: a crash leaves the old file or the new one.

- `atomic_write_bytes` / `atomic_write_text`: a file, via a temporary sibling and a rename.
  A symlink is written through (its target is replaced, the link stays) and a path that is
  not a regular file (a device such as /dev/null, a FIFO) is written in place: a rename
  would replace the device node or the link itself.
- `temp_dir` + `replace_dir`: a directory (a tokenizer, a checkpoint), built in a hidden
  sibling and swapped into place in one step (Linux `renameat2(RENAME_EXCHANGE)`; elsewhere
  two renames, the old one put back if the second fails).
- `recover_leftovers`: what `kill -9` (or a power cut) left of a save, cleaned up by the
  next save or start: a destination left missing by a swap cut between its two renames
  gets its previous directory back, hidden temporary and trash folders of dead processes
  are removed. Every hidden folder a save makes carries its process id, so a live save is
  never touched.
- `is_disk_full` / `disk_full_reason`: ENOSPC, EDQUOT and EFBIG, reported as one sentence.
- `json_safe`: a value made fit for strict JSON (meta.json, metrics.jsonl).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeGuard


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


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException) -> TypeGuard[OSError]:
    """Whether `exc` is a write refused for lack of space (or a file-size limit)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def disk_full_reason(exc: OSError) -> str:
    """'the disk is full', 'the disk quota is exceeded' or 'the file size limit is reached'."""
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    if exc.errno == errno.EFBIG:
        return "the file size limit is reached"
    return "the disk is full"


def atomic_write_bytes(path: Path, data: bytes, *, make_parents: bool = False) -> None:
    """Write `data` to a temporary sibling, fsync, then rename it over `path`.

    A symlink at `path` is followed: its target is replaced atomically in the target's own
    folder and the link is kept. An existing path that is not a regular file (a character
    device like /dev/null or /dev/full, a FIFO) is opened and written in place; a folder is
    refused (IsADirectoryError)."""
    path = Path(path)
    if os.path.islink(path):
        path = Path(os.path.realpath(path))
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "wb") as f:  # a device or a FIFO: no rename, no fsync
            f.write(data)
        return
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
    """A fresh hidden directory `<prefix><pid>-<random><suffix>` in `parent` for building an
    output before renaming it into place (the process id lets `recover_leftovers` tell a
    dead save's folder from a live one's), with the permissions `mkdir` would give (mkdtemp's
    are 0700: a tokenizer directory is an ordinary output, readable by whoever may read its
    parent)."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", suffix=suffix, dir=parent))
    os.chmod(path, 0o777 & ~_umask())
    return path


USE_EXCHANGE = True  # False: always the two-rename fallback (tests exercise it on Linux)
# libc's renameat2, looked up on first use (False: not available)
_renameat2: Callable[..., int] | Literal[False] | None = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`); False where
    the system or the filesystem cannot, and the caller falls back to two renames."""
    global _renameat2
    if not USE_EXCHANGE:
        return False
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
    one (Linux); elsewhere the old one is renamed aside to `.trash-<name>-<pid>` first and,
    should the second rename fail or be interrupted (Ctrl-C), put back. A `kill -9` between
    the two renames leaves the old directory complete under its hidden name; the next save
    or start puts it back (`recover_leftovers`). The parent directory is fsynced, so the
    swap survives a power cut."""
    if not dest.exists():
        os.replace(new, dest)
    elif _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old directory
    else:
        trash = dest.with_name(f".trash-{dest.name}-{os.getpid()}")
        shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(dest, trash)
            os.replace(new, dest)
        finally:
            # Whatever interrupted (an error, a second Ctrl-C), `dest` must name a whole
            # directory: the new one if the second rename happened, else the old one back.
            if not os.path.lexists(dest) and os.path.lexists(trash):
                os.replace(trash, dest)
        shutil.rmtree(trash, ignore_errors=True)
    fsync_dir(dest.parent)


# ---- leftovers of interrupted saves ----------------------------------------------------------
# `.tmp-<name>-<pid>` (a checkpoint being written), `.tmp-<name>-<pid>-<random>.tmp` (a
# tokenizer being written), `.trash-<name>-<pid>` (the old directory during a two-rename
# swap) and `.<run>.tokenizer-<pid>-<random>` (a run's tokenizer before the run commits).
_SAVE_LEFTOVER = re.compile(r"^\.(tmp|trash)-(.+)-(\d+)(-[A-Za-z0-9_]+\.tmp)?$")
_RUN_TOKENIZER = re.compile(r"^\..+\.tokenizer-(\d+)-[A-Za-z0-9_]+$")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (on this machine); an unknown answer counts as alive."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, someone else's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def recover_leftovers(parent: Path) -> list[str]:
    """Clean up what dead processes' saves left in `parent`; returns what was done, one
    sentence each (nothing when there was nothing to do).

    A destination missing beside its `.trash-` folder was cut between the two renames of a
    swap: the trash holds the previous directory, complete (it was the destination until
    that moment), and is renamed back, so a cut swap loses only the save in progress, like a
    kill just before it. Every other hidden folder of a dead process is deleted. Folders of
    live processes are left alone."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    groups: dict[tuple[str, int], dict[str, list[Path]]] = {}
    stale: list[Path] = []
    for entry in names:
        m = _SAVE_LEFTOVER.match(entry)
        if m is not None and not pid_alive(int(m.group(3))):
            group = groups.setdefault((m.group(2), int(m.group(3))), {"tmp": [], "trash": []})
            group[m.group(1)].append(parent / entry)
            continue
        m = _RUN_TOKENIZER.match(entry)
        if m is not None and not pid_alive(int(m.group(1))):
            stale.append(parent / entry)
    done: list[str] = []
    for (name, pid), group in sorted(groups.items()):
        dest = parent / name
        if group["trash"] and not os.path.lexists(dest):
            try:
                os.replace(group["trash"][0], dest)
            except OSError:
                continue  # leave it for a later attempt rather than lose it
            done.append(f"restored {dest} from a save cut short by the end of process {pid}")
        for path in group["tmp"] + group["trash"]:
            if os.path.lexists(path):
                _remove(path)
                done.append(f"removed {path.name} left by a dead process")
    for path in stale:
        _remove(path)
        done.append(f"removed {path.name} left by a dead process")
    if done:
        fsync_dir(parent)
    return done


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


def write_output(path: Path, text: str, flag: str = "--output") -> None:
    """A command's output file, written whole or not at all: to a temporary sibling, fsynced,
    renamed over `path` (a symlink's target is replaced; a device or FIFO is written in place:
    `atomic_write_bytes`). A missing folder or a full disk is one `SlmError` naming `flag`
    and saying what was kept."""
    from slm_tui.errors import SlmError

    path = path.expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SlmError(f"{flag} {path}: folder {parent} does not exist")
    existed = path.exists()
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        kept = "the file there was kept as it was" if existed else "nothing was written"
        if existed and not path.is_file():
            kept = "not all stories were written"
        raise SlmError(f"{flag} {path}: {disk_full_reason(exc)}; {kept}") from None
