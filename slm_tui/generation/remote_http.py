"""HTTP for the server clients (`generation.remote`): one request and its answer, bounded in
size and in time, cancellable from another thread. Standard library only.

- `Exchange`: one request. A watcher thread, alive exactly as long as the exchange, shuts
  the socket down when the deadline passes or the caller's cancel flag is set, so a read
  blocked on a server that stalls or drips a byte every few seconds returns at once (a
  per-read timeout alone never fires on a drip). The deadline covers connecting and the
  answer's headers, then is re-armed for the body, or for each line of a stream.
- Reads are bounded: a body holds at most `limit` bytes, an error body `ERROR_LIMIT`, a
  line of a stream `LINE_LIMIT`; past that the answer is refused, never held.
- Redirects are not followed: urllib copies `Authorization` to wherever a redirect points,
  so a redirect would hand the API key to another origin. A 3xx answer is an error that
  names where it pointed (give that address instead).
- The API key must be printable; it is sent as its UTF-8 bytes (http.client would refuse a
  non-latin-1 key with a traceback, and a CR/LF in it would split the header).
- Every failure is a `RemoteError` with one line; a cancelled exchange raises `Cancelled`.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from slm_tui.errors import GenerationError
from slm_tui.untrusted import size_text

MiB = 1 << 20
BODY_LIMIT = 16 * MiB  # a model list or a whole non-streamed answer
ERROR_LIMIT = 64 << 10  # an error answer's body (only its message is shown)
LINE_LIMIT = 1 * MiB  # one line of a server-sent event stream
CANCEL_POLL = 0.05  # seconds between looks at the cancel flag while a read blocks
REDIRECTS = (301, 302, 303, 307, 308)


class RemoteError(GenerationError):
    """The server could not be reached, refused the request, or answered off the API."""


class Cancelled(RemoteError):
    """The caller cancelled the exchange (the socket was shut down)."""


def check_url(url: str) -> str:
    """`url` without trailing slashes, or a RemoteError saying what is wrong with it."""
    url = url.strip().rstrip("/")
    shown = url if len(url) <= 80 else url[:77] + "..."
    if not url.startswith(("http://", "https://")):
        raise RemoteError(f"--server {shown!r} must start with http:// or https://")
    if any(not 0x21 <= ord(c) <= 0x7E for c in url):
        raise RemoteError(
            f"--server {shown!r} holds a space, a control or a non-ASCII character "
            "(write a host name in its xn-- form)"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number 0-65535)
    except ValueError as exc:
        raise RemoteError(f"--server {shown!r} is not a valid URL ({exc})") from None
    if not parts.hostname:
        raise RemoteError(f"--server {shown!r} names no host")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise RemoteError(
            f"--server {shown!r}: give only scheme, host, port and path "
            "(no query, fragment or user name; the key goes in --api-key)"
        )
    return url


def auth_header(api_key: str | None) -> str | None:
    """The Authorization header's value (its UTF-8 bytes as latin-1 text, which is how
    http.client writes a header), or a RemoteError for a key that cannot be sent."""
    if not api_key:
        return None
    if not api_key.isprintable():
        raise RemoteError("--api-key holds a control character (a line break?); give the key alone")
    return "Bearer " + api_key.encode("utf-8").decode("latin-1")


def _shutdown(sock: Any) -> None:
    with contextlib.suppress(OSError):  # already closed, or never connected
        sock.shutdown(socket.SHUT_RDWR)


class Exchange:
    """One request and its answer (see the module docstring)."""

    def __init__(self, where: str, timeout: float, cancel: threading.Event | None) -> None:
        self.where, self.timeout, self.cancel = where, timeout, cancel
        self.expired = self.cancelled = False
        self._sock: Any = None
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + timeout
        self._over = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="slm-remote-watch", daemon=True)
        self._watcher.start()

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the watcher (it returns within a moment; none is left behind)."""
        self._over.set()
        if self._watcher is not threading.current_thread():
            self._watcher.join()

    def attach(self, sock: Any) -> Any:
        """The socket the exchange runs on (each new connection calls this)."""
        with self._lock:
            self._sock = sock
            stop = self.expired or self.cancelled
        if stop:
            _shutdown(sock)
        return sock

    def arm(self) -> None:
        """The next step (the body, one line) has `timeout` seconds from now."""
        with self._lock:
            self._deadline = time.monotonic() + self.timeout

    def _watch(self) -> None:
        while not self._over.is_set():
            if self.cancel is not None and self.cancel.is_set():
                self.cancelled = True
                break
            with self._lock:
                left = self._deadline - time.monotonic()
            if left <= 0:
                self.expired = True
                break
            self._over.wait(min(left, CANCEL_POLL) if self.cancel is not None else left)
        else:
            return
        with self._lock:
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

    # -- opening --------------------------------------------------------------------------
    def open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        """Send `request`; its answer when the status is 2xx, else a RemoteError."""
        opener = urllib.request.build_opener(
            _HTTPHandler(self), _HTTPSHandler(self), _RefuseRedirects()
        )
        try:
            return opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                if exc.code in REDIRECTS:
                    where = _cut(exc.headers.get("Location") or "nowhere", 120)
                    raise RemoteError(
                        f"{self.where}: the server redirects ({exc.code}) to {where}; not "
                        "followed, so the API key goes only to the server you named: give "
                        "that address as --server"
                    ) from None
                message = _error_message(self, exc)
            finally:
                exc.close()
            raise RemoteError(f"{self.where}: {exc.code} {message}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            self.raise_if_stopped()
            reason = getattr(exc, "reason", None) or exc
            raise RemoteError(f"cannot reach {self.where} ({_cut(str(reason), 200)})") from None

    def raise_if_stopped(self) -> None:
        if self.cancelled:
            raise Cancelled(f"{self.where}: cancelled")
        if self.expired:
            raise RemoteError(
                f"{self.where}: no answer within {self.timeout:g} s (the server stalls, or "
                "sends too slowly)"
            )

    # -- reading --------------------------------------------------------------------------
    def read_body(self, response: Any, limit: int = BODY_LIMIT) -> bytes:
        """The whole body, at most `limit` bytes, within one `timeout`."""
        self.arm()
        parts, total = [], 0
        while True:
            try:
                data = response.read(min(1 << 16, limit + 1 - total))
            except (OSError, http.client.HTTPException) as exc:
                self.raise_if_stopped()
                raise RemoteError(f"{self.where}: the connection broke ({_name(exc)})") from None
            if not data:
                break
            parts.append(data)
            total += len(data)
            if total > limit:
                raise RemoteError(
                    f"{self.where}: the answer is longer than {size_text(limit)}; refused"
                )
        self.raise_if_stopped()
        return b"".join(parts)

    def read_json(self, response: Any) -> Any:
        data = self.read_body(response)
        try:
            return json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            raise RemoteError(f"{self.where}: the answer is not JSON") from None

    def read_line(self, response: Any) -> bytes:
        """One line of a stream (b"" at its end), within one `timeout`."""
        self.arm()
        try:
            line = response.readline(LINE_LIMIT + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.raise_if_stopped()
            raise RemoteError(f"{self.where}: the connection broke ({_name(exc)})") from None
        if not line.endswith(b"\n"):  # the end of the stream, or a shut-down socket
            self.raise_if_stopped()
        if len(line) > LINE_LIMIT:
            raise RemoteError(
                f"{self.where}: a streamed line is longer than {size_text(LINE_LIMIT)}; refused"
            )
        return line


def _error_message(exchange: Exchange, exc: urllib.error.HTTPError) -> str:
    """The OpenAI error message of an HTTP error (cut to a line), else its reason."""
    try:
        body = json.loads(exchange.read_body(exc, ERROR_LIMIT).decode("utf-8"))
        message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
        return _cut(str(message), 300)
    except Exception:  # not an OpenAI-shaped error (or too big, or cut): what HTTP says
        exchange.raise_if_stopped()
        return _cut(str(exc.reason), 100)


def _cut(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _name(exc: BaseException) -> str:
    return type(exc).__name__


class _Connection(http.client.HTTPConnection):
    """An HTTP connection that hands its socket to its exchange."""

    def __init__(self, *args: Any, exchange: Exchange, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._exchange = exchange

        def create(*a: Any, **k: Any) -> socket.socket:
            return exchange.attach(socket.create_connection(*a, **k))

        self._create_connection = create


class _TLSConnection(http.client.HTTPSConnection):
    """The same for HTTPS (the TLS socket replaces the plain one once it is wrapped)."""

    def __init__(self, *args: Any, exchange: Exchange, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._exchange = exchange

        def create(*a: Any, **k: Any) -> socket.socket:
            return exchange.attach(socket.create_connection(*a, **k))

        self._create_connection = create

    def connect(self) -> None:
        super().connect()
        self._exchange.attach(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, exchange: Exchange) -> None:
        super().__init__()
        self._exchange = exchange

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_Connection, exchange=self._exchange), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, exchange: Exchange) -> None:
        super().__init__()
        self._exchange = exchange

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        context = getattr(self, "_context", None)
        connection = functools.partial(_TLSConnection, exchange=self._exchange)
        return self.do_open(connection, req, context=context)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: the 3xx answer reaches `Exchange.open` as an HTTPError (and
    urllib's own handler would first read the redirect's body whole, with no bound)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
