"""ASGI middleware of `slm-serve`, outside the app's routes.

- `LimitBody`: a request body over the limit is refused with 413 before the app reads it
  (the declared length first, then what actually arrives, chunked bodies included); a body
  that has not arrived whole `timeout` seconds after its head is refused with 408 (uvicorn
  waits for one forever); both close the connection. A client that leaves while it sends
  its body is not answered.
- `Gatekeeper`: the API key on every path but `/health` (constant-time comparison of the
  bytes sent with the key's UTF-8 bytes, or its latin-1 bytes, so a non-ASCII key matches
  what curl and browsers send; 401 in OpenAI's error shape) and the request counters
  `/metrics` reports, by path and status.
"""

from __future__ import annotations

import hmac
from collections import Counter

import anyio
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slm_tui.serve.protocol import ApiError

OPEN_PATHS = ("/health",)  # answered without an API key


class LimitBody:
    """ASGI middleware: refuse a request body over `limit` bytes with 413, before the app
    reads it (the declared length is checked first, then what actually arrives), and one
    not whole `timeout` seconds after its head with 408."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float = 30.0) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, 413, f"request body over {self.limit} bytes",
                               "body_too_large")  # fmt: skip
            return
        body, more = bytearray(), True
        with anyio.move_on_after(self.timeout):  # one deadline for the whole body
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left before its body was whole: nobody to answer
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.limit:
                    await self._refuse(send, 413, f"request body over {self.limit} bytes",
                                       "body_too_large")  # fmt: skip
                    return
        if more:
            await self._refuse(send, 408, f"the request body did not arrive within "
                               f"{self.timeout:g} s", "request_timeout")  # fmt: skip
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, status: int, message: str, code: str) -> None:
        """Answer `status` and close the connection (the rest of the body is not read)."""
        error = ApiError(status, message, code=code)
        response = JSONResponse(error.body(), status_code=status, headers={"connection": "close"})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


COUNTED = ("/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions")


class Gatekeeper:
    """ASGI middleware: the API key (every path but /health) and the request counters."""

    def __init__(
        self, app: ASGIApp, api_key: str | None, requests: Counter[tuple[str, int]]
    ) -> None:
        self.app, self.api_key, self.requests = app, api_key, requests
        # The bytes a client may send for the key: its UTF-8 (curl, browsers, most clients)
        # and, where it has one, its latin-1 form (the header's historical charset).
        self._keys: list[bytes] = []
        if api_key is not None:
            self._keys.append(api_key.encode("utf-8", "surrogateescape"))
            try:
                latin = api_key.encode("latin-1")
            except UnicodeEncodeError:
                latin = self._keys[0]
            if latin != self._keys[0]:
                self._keys.append(latin)

    def _matches(self, token: bytes) -> bool:
        matched = False
        for key in self._keys:  # every form compared, in constant time each
            matched |= hmac.compare_digest(token, key)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        counted = path if path in COUNTED else "/v1/models/{id}" if path.startswith(
            "/v1/models/") else "other"  # fmt: skip
        key = self.api_key
        if key is not None and path not in OPEN_PATHS:
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            token = given[7:] if given[:7].lower() == b"bearer " else b""
            if not self._matches(token):
                self.requests[(counted, 401)] += 1
                error = ApiError(
                    401,
                    "missing or wrong API key (send Authorization: Bearer <key>)",
                    type="authentication_error",
                    code="invalid_api_key",
                )
                await JSONResponse(error.body(), status_code=401)(scope, receive, send)
                return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.requests[(counted, message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting_send)
