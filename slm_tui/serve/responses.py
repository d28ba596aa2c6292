"""The OpenAI response shapes `slm-serve` streams and returns, built from engine `Event`s.

- `sse`: server-sent events (`data: <json>` per chunk, the usage chunk when asked, then
  `data: [DONE]`); closing the stream (the client left) cancels the request's rows.
- `completion_chunks` / `chat_chunks`: one chunk per token (a token still holding back
  part of a character is skipped unless logprobs were asked for), then the finish reason;
  a chat stream opens with the assistant role.
- `completion_logprobs` / `chat_logprobs`: OpenAI's two logprobs formats, from each token's
  probability and alternatives (the model's raw softmax); `-9999` stands for log 0.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from slm_tui.generation.events import Event
from slm_tui.serve.protocol import ApiError
from slm_tui.serve.scheduler import Row

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}  # ours -> OpenAI's


def sse(
    chunks: AsyncIterator[dict[str, Any]],
    rows: list[Row],
    server: Any,
    prompt_tokens: int,
    meta: dict[str, Any],
    include_usage: bool,
    obj: str,
) -> StreamingResponse:
    """Server-sent events: each chunk as `data: <json>`, the usage chunk when asked, then
    `data: [DONE]`. Closing the stream (the client left) cancels the rows."""

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            if include_usage:
                usage = {**meta, "object": obj, "choices": [],
                         "usage": server.usage(prompt_tokens, rows)}  # fmt: skip
                yield f"data: {json.dumps(usage)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            for row in rows:
                row.cancelled.set()  # no-op for rows that finished

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _row_events(queue: asyncio.Queue, rows: list[Row]) -> AsyncIterator[tuple[int, Event]]:
    pending = len(rows)
    while pending:
        k, event = await queue.get()
        pending -= event.kind == "done"
        yield k, event


def _error_chunk(event: Event) -> dict[str, Any]:
    error = ApiError(500, f"generation failed: {event.error}", type="server_error")
    return error.body()


async def completion_chunks(
    server: Any, queue: asyncio.Queue, rows: list[Row], meta: dict[str, Any], logprobs: bool
) -> AsyncIterator[dict[str, Any]]:
    async for k, event in _row_events(queue, rows):
        if event.finish_reason == "error":
            yield _error_chunk(event)
            continue
        if event.kind == "token" and not event.text and not logprobs:
            continue  # bytes held for a character still incomplete
        choice: dict[str, Any] = {"index": k, "text": event.text, "logprobs": None,
                                  "finish_reason": FINISH.get(event.finish_reason or "")}  # fmt: skip
        if logprobs and event.kind == "token":
            choice["logprobs"] = completion_logprobs(server, [event])
        yield {**meta, "choices": [choice]}


async def chat_chunks(
    server: Any, queue: asyncio.Queue, rows: list[Row], meta: dict[str, Any], logprobs: bool
) -> AsyncIterator[dict[str, Any]]:
    def chunk(k: int, delta: dict[str, Any], finish: str | None = None, lp=None):
        return {**meta, "object": "chat.completion.chunk",  # (meta's object is chat.completion)
                "choices": [{"index": k, "delta": delta, "logprobs": lp,
                             "finish_reason": finish}]}  # fmt: skip

    for k in range(len(rows)):
        yield chunk(k, {"role": "assistant", "content": ""})
    async for k, event in _row_events(queue, rows):
        if event.finish_reason == "error":
            yield _error_chunk(event)
            continue
        if event.kind == "token":
            if not event.text and not logprobs:
                continue
            lp = {"content": chat_logprobs(server, [event])} if logprobs else None
            yield chunk(k, {"content": event.text}, lp=lp)
        else:
            if event.text:
                yield chunk(k, {"content": event.text})
            yield chunk(k, {}, FINISH.get(event.finish_reason or ""))


def completion_logprobs(server: Any, events: list[Event]) -> dict[str, Any]:
    """OpenAI's legacy completions logprobs: tokens, their logprobs, the top alternatives as
    {token: logprob}, and each token's offset in the text."""
    tokens, logprobs, tops, offsets = [], [], [], []
    offset = 0
    for e in events:
        if e.kind != "token" or e.token_id is None:
            continue
        tokens.append(server.token_string(e.token_id))
        logprobs.append(_log(e.prob))
        tops.append({server.token_string(a.token_id): _log(a.prob) for a in e.top})
        offsets.append(offset)
        offset += len(e.text)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops,
            "text_offset": offsets}  # fmt: skip


def chat_logprobs(server: Any, events: list[Event]) -> list[dict[str, Any]]:
    """OpenAI's chat logprobs content: token, logprob, bytes, top_logprobs."""
    out = []
    for e in events:
        if e.kind != "token" or e.token_id is None:
            continue
        raw = server.tokenizer.token_bytes(e.token_id)
        top = []
        for a in e.top:
            alt = server.tokenizer.token_bytes(a.token_id)
            top.append({"token": alt.decode("utf-8", "replace"), "logprob": _log(a.prob),
                        "bytes": list(alt)})  # fmt: skip
        out.append({"token": raw.decode("utf-8", "replace"), "logprob": _log(e.prob),
                    "bytes": list(raw), "top_logprobs": top})  # fmt: skip
    return out


def _log(prob: float | None) -> float:
    if not prob or prob <= 0:
        return -9999.0  # OpenAI's stand-in for log(0)
    return math.log(prob)
