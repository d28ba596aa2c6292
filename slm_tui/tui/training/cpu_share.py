"""CPU fairness: while a local run trains, the TUI's own generation uses one thread.

OpenMP threads that lose their core to another process wait on each other (a 2-thread run
beside one busy process went 27x slower, README "slm-train model"), so while a run trains
on this machine (one this app started, or the holder of the watched folder's lock) the
engine gets one thread, and the thread count torch chose is put back once it stops.
`torch.set_num_threads` is called on the UI thread: every story runs in a fresh worker
thread, which takes the process-wide count when it starts (tests/test_tui_train.py checks
it from such a thread). Nothing is imported here: before a local model is loaded torch is
not imported, and the state is applied when it is.
"""

from __future__ import annotations

import sys


class CpuShare:
    def __init__(self) -> None:
        self.shared = False
        self.default: int | None = None  # torch's own thread count, read before any change

    def set(self, shared: bool) -> bool:
        """Record whether a local run trains and apply it; True when that changed."""
        changed = shared != self.shared
        self.shared = shared
        if changed:
            self.apply()
        return changed

    def apply(self) -> int | None:
        """Set torch's thread count for what is true now (after a model load, too); the
        count, or None while torch is not imported."""
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        if self.default is None:
            self.default = torch.get_num_threads()
        threads = 1 if self.shared else self.default
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    def label(self) -> str:
        return "machine shared with training: 1 thread" if self.shared else ""
