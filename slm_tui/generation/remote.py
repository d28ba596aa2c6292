"""A client for OpenAI-compatible servers (ours, llama.cpp's, vLLM, ollama's `/v1`), giving
the same `Event`s as the local engine, so `slm-generate --server` and `slm-tui --server`
work unchanged on top of it. Torch-free; HTTP through the standard library.

- `Remote(url, api_key)`: the server at `url` (`http://host:8000` or `.../v1`).
  `models()` lists its model ids; `complete()` writes one story; `stream()` yields
  `Event`s as the tokens arrive (server-sent events), with the chosen token's probability
  and alternatives when the server returns `logprobs` (`Event.token_id` is None: a server
  sends token strings, not ids).
- Sampling settings map to OpenAI's fields plus the extra ones llama.cpp and vLLM accept
  (`top_k`, `min_p`, `repetition_penalty` / `repeat_penalty`, `repeat_last_n`); `top_k` is
  always sent (0 = off) because llama.cpp's server otherwise applies its own 40.
- A settings change in a `LiveSettings` while a story streams applies from the next token:
  the stream is closed and the story continued by a new request whose prompt is the prompt
  plus the text so far, with the new settings and the tokens left (and the story's first
  brief: a brief is read once, at the start, as the local engine reads it).
- A brief (`settings.brief`) is sent as `brief` in the body (slm-serve puts its block before
  the prompt; a server that does not know the field ignores it).
- A stream stops at `max_new_tokens` itself, whatever the server goes on sending.
- Every answer is read with bounds and a deadline, cancellation closes the socket, and a
  redirect is not followed (`remote_http`). Every field read from an answer is checked for
  its shape: a wrong one is a `RemoteError` naming it, except `logprobs`, which only
  decorate the token view: ones that do not fit (not a log-probability, a list where an
  object belongs) are left out, and the story goes on.
- Every failure is a `RemoteError` (a one-line `GenerationError`): a server that cannot be
  reached, an HTTP error (its OpenAI error message quoted), a response that is not what
  the API promises, a URL or key that cannot be sent.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from slm_tui.generation.events import Event, TokenAlt
from slm_tui.generation.remote_http import (
    Cancelled,
    Exchange,
    RemoteError,
    auth_header,
    check_url,
)
from slm_tui.generation.settings import LiveSettings, SamplingSettings

__all__ = ["Cancelled", "Completion", "Remote", "RemoteError", "finish_reason", "request_body"]

TOP_ALTERNATIVES = 20  # alternatives kept per token (a server may send any number)


@dataclass
class Completion:
    text: str
    finish_reason: str  # ours: "eos" | "stop" | "length" (see `finish_reason`)
    tokens: int | None  # completion tokens, when the server reports usage
    seed: int | None


def finish_reason(theirs: str | None, settings: SamplingSettings) -> str:
    """Ours from OpenAI's: "length" stays; OpenAI says "stop" both for the end of a story
    and for a stop string, so it is "eos" when no stop string was asked for."""
    if theirs == "length":
        return "length"
    return "stop" if settings.stop else "eos"


def request_body(prompt: str, settings: SamplingSettings, model: str) -> dict[str, Any]:
    """The /v1/completions body for these settings."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "min_p": settings.min_p,
    }
    if settings.repetition_penalty != 1.0:
        body["repetition_penalty"] = settings.repetition_penalty  # vLLM's name, and ours
        body["repeat_penalty"] = settings.repetition_penalty  # llama.cpp's name
        body["repeat_last_n"] = settings.repetition_window
    if settings.seed is not None:
        body["seed"] = settings.seed
    if settings.stop:
        body["stop"] = list(settings.stop)
    if settings.ignore_eos:
        body["ignore_eos"] = True  # vLLM's and llama.cpp's name, and ours
    if settings.brief is not None:
        body["brief"] = settings.brief.to_dict()  # slm-serve's; other servers ignore it
        if settings.brief_strength != 1.0:
            body["brief_strength"] = settings.brief_strength
    return body


