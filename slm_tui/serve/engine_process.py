"""The server's engine in a process of its own (`slm-serve --engine process`, the default).

In one process the engine thread and the event loop share one interpreter lock: between the
~200 small torch ops of a batched step the engine waits for the loop's per-token work
(parsing, SSE frames, socket writes) and the loop for the engine, so at 64 streaming
clients the server ran at ~0.6-0.85x of the engine's own batch rate. Here the engine runs in
a child process (`python -m slm_tui.serve.engine_process`) on its own core; the HTTP
process keeps everything else.

- `EngineProcess` is a drop-in for `Scheduler` on the HTTP side (`submit`, `room`, `stop`,
  `running`, `stats`, `max_batch`, `max_queue`): the app's rows, sinks and step flushes are
  unchanged. A row's `cancelled` becomes a flag whose `set()` tells the child.
- One socket pair carries pickled messages both ways. To the child: the set-up (checkpoint
  path, device, torch threads, batch and queue sizes), rows (ids, settings, seed, what to
  report, the brief the guide is made from), cancellations, stop. From the child: "ready",
  then one message per engine step (every event of the step as a plain tuple, and the
  engine's counters), then "stopped".
- The child loads the checkpoint itself (the same folder; the weights' sha256 is compared
  with the parent's, so both read the same weights) and runs the same `Scheduler`: what a
  row computes does not depend on the process it runs in.
- Room in the queue is counted on the HTTP side without a round trip: rows sent minus rows
  the child has received, plus the child's own waiting rows, both as last reported. The
  figure can only be high (never admits more than the child queues).
- The child ignores SIGINT and SIGTERM (the HTTP process drains and then stops it) and ends
  when its socket closes, so it never outlives the server. If it dies, every row in flight
  ends with an error event, `/health` says "stopped", and requests get a 503.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from slm_tui.generation.events import Event, TokenAlt

if TYPE_CHECKING:
    from slm_tui.serve.scheduler import Row

READY_TIMEOUT = 300.0  # seconds for the child to import torch and load the model


class EngineFailed(RuntimeError):
    """The engine process could not start (its one-line reason)."""


@dataclass
class Setup:
    """What the child needs to run the engine."""

    path: str
    device: str
    threads: int
    max_batch: int
    max_queue: int
    weights_sha256: str | None


def _event_tuple(rid: int, e: Event) -> tuple:
    top = tuple((a.token_id, a.text, a.prob) for a in e.top)
    return (rid, e.kind, e.index, e.seed, e.token_id, e.text, e.piece, e.prob, top, e.ttft,
            e.finish_reason, e.error)  # fmt: skip


def _event(t: tuple) -> Event:
    _, kind, index, seed, token_id, text, piece, prob, top, ttft, finish, error = t
    return Event(
        kind=kind, index=index, seed=seed, token_id=token_id, text=text, piece=piece, prob=prob,
        top=tuple(TokenAlt(token_id=i, text=s, prob=p) for i, s, p in top), ttft=ttft,
        finish_reason=finish, error=error,
    )  # fmt: skip


class _Flag:
    """A row's `cancelled` on the HTTP side: `set()` tells the engine process (once)."""

    __slots__ = ("_is_set", "_tell")

    def __init__(self, tell: Callable[[], None]) -> None:
        self._is_set, self._tell = False, tell

    def set(self) -> None:
        if not self._is_set:
            self._is_set = True
            self._tell()

    def is_set(self) -> bool:
        return self._is_set


