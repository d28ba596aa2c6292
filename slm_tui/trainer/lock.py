"""One run per folder: an exclusive `flock` on `<run folder>/.lock`, held for the whole run.

Two `slm-train model` on one `--output` (a fresh start, `--resume` or `--force`) would both
pass the "folder is empty" check, both train, and interleave their metrics and saves. The
first to take the lock trains; any other is refused in one line naming the process that
holds it (read from /proc/locks by the lock file's inode, where there is one).

The kernel drops the lock when the holding process exits, however it exits (`kill -9`
included), so a stale lock never blocks a new run and nothing needs cleaning. The file is
left in place (empty, hidden), except that a fresh run refused before it wrote anything
removes the folder it created for the lock; so that a process that opened the file just
before it was removed cannot hold a lock on a file no longer there, a lock only counts once
the file it locked is still the one at the path (else it is taken again). Under torchrun
only rank 0 takes it. `lock_holder` tells a watcher (slm-tui) which process trains in a
folder, without touching the lock. Torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from slm_tui.errors import TrainingError

LOCK_FILE = ".lock"


def _holder(fd: int) -> int | None:
    """The process holding an flock on the file open as `fd` (Linux /proc/locks); None when
    it cannot be told."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    inode_only = None
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        # "3: FLOCK  ADVISORY  WRITE 1234 fe:00:5308615 0 EOF" ("->" marks a waiter)
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or not parts[4].isdigit():
            continue
        if parts[5] == device:
            return int(parts[4])
        if parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
            inode_only = int(parts[4])  # overlay filesystems report another device
    return inode_only


def lock_holder(folder: Path) -> int | None:
    """The process training in `folder` now (the holder of its lock), found without taking
    the lock (a watcher must never make a starting run fail); None when no run holds it or
    it cannot be told. Closing this read-only descriptor leaves the holder's flock alone."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _holder(fd)
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


class RunLock:
    """`with RunLock(folder, create=...)`: hold the folder's lock, or TrainingError."""

    def __init__(self, folder: Path, *, create: bool) -> None:
        self.folder = Path(folder)
        self.create = create
        self.created = False
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (creating the folder when `create`); a folder that does not exist
        (without `create`) or is not a folder is left for the caller's checks to refuse."""
        if self.fd is not None:
            return self
        path = self.folder / LOCK_FILE
        for _ in range(100):
            if not self.folder.is_dir():
                if not self.create or self.folder.exists():
                    return self
                with contextlib.suppress(FileExistsError):
                    self.folder.mkdir(parents=True)
                    self.created = True
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                continue  # the folder went away between the check and the open
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder(fd)
                os.close(fd)
                who = f"process {pid}" if pid is not None else "another process"
                raise TrainingError(
                    f"{self.folder} is in use by another training run ({who}); one folder "
                    "holds one run: wait for it to finish or stop it, or choose another --output"
                ) from None
            if _same_file(fd, path):
                self.fd = fd
                return self
            os.close(fd)  # locked a file that was removed meanwhile: take the new one
        raise TrainingError(f"{self.folder}: cannot take the run lock {path}")

    def release(self, *, keep_folder: bool = True) -> None:
        """Drop the lock. `keep_folder=False` (the run never started) also removes a folder
        this lock created, when it holds nothing but the lock file."""
        if self.fd is None:
            return
        if self.created and not keep_folder:
            with contextlib.suppress(OSError):
                if os.listdir(self.folder) == [LOCK_FILE]:
                    os.unlink(self.folder / LOCK_FILE)
                    self.folder.rmdir()
        os.close(self.fd)  # closing the last descriptor drops the flock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