class Remote:
    """An OpenAI-compatible server. `timeout`: seconds for connecting and the answer's
    headers, then for the whole body of an answer, or for each line of a stream."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        url = check_url(url)
        self.base = url if url.endswith("/v1") else f"{url}/v1"
        self.api_key, self.timeout = api_key, timeout
        self._auth = auth_header(api_key)

    # --- HTTP ------------------------------------------------------------------------------
    @contextmanager
    def _request(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[Exchange, Any]]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode("utf-8")
        if self._auth:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        with (
            Exchange(self.base + path, self.timeout, cancel) as exchange,
            exchange.open(request) as response,
        ):
            yield exchange, response

    def _json(
        self, path: str, body: dict[str, Any] | None = None, cancel: threading.Event | None = None
    ) -> Any:
        with self._request(path, body, cancel) as (exchange, response):
            return exchange.read_json(response)

    # --- the API -----------------------------------------------------------------------------
    def models(self) -> list[str]:
        """The server's model ids, in its order."""
        where = f"{self.base}/models"
        data = self._json("/models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise RemoteError(f'{where}: not a model list (no "data" list)')
        ids = []
        for n, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise RemoteError(f'{where}: model {n} has no "id" string')
            ids.append(item["id"])
        return ids

    def complete(
        self,
        model: str,
        prompt: str,
        settings: SamplingSettings,
        *,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """One story, in one answer."""
        data = self._json("/completions", request_body(prompt, settings, model), cancel)
        return _completion(data, settings, f"{self.base}/completions")

    def stream(
        self,
        model: str,
        prompt: str,
        settings: SamplingSettings | LiveSettings,
        *,
        cancel: threading.Event | None = None,
        top_n: int = 5,
    ) -> Iterator[Event]:
        """Stream one story as `Event`s (a "token" event per text chunk, then "done"); it
        ends at `max_new_tokens` chunks whatever the server sends after them."""
        live: LiveSettings | None = None
        if isinstance(settings, LiveSettings):
            live = settings
            current, version = settings.snapshot()
        else:
            current, version = settings, 0
        ttft: float | None = None
        start, index, text = time.perf_counter(), 0, ""
        reason = "length"
        while index < current.max_new_tokens:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            left = current.max_new_tokens - index
            body = request_body(prompt + text, current.replace(max_new_tokens=left), model)
            body.update(stream=True, stream_options={"include_usage": True})
            if top_n:
                body["logprobs"] = top_n
            restarted = False
            try:
                with self._request("/completions", body, cancel) as (exchange, response):
                    for piece, prob, alts, finish in _sse_choices(exchange, response):
                        if cancel is not None and cancel.is_set():
                            raise Cancelled("cancelled")
                        if piece is not None:
                            index += 1
                            text += piece
                            now = time.perf_counter() - start
                            ttft = now if ttft is None else ttft
                            yield Event(
                                kind="token",
                                index=index,
                                seed=current.seed,
                                text=piece,
                                piece=piece,
                                prob=prob,
                                top=alts,
                                ttft=ttft,
                                tokens_per_s=index / now,
                                elapsed=now,
                                settings_version=version,
                            )
                        if finish is not None:
                            reason = finish_reason(finish, current)
                            break
                        if live is not None and live.version != version:
                            brief = current.brief  # read once, at the start (as locally)
                            current, version = live.snapshot()
                            if current.brief != brief:
                                current = current.replace(brief=brief)
                            restarted = True  # continue the story with the new settings
                            break
                        if index >= current.max_new_tokens:
                            reason = "length"  # the server would go on: not read further
                            break
                    else:  # [DONE] with no finish reason: the server's own end
                        reason = (
                            "length"
                            if index >= current.max_new_tokens
                            else finish_reason(None, current)
                        )
            except Cancelled:
                reason = "cancelled"
                break
            if not restarted:
                break
        now = time.perf_counter() - start
        yield Event(
            kind="done",
            index=index,
            seed=current.seed,
            ttft=ttft,
            tokens_per_s=index / now if now > 0 else 0.0,
            elapsed=now,
            settings_version=version,
            finish_reason=reason,
        )


def _completion(data: Any, settings: SamplingSettings, where: str) -> Completion:
    """A non-streamed answer, its shape checked field by field."""
    if not isinstance(data, dict):
        raise RemoteError(f"{where}: the answer is not a JSON object")
    if "error" in data:
        raise RemoteError(f"{where}: {_error_text(data['error'])}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RemoteError(f'{where}: the answer has no "choices" list of objects')
    choice = choices[0]
    text, finish = choice.get("text"), choice.get("finish_reason")
    if not isinstance(text, str):
        raise RemoteError(f'{where}: the choice\'s "text" is not a string')
    if finish is not None and not isinstance(finish, str):
        raise RemoteError(f'{where}: the choice\'s "finish_reason" is not a string')
    usage = data.get("usage")
    usage = {} if usage is None else usage
    if not isinstance(usage, dict):
        raise RemoteError(f'{where}: "usage" is not an object')
    tokens = usage.get("completion_tokens")
    if tokens is not None and (
        not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0
    ):
        raise RemoteError(f'{where}: "usage.completion_tokens" is not a whole number')
    return Completion(
        text=text,
        finish_reason=finish_reason(finish, settings),
        tokens=tokens,
        seed=settings.seed,
    )


def _sse_choices(
    exchange: Exchange, response: Any
) -> Iterator[tuple[str | None, float | None, tuple[TokenAlt, ...], str | None]]:
    """(text or None when the chunk holds no token, probability, alternatives, finish
    reason) per streamed chunk of choice 0, each line read within the exchange's bounds."""
    where = exchange.where
    while True:
        raw = exchange.read_line(response)
        if not raw:
            raise RemoteError(f"{where}: the server closed the stream before it ended")
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            raise RemoteError(f"{where}: a streamed chunk is not JSON") from None
        yield from _chunk_choices(chunk, where)


def _chunk_choices(
    chunk: Any, where: str
) -> Iterator[tuple[str | None, float | None, tuple[TokenAlt, ...], str | None]]:
    if not isinstance(chunk, dict):
        raise RemoteError(f"{where}: a streamed chunk is not a JSON object")
    if "error" in chunk:
        raise RemoteError(f"{where}: {_error_text(chunk['error'])}")
    choices = chunk.get("choices")
    if choices is None:
        return
    if not isinstance(choices, list):
        raise RemoteError(f'{where}: a streamed chunk\'s "choices" is not a list')
    for choice in choices:
        if not isinstance(choice, dict):
            raise RemoteError(f"{where}: a streamed choice is not an object")
        piece, finish = choice.get("text"), choice.get("finish_reason")
        piece = "" if piece is None else piece
        if not isinstance(piece, str):
            raise RemoteError(f'{where}: a streamed choice\'s "text" is not a string')
        if finish is not None and not isinstance(finish, str):
            raise RemoteError(f'{where}: a streamed choice\'s "finish_reason" is not a string')
        prob, alts, holds_token = _logprobs(choice.get("logprobs"))
        # A token: text, or logprobs for one (a byte of a character still incomplete
        # comes with logprobs and no text yet).
        yield (piece if piece or holds_token else None), prob, alts, finish


def _error_text(error: Any) -> str:
    """An error object's message, on one short line."""
    message = error.get("message") if isinstance(error, dict) else error
    line = " ".join(str(message if message is not None else "error").split())
    return line if len(line) <= 300 else line[:297] + "..."


def _prob(value: Any) -> float | None:
    """A log-probability as a probability; None for anything that is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    if not math.isfinite(value) or value > 1e-6:  # above 0 only by rounding
        return None
    return math.exp(min(value, 0.0))


def _logprobs(lp: Any) -> tuple[float | None, tuple[TokenAlt, ...], bool]:
    """(the chosen token's probability, the alternatives, whether they describe a token)
    from a completions chunk's `logprobs`; parts that do not fit the API are left out."""
    if not isinstance(lp, dict):
        return None, (), False
    tokens, values, tops = lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")
    holds_token = isinstance(tokens, list) and bool(tokens)
    prob = _prob(values[0]) if isinstance(values, list) and values else None
    first = tops[0] if isinstance(tops, list) and tops else None
    pairs = []
    if isinstance(first, dict):
        pairs = [(str(t), p) for t, v in first.items() if (p := _prob(v)) is not None]
        pairs.sort(key=lambda kv: -kv[1])
    alts = tuple(TokenAlt(token_id=-1, text=t, prob=p) for t, p in pairs[:TOP_ALTERNATIVES])
    return prob, alts, holds_token
