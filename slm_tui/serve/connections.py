"""The connection guards of `slm-serve`, below the app (uvicorn's HTTP protocol, the event loop).

Stock uvicorn closes a connection idle *between* requests (`timeout_keep_alive`) but waits
forever for a request that never finishes arriving, and a process at its open-file limit
makes asyncio log a traceback for every failed accept (a million of them in 80 s). Here:
- a request head (request line and headers) must arrive within `header_timeout` of the
  connection opening, or of its first byte after the previous response; a late one gets a
  408 and the connection is closed (an idle connection that sent nothing is just closed);
  the body's deadline (`body_timeout`) is `middleware.LimitBody`'s, where the body is read;
- at most `max_connections` are open: past that, a new connection closes the one that has
  waited longest for its next request head (a keep-alive connection or a half-sent head),
  so a flood of idle sockets cannot lock out `/health`; when every connection is busy with
  a request, the new one is answered 503. asyncio accepts up to `backlog` connections in a
  burst before any of them is seen here, so the process needs `open_files()` files;
- `quiet_accept_errors`: "out of open files" on accept is one warning line every 10 s
  (the accept is retried a second later; the connections wait in the kernel's queue).

`guarded_protocol` wraps whichever protocol uvicorn would use (h11 or httptools): both keep
the request in flight as `self.cycle`, replaced when a new request head is complete.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from slm_tui.serve.protocol import ApiError

log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class Limits:
    """How long a request may take to arrive, and how many connections may be open."""

    header_timeout: float = 10.0  # seconds for a request head, from the connection (or byte 1)
    body_timeout: float = 30.0  # seconds for the whole body, from its head (LimitBody)
    keep_alive: float = 5.0  # seconds an idle connection is kept between requests
    max_connections: int = 1000
    backlog: int = 511  # the listen queue, and the most connections accepted in one burst

    def open_files(self) -> int:
        """The open files these connections can take at once (a burst of `backlog` accepted
        before the ones over `max_connections` are closed)."""
        return self.max_connections + self.backlog


def error_bytes(status: int, reason: str, error: ApiError) -> bytes:
    """A whole HTTP/1.1 response holding `error` that closes the connection (written raw,
    outside any request the protocol knows of)."""
    body = json.dumps(error.body()).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(limits: Limits, base: type[asyncio.Protocol] | None = None) -> type:
    """uvicorn's HTTP protocol class (`base`, default: the one uvicorn picks) with the head
    deadline and the connection bound of `limits`; pass it as `uvicorn.Config(http=...)`."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class Guarded(base):  # type: ignore[misc, valid-type]
        _limits = limits

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_of: Any = self.cycle  # the request in flight when the timer was set
            self._head_started = False  # a byte of the awaited head has arrived
            self._waiting_since = time.monotonic()
            self._arm()  # the first request's head is due
            self._make_room()

        def waiting(self) -> bool:
            """No request in flight: the connection waits for a request head."""
            return self.cycle is None or self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            was_waiting = self.waiting()
            super().data_received(data)
            if self.cycle is not self._head_of and not self.waiting():
                self._disarm()  # a new request head is complete
            elif was_waiting:
                if self._head_timer is None and not self.transport.is_closing():
                    self._arm()  # the first byte of the next request: its head is due
                self._head_started = True

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._waiting_since = time.monotonic()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_of, self._head_started = self.cycle, False
            self._head_timer = self.loop.call_later(self._limits.header_timeout, self._late)

        def _disarm(self) -> None:
            timer, self._head_timer = getattr(self, "_head_timer", None), None
            if timer is not None:
                timer.cancel()

        def _late(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.cycle is not self._head_of:
                return  # closed, or a head arrived by another path (pipelining)
            if self._head_started:
                seconds = f"{self._limits.header_timeout:g}"
                error = ApiError(408, f"the request head did not arrive within {seconds} s",
                                 code="request_timeout")  # fmt: skip
                self.transport.write(error_bytes(408, "Request Timeout", error))
            self.transport.close()

        def _make_room(self) -> None:
            """Past `max_connections`, close the connection that has waited longest for a
            request head; if every one is busy with a request, refuse this one (503)."""
            open_ = [c for c in self.connections if not c.transport.is_closing()]
            if len(open_) <= self._limits.max_connections:
                return
            idle = [c for c in open_ if c is not self and isinstance(c, Guarded) and c.waiting()]
            if idle:
                oldest = min(idle, key=lambda c: c._waiting_since)
                oldest._disarm()
                oldest.transport.close()
                return
            error = ApiError(
                503,
                f"the server has {self._limits.max_connections} connections open, all busy; "
                "retry shortly",
                type="server_error",
                code="too_many_connections",
            )
            self._disarm()
            self.transport.write(error_bytes(503, "Service Unavailable", error))
            self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, every: float = 10.0) -> None:
    """Make "out of open files" on accept one warning line every `every` seconds (asyncio
    logs a traceback per failed accept, thousands a second); other errors go on as before."""
    previous = loop.get_exception_handler()
    state = {"last": float("-inf"), "since": 0}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_FILES:
            state["since"] += 1
            now = time.monotonic()
            if now - state["last"] >= every:
                log.warning(
                    "cannot accept connections: %s (%d failed accepts since the last report); "
                    "raise the open-file limit (ulimit -n) or lower --max-connections",
                    exc.strerror or exc,
                    state["since"],
                )
                state["last"], state["since"] = now, 0
            return
        if isinstance(exc, ValueError) and "_start_serving" in str(context.get("message")):
            return  # an accept retry (one per failed accept) that fires after shutdown
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    drain_seconds: float = 30.0,
    log_level: str = "warning",
) -> Any:
    """The `uvicorn.Config` `slm-serve` runs `app` with: the guarded protocol (over httptools'
    parser where it is installed, the `serve` extra's choice: it parses and writes HTTP in C,
    h11 in Python), the keep-alive timeout of `limits`, `drain_seconds` for a graceful
    shutdown. The event loop is asyncio's own: `quiet_accept_errors` relies on its accept
    loop (uvloop's reports a failed accept differently)."""
    import uvicorn

    limits = limits or Limits()
    # uvicorn annotates both timeouts `int` but uses them as asyncio timeouts, fractions and all
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        loop="asyncio",
        log_level=log_level,
        timeout_keep_alive=limits.keep_alive,  # type: ignore[arg-type]
        backlog=limits.backlog,
        timeout_graceful_shutdown=drain_seconds,  # type: ignore[arg-type]
        lifespan="on",
    )
