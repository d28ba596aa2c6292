"""A hostile "OpenAI-compatible" server for the client tests: a real HTTP server on a
loopback port that answers whatever a test scripts, including what no honest server does
(streams past max_tokens, lines with no end, a byte every few tenths of a second, silence,
wrong shapes, redirects to another origin).

`HostileServer()` starts it in a thread; `server.script[mode] = behaviour` makes requests
under `http://127.0.0.1:PORT/<mode>/v1/...` answer with `behaviour(reply)`, where `reply`
(a `Reply`) knows the request (path, headers, JSON body) and writes the answer. Every
behaviour is bounded (a few seconds, a few MB) and ends as soon as the client goes away, so
a client that misbehaves fails its test instead of hanging it. The server records what it
saw (`requests`: path, Authorization, model and bytes sent back of each) and how many
connections are open now
(`open_connections`), so a test can check that a client closed its socket.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LIMIT_S = 30.0  # no behaviour runs longer than this


class ClientGone(Exception):
    """The client closed its end."""


class Reply:
    """One request, and the means to answer it."""

    def __init__(self, handler: BaseHTTPRequestHandler, server: HostileServer) -> None:
        self.h, self.server = handler, server
        self.path: str = handler.path
        self.headers = handler.headers
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            self.body: dict[str, Any] = json.loads(raw or b"{}")
        except ValueError:
            self.body = {}
        self.models = self.path.split("?")[0].endswith("/models")
        self.stream = bool(self.body.get("stream"))
        self.record: dict[str, Any] = {
            "path": self.path,
            "authorization": handler.headers.get("Authorization"),
            "model": self.body.get("model"),
            "sent": 0,  # bytes written back (headers aside)
        }

    # -- whole answers ----------------------------------------------------------------
    def send(self, status: int, body: bytes | Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.h.send_response(status)
        self.h.send_header("Content-Type", "application/json")
        self.h.send_header("Content-Length", str(len(data)))
        self.h.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.h.send_header(k, v)
        self.h.end_headers()
        self.write(data)

    def models_list(self, ids: list[Any]) -> None:
        self.send(200, {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

    # -- streams ----------------------------------------------------------------------
    def start(self, status: int = 200, ctype: str = "text/event-stream") -> None:
        """Headers of a chunked answer; then `chunk()` as often as wanted, then `end()`."""
        self.h.send_response(status)
        self.h.send_header("Content-Type", ctype)
        self.h.send_header("Transfer-Encoding", "chunked")
        self.h.send_header("Connection", "close")
        self.h.end_headers()
        self.h.wfile.flush()

    def chunk(self, data: bytes) -> None:
        if data:
            self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def event(self, text: str | None = "a ", **choice: Any) -> None:
        """One server-sent event holding one completions choice."""
        payload = {"choices": [{"index": 0, "text": text, "finish_reason": None, **choice}]}
        self.chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def end(self) -> None:
        self.chunk(b"data: [DONE]\n\n")
        self.write(b"0\r\n\r\n")

    def write(self, data: bytes) -> None:
        try:
            self.h.wfile.write(data)
            self.h.wfile.flush()
        except OSError:
            raise ClientGone from None
        self.record["sent"] += len(data)

    def wait(self, seconds: float) -> None:
        """Sleep, but raise ClientGone as soon as the client closes its end."""
        sock = self.h.connection
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.server.stopping.is_set():
                raise ClientGone
            ready, _, _ = select.select([sock], [], [], min(left, 0.05))
            if ready:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        raise ClientGone
                except OSError:
                    raise ClientGone from None
                time.sleep(min(left, 0.05))  # bytes we do not read: do not spin on them


def ok(reply: Reply, tokens: tuple[str, ...] = ("Once", " upon", " a", " time")) -> None:
    """An honest server: one model "m", four tokens and the end of the story."""
    if reply.models:
        reply.models_list(["m"])
    elif reply.stream:
        reply.start()
        for t in tokens:
            reply.event(t)
        reply.event("", finish_reason="stop")
        reply.end()
    else:
        reply.send(200, {"choices": [{"text": "".join(tokens), "finish_reason": "stop"}]})


def endless(reply: Reply, chunks: int = 200_000) -> None:
    """Streams token after token, ignoring max_tokens (up to `chunks` of them)."""
    if reply.models:
        return ok(reply)
    reply.start()
    for _ in range(chunks):
        reply.event("a ")
    reply.end()


def drip(reply: Reply, every: float = 0.2) -> None:
    """Headers, then one byte of the answer every `every` seconds: never silent for long."""
    if reply.models:
        reply.start(ctype="application/json")
        data = json.dumps({"data": [{"id": "m"}]}).encode()
    else:
        reply.start()
        data = b'data: {"choices": [{"index": 0, "text": "a ", "finish_reason": null}]}\n\n'
    end = time.monotonic() + LIMIT_S
    i = 0
    while time.monotonic() < end:
        reply.chunk(data[i % len(data) : i % len(data) + 1])
        i += 1
        reply.wait(every)


def stall(reply: Reply) -> None:
    """Headers, then nothing."""
    if reply.models:
        return ok(reply)
    reply.start()
    reply.wait(LIMIT_S)


class HostileServer:
    """The server, in a thread; `close()` (or a `with` block) stops it."""

    def __init__(self) -> None:
        self.script: dict[str, Callable[[Reply], None]] = {"ok": ok}
        self.requests: list[dict[str, Any]] = []
        self.open_connections = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def handle(self) -> None:
                with outer._lock:
                    outer.open_connections += 1
                try:
                    super().handle()
                except OSError:
                    pass
                finally:
                    with outer._lock:
                        outer.open_connections -= 1

            def do_GET(self) -> None:
                outer._answer(self)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        reply = Reply(handler, self)
        mode = reply.path.split("/")[1] if reply.path.count("/") > 1 else ""
        with self._lock:
            self.requests.append(reply.record)
        behaviour = self.script.get(mode)
        try:
            if behaviour is None:
                reply.send(404, {"error": {"message": f"no mode {mode!r}"}})
            else:
                behaviour(reply)
        except ClientGone:
            pass

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
