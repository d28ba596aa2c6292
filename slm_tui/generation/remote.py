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
  plus the text so far, with the new settings and the tokens left.
- Every failure is a `RemoteError` (a one-line `GenerationError`): a server that cannot be
  reached, an HTTP error (its OpenAI error message quoted), a response that is not what
  the API promises.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from slm_tui.errors import GenerationError
from slm_tui.generation.events import Event, TokenAlt
from slm_tui.generation.settings import LiveSettings, SamplingSettings


class RemoteError(GenerationError):
    """The server could not be reached, refused the request, or answered off the API."""


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
    return body


class Remote:
    """An OpenAI-compatible server."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise RemoteError(f"--server {url!r} must start with http:// or https://")
        self.base = url if url.endswith("/v1") else f"{url}/v1"
        self.api_key, self.timeout = api_key, timeout

    # --- HTTP ------------------------------------------------------------------------------
    def _open(self, path: str, body: dict[str, Any] | None = None):
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode("utf-8")
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise RemoteError(f"{self.base}{path}: {exc.code} {_error_message(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach {self.base} ({reason})") from None

    def _json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        with self._open(path, body) as response:
            try:
                return json.loads(response.read().decode("utf-8"))
            except (ValueError, OSError) as exc:
                raise RemoteError(f"{self.base}{path}: the answer is not JSON ({exc})") from None

    # --- the API -----------------------------------------------------------------------------
    def models(self) -> list[str]:
        """The server's model ids."""
        data = self._json("/models")
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError):
            raise RemoteError(f"{self.base}/models: not a model list") from None

    def complete(self, model: str, prompt: str, settings: SamplingSettings) -> Completion:
        """One story, in one answer."""
        data = self._json("/completions", request_body(prompt, settings, model))
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Completion(
                text=str(choice["text"]),
                finish_reason=finish_reason(choice.get("finish_reason"), settings),
                tokens=usage.get("completion_tokens"),
                seed=settings.seed,
            )
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"{self.base}/completions: not a completion") from None

    def stream(
        self,
        model: str,
        prompt: str,
        settings: SamplingSettings | LiveSettings,
        *,
        cancel: threading.Event | None = None,
        top_n: int = 5,
    ) -> Iterator[Event]:
        """Stream one story as `Event`s (a "token" event per text chunk, then "done")."""
        live = settings if isinstance(settings, LiveSettings) else None
        current, version = settings.snapshot() if live else (settings, 0)
        start, ttft, index, text = time.perf_counter(), None, 0, ""
        reason = "length"
        while True:
            left = current.max_new_tokens - index
            if left <= 0:
                break
            body = request_body(prompt + text, current.replace(max_new_tokens=left), model)
            body.update(stream=True, stream_options={"include_usage": True})
            if top_n:
                body["logprobs"] = top_n
            restarted = False
            with self._open("/completions", body) as response:
                for piece, prob, alts, finish in _sse_choices(response, self.base):
                    if cancel is not None and cancel.is_set():
                        reason = "cancelled"
                        break
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
                    elif live is not None and live.version != version:
                        current, version = live.snapshot()
                        restarted = True  # continue the story with the new settings
                        break
            if reason == "cancelled" or not restarted:
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


def _sse_choices(
    response, where: str
) -> Iterator[tuple[str | None, float | None, tuple, str | None]]:
    """(text or None when the chunk holds no token, probability, alternatives, finish
    reason) per streamed chunk of choice 0."""
    for raw in _lines(response, where):
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise RemoteError(f"{where}: a streamed chunk is not JSON") from None
        if "error" in chunk:
            message = (chunk["error"] or {}).get("message", "error")
            raise RemoteError(f"{where}: {message}")
        for choice in chunk.get("choices") or ():
            piece = choice.get("text") or ""
            lp = choice.get("logprobs")
            prob, alts = _logprobs(lp)
            # A token: text, or logprobs for one (a byte of a character still incomplete
            # comes with logprobs and no text yet).
            is_token = bool(piece) or bool(isinstance(lp, dict) and lp.get("tokens"))
            yield (piece if is_token else None), prob, alts, choice.get("finish_reason")
    raise RemoteError(f"{where}: the server closed the stream before it ended")


def _lines(response, where: str) -> Iterator[bytes]:
    """The response's lines; a connection that breaks is a RemoteError."""
    try:
        yield from response
    except (OSError, http.client.HTTPException) as exc:
        raise RemoteError(f"{where}: the connection broke ({type(exc).__name__})") from None


def _logprobs(lp: Any) -> tuple[float | None, tuple[TokenAlt, ...]]:
    """The chosen token's probability and the alternatives, from a completions chunk."""
    if not isinstance(lp, dict) or not lp.get("token_logprobs"):
        return None, ()
    value = lp["token_logprobs"][0]
    prob = math.exp(value) if isinstance(value, (int, float)) else None
    tops = (lp.get("top_logprobs") or [None])[0] or {}
    alts = tuple(
        TokenAlt(token_id=-1, text=str(t), prob=math.exp(v))
        for t, v in sorted(tops.items(), key=lambda kv: -kv[1])
        if isinstance(v, (int, float))
    )
    return prob, alts


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The OpenAI error message of an HTTP error, else its reason."""
    try:
        body = json.loads(exc.read().decode("utf-8"))
        return str(body["error"]["message"])
    except Exception:  # not an OpenAI-shaped error: say what HTTP says
        return str(exc.reason)
