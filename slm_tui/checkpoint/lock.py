"""Readers, recorders and the saver of one checkpoint folder take turns: an `flock` on the
folder itself.

- Loading (`checkpoints.load_checkpoint`) holds it shared while it reads the folder's files
  (config, meta, tokenizer, the weights' bytes; building the model comes after).
- `slm-train eval --record` (`checkpoint.format.record_evaluation`) holds it exclusive for its
  read-modify-write of meta.json, so two records never lose one another's entry.
- A save (`checkpoints.save_checkpoint`) holds the old folder's lock exclusive while it swaps
  the new one in, so a swap never lands in the middle of a load or a record. Loads and
  records enter through the parent folder's lock, shared, which a save holds exclusive while
  it waits: a stream of loads cannot starve a save.

The lock is on the folder (its inode), not on the path: once a save has swapped `latest/`,
the path names a new folder with a lock of its own, and a holder that finds the path
naming another folder (`FolderLock.current()`) knows its folder was replaced: a load reads
again, a record refuses (its figure belongs to the weights that were replaced).

Waits are bounded, so a stopped reader never stalls a trainer: past its wait a save swaps
anyway (a load that meets it detects the mix by the weights' checksum and reads again) and
a load reads unlocked the same way; a record refuses in one line. On a filesystem without
`flock` (some network filesystems) nothing is locked and all of this falls back to those
checks. Torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SAVE_WAIT = 10.0  # seconds a save waits for loads and records of the folder it replaces
READ_WAIT = 10.0  # seconds a load waits for a save or a record to finish
RECORD_WAIT = 30.0  # seconds a record waits for loads and a save


@dataclass
class FolderLock:
    path: Path
    fd: int | None  # None: the folder could not be opened (missing, not readable)
    # True: held; False: the wait ran out; None: not locked (no folder, no flock here)
    locked: bool | None

    def current(self) -> bool:
        """Whether `path` still names the folder this lock is on (no save replaced it)."""
        if self.fd is None:
            return True  # nothing to compare with: the caller goes on unlocked
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        own = os.fstat(self.fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _flock(fd: int, exclusive: bool, wait: float) -> bool | None:
    """Take the lock within `wait` seconds: True, False when the wait ran out, None when the
    filesystem has no flock. Polled, so the wait is bounded (flock itself has no timeout)."""
    kind = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + wait
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, kind)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        except OSError:  # ENOLCK, EBADF (NFS wants a writable file for an exclusive lock)
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.005)


def _open_dir(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


@contextlib.contextmanager
def folder_lock(
    path: Path, *, exclusive: bool, wait: float, save: bool = False
) -> Iterator[FolderLock]:
    """Hold `path`'s folder lock (shared or exclusive) for the `with` block; see the module
    docstring. A folder that cannot be opened (not there yet, not readable) is not locked
    (`locked` None) and the caller goes on as it would without flock.

    The parent folder's lock is the way in, so a save is not starved by loads that follow
    one another without a gap: a load or a record passes through it shared (only while it
    takes the folder's lock), a save (`save`) holds it exclusive, so once a save waits no new
    load or record starts before it."""
    path = Path(path)
    gate, fd = _open_dir(path.parent), None
    try:
        if gate is not None:
            _flock(gate, save, wait)
        fd = _open_dir(path)  # opened past the way in: no save is swapping it right now
        locked = _flock(fd, exclusive or save, wait) if fd is not None else None
        if gate is not None and not save:
            os.close(gate)  # through the way in: it stays open for a waiting save
            gate = None
        yield FolderLock(path, fd, locked)
    finally:
        if gate is not None:
            os.close(gate)
        if fd is not None:
            os.close(fd)  # closing a descriptor drops its lock
