"""The OpenAI response shapes `slm-serve` streams and returns, built from engine `Event`s.

- `sse`: server-sent events (the chunk frames, the usage chunk when asked, then
  `data: [DONE]`); closing the stream (the client left) cancels the request's rows.
- `completion_chunks` / `chat_chunks`: one chunk per token (a token still holding back
  part of a character is skipped unless logprobs were asked for), then the finish reason;
  a chat stream opens with the assistant role. Frames are encoded from a prefix made once
  per request (one `json.dumps` of the text a frame), and a stream writes everything
  queued at a wake-up in one write (one send through the ASGI stack, not one a token),
  so a client that falls behind costs fewer writes, not a growing queue.
- `completion_logprobs` / `chat_logprobs`: OpenAI's two logprobs formats, from each token's
  probability and alternatives (the model's raw softmax); `-9999` stands for log 0.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi.responses import StreamingResponse

from slm_tui.generation.events import Event
from slm_tui.serve.protocol import ApiError
from slm_tui.serve.scheduler import Row

if TYPE_CHECKING:
    from slm_tui.serve.app import Server

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}  # ours -> OpenAI's


def sse(
    frames: AsyncIterator[str],
    rows: list[Row],
    server: Server,
    prompt_tokens: int,
    meta: dict[str, Any],
    include_usage: bool,
    obj: str,
) -> StreamingResponse:
    """Server-sent events: the frames as they come (each a ready `data: ...` block), the usage
    chunk when asked, then `data: [DONE]`. Closing the stream (the client left) cancels the
    rows."""

    async def events() -> AsyncIterator[str]:
        try:
            async for block in frames:
                yield block
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


async def _drained(queue: asyncio.Queue, rows: list[Row]) -> AsyncIterator[list[tuple[int, Event]]]:
    """The rows' events in batches: everything queued at each wake-up (one step's event in
    step, several when the client fell behind), until every row is done."""
    pending = len(rows)
    while pending:
        batch = [await queue.get()]
        while not queue.empty():
            batch.append(queue.get_nowait())
        pending -= sum(event.kind == "done" for _, event in batch)
        yield batch


def _prefix(meta: dict[str, Any], obj: str | None = None) -> str:
    """`data: {"id": ..., "choices": [` for this request's frames (encoded once)."""
    head = {**meta, "object": obj} if obj else meta
    return "data: " + json.dumps(head, ensure_ascii=False)[:-1] + ', "choices": ['


def _error_frame(event: Event) -> str:
    error = ApiError(500, f"generation failed: {event.error}", type="server_error")
    return f"data: {json.dumps(error.body())}\n\n"


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


async def completion_chunks(
    server: Server, queue: asyncio.Queue, rows: list[Row], meta: dict[str, Any], logprobs: bool
) -> AsyncIterator[str]:
    """Completion chunks as SSE frames, one per token (a token still holding back part of a
    character is skipped unless logprobs were asked for), then each choice's finish reason;
    everything queued at a wake-up goes out in one write."""
    prefix = _prefix(meta)
    async for batch in _drained(queue, rows):
        frames = []
        for k, event in batch:
            if event.finish_reason == "error":
                frames.append(_error_frame(event))
                continue
            if event.kind == "token" and not event.text and not logprobs:
                continue  # bytes held for a character still incomplete
            lp = "null"
            if logprobs and event.kind == "token":
                lp = json.dumps(completion_logprobs(server, [event]), ensure_ascii=False)
            finish = json.dumps(FINISH.get(event.finish_reason or ""))
            frames.append(f'{prefix}{{"index": {k}, "text": {_text(event.text)}, '
                          f'"logprobs": {lp}, "finish_reason": {finish}}}]}}\n\n')  # fmt: skip
        if frames:
            yield "".join(frames)


async def chat_chunks(
    server: Server, queue: asyncio.Queue, rows: list[Row], meta: dict[str, Any], logprobs: bool
) -> AsyncIterator[str]:
    """Chat chunks as SSE frames: the assistant role first, then as `completion_chunks`
    (a content delta per token), then each choice's finish reason."""
    prefix = _prefix(meta, "chat.completion.chunk")  # (meta's object is chat.completion)

    def frame(k: int, delta: str, finish: str | None = None, lp: str = "null") -> str:
        return (f'{prefix}{{"index": {k}, "delta": {delta}, "logprobs": {lp}, '
                f'"finish_reason": {json.dumps(finish)}}}]}}\n\n')  # fmt: skip

    yield "".join(frame(k, '{"role": "assistant", "content": ""}') for k in range(len(rows)))
    async for batch in _drained(queue, rows):
        frames = []
        for k, event in batch:
            if event.finish_reason == "error":
                frames.append(_error_frame(event))
                continue
            content = '{"content": ' + _text(event.text) + "}"
            if event.kind == "token":
                if not event.text and not logprobs:
                    continue
                lp = "null"
                if logprobs:
                    lp = json.dumps({"content": chat_logprobs(server, [event])}, ensure_ascii=False)
                frames.append(frame(k, content, lp=lp))
            else:
                if event.text:
                    frames.append(frame(k, content))
                frames.append(frame(k, "{}", FINISH.get(event.finish_reason or "")))
        if frames:
            yield "".join(frames)


def completion_logprobs(server: Server, events: list[Event]) -> dict[str, Any]:
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


def chat_logprobs(server: Server, events: list[Event]) -> list[dict[str, Any]]:
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