class EngineProcess:
    """The engine loop of one model, run in a child process; the `Scheduler` interface."""

    def __init__(
        self,
        setup: Setup,
        *,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        from slm_tui.serve.scheduler import Stats

        self.max_batch, self.max_queue = setup.max_batch, setup.max_queue
        self.on_step = on_step
        self.stats = Stats()
        self._child_queued = 0  # the child's waiting rows, as last reported
        self._sent = 0  # rows sent to the child
        self._received = 0  # rows the child has received (as last reported)
        self._rows: dict[int, Row] = {}  # rid -> the HTTP side's row, until its "done"
        self._ids = itertools.count()
        self._lock = threading.Lock()  # sends, and the counters above
        self._stopping = False
        self._alive = False
        ours, theirs = socket.socketpair()
        self._conn = Connection(ours.detach())
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "slm_tui.serve.engine_process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._conn.send_bytes(pickle.dumps(setup))
        if not self._conn.poll(READY_TIMEOUT):
            self._proc.kill()
            self._proc.wait()
            raise EngineFailed(f"the engine process did not start within {READY_TIMEOUT:g} s")
        try:
            kind, detail = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            kind, detail = "error", f"it exited with code {self._proc.wait()}"
        if kind != "ready":
            self._proc.wait()
            raise EngineFailed(f"the engine process did not start: {detail}")
        self.device, self.threads = detail  # what the child runs on
        self._alive = True
        self._reader = threading.Thread(target=self._read, name="slm-serve-engine-io", daemon=True)
        self._reader.start()

    # --- the Scheduler interface ------------------------------------------------------------
    def submit(self, rows: list[Row]) -> None:
        """Send rows to the engine; QueueFull when they do not fit, RuntimeError once stopping
        (or when the engine process has ended)."""
        from slm_tui.serve.scheduler import QueueFull

        specs = []
        with self._lock:
            if self._stopping or not self._alive:
                raise RuntimeError("the server is shutting down" if self._stopping
                                   else "the engine process has ended")  # fmt: skip
            waiting = self._waiting()
            if waiting + len(rows) > self.max_queue:
                raise QueueFull(f"{waiting} rows already wait (at most {self.max_queue})")
            for row in rows:
                rid = next(self._ids)
                self._rows[rid] = row
                row.cancelled = _Flag(functools.partial(self._cancel, rid))  # type: ignore[assignment]
                specs.append((rid, row.ids, row.settings, row.seed, row.top_n, row.probs,
                              row.guided))  # fmt: skip
            self._sent += len(rows)
            self.stats.queued_rows = self._waiting()
            self._send(("rows", specs))

    def room(self) -> int:
        with self._lock:
            return self.max_queue - self._waiting()

    def stop(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        """Take no new rows; the child finishes the rows it has (`cancel`: ends them) and
        exits; killed if it has not within `timeout` seconds."""
        with self._lock:
            self._stopping = True
            if self._alive:
                self._send(("stop", cancel))
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5)

    @property
    def running(self) -> bool:
        return self._alive

    @property
    def pid(self) -> int:
        return self._proc.pid

    # --- the HTTP side's bookkeeping --------------------------------------------------------
    def _waiting(self) -> int:
        return self._child_queued + self._sent - self._received

    def _send(self, message: Any) -> None:
        with contextlib.suppress(OSError):  # the child has gone: the reader reports it
            self._conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def _cancel(self, rid: int) -> None:
        with self._lock:
            if self._rows.pop(rid, None) is not None and self._alive:
                self._send(("cancel", rid))

    def _read(self) -> None:
        """The reader thread: each step's events to their rows' sinks, then `on_step`."""
        try:
            while True:
                message = pickle.loads(self._conn.recv_bytes())
                if message[0] == "stopped":
                    break
                _, events, counters, received = message
                with self._lock:
                    self._received = received
                    self._child_queued = counters["queued_rows"]
                    for name, value in counters.items():
                        setattr(self.stats, name, value)
                    self.stats.queued_rows = self._waiting()
                    delivered = []
                    for t in events:
                        row = self._rows.get(t[0])
                        if row is None:
                            continue  # cancelled: nobody reads it
                        if t[1] == "done":
                            del self._rows[t[0]]
                        delivered.append((row, t))
                for row, t in delivered:
                    event = _event(t)
                    row.index = event.index
                    if event.kind == "done":
                        row.finish_reason = event.finish_reason
                    row.sink(event)
                if self.on_step is not None:
                    self.on_step()
        except (EOFError, OSError):
            pass
        finally:
            self._ended()

    def _ended(self) -> None:
        """The child has gone: every row still in flight ends with an error."""
        with self._lock:
            self._alive = False
            orphans, self._rows = list(self._rows.values()), {}
            self.stats.active_rows = self.stats.queued_rows = 0
        code = self._proc.poll()
        if orphans:
            why = "the engine process ended" + (f" (exit code {code})" if code else "")
            for row in orphans:
                row.finish_reason = "error"
                row.sink(Event.failed(why, seed=row.seed, index=row.index))
            if self.on_step is not None:
                self.on_step()
        self._conn.close()


# --- the child ------------------------------------------------------------------------------
def _child(fd: int) -> None:
    # The HTTP process drains and then stops the engine; a terminal's Ctrl+C (sent to the
    # whole process group) or a SIGTERM must not end the rows in flight first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    send_lock = threading.Lock()

    def send(message: Any) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with send_lock:
            conn.send_bytes(data)

    setup: Setup = pickle.loads(conn.recv_bytes())
    try:
        import torch

        from slm_tui.checkpoint.io import load_checkpoint

        torch.set_num_threads(max(1, setup.threads))
        loaded = load_checkpoint(setup.path, setup.device)
        sha = loaded.info.weights_sha256
        if setup.weights_sha256 and sha and sha != setup.weights_sha256:
            raise RuntimeError(f"{setup.path} changed while the server started (other weights)")
    except Exception as exc:  # one line back to the parent, which says it
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        send(("error", first))
        return
    from slm_tui.serve.scheduler import Row, Scheduler

    rows: dict[int, Row] = {}
    outbox: list[tuple] = []
    state = {"received": 0}

    def on_step(batch: list[tuple] | None = None) -> None:
        # engine thread: this step's events and the counters, in one message (`batch`: events
        # made on the main thread, sent without touching the engine thread's outbox)
        if batch is None:
            batch = outbox[:]
            del outbox[:]
        s = scheduler.stats
        counters = {"rows_finished": s.rows_finished, "tokens_generated": s.tokens_generated,
                    "prompt_tokens": s.prompt_tokens, "active_rows": s.active_rows,
                    "queued_rows": s.queued_rows, "steps": s.steps, "errors": s.errors}  # fmt: skip
        try:
            send(("step", batch, counters, state["received"]))
        except OSError:
            os._exit(0)  # the server has gone

    scheduler = Scheduler(loaded.model, loaded.tokenizer, max_batch=setup.max_batch,
                          max_queue=setup.max_queue, on_step=on_step)  # fmt: skip

    def sink_for(rid: int) -> Callable[[Event], None]:
        def sink(event: Event) -> None:
            outbox.append(_event_tuple(rid, event))
            if event.kind == "done":
                rows.pop(rid, None)

        return sink

    send(("ready", (str(loaded.device), torch.get_num_threads())))
    stop_cancel: bool | None = None
    try:
        while True:
            message = pickle.loads(conn.recv_bytes())
            if message[0] == "rows":
                new = []
                for rid, ids, settings, seed, top_n, probs, guided in message[1]:
                    row = Row(ids=ids, settings=settings, seed=seed, top_n=top_n, probs=probs,
                              guided=guided, sink=sink_for(rid))  # fmt: skip
                    rows[rid] = row
                    new.append(row)
                try:
                    scheduler.submit(new)
                except Exception as exc:  # (the parent's count keeps this from happening)
                    failed = Event.failed(str(exc))
                    for rid, *_ in message[1]:
                        rows.pop(rid, None)
                    on_step([_event_tuple(rid, failed) for rid, *_ in message[1]])
                # counted once queued: a step's report may count them as waiting twice
                # (high, safe), never as neither
                state["received"] += len(new)
            elif message[0] == "cancel":
                gone = rows.pop(message[1], None)
                if gone is not None:
                    gone.cancelled.set()
            elif message[0] == "stop":
                stop_cancel = bool(message[1])
                break
    except (EOFError, OSError):
        stop_cancel = True  # the server has gone: nobody reads the rows
    scheduler.stop(cancel=stop_cancel)
    with contextlib.suppress(OSError):
        send(("stopped",))


if __name__ == "__main__":
    _child(int(sys.argv[1]))
