"""The HTTP side of `slm-serve`: an OpenAI-compatible API over one `Scheduler` (FastAPI).

Endpoints: `GET /v1/models` (and `/v1/models/{id}`), `POST /v1/completions`,
`POST /v1/chat/completions` (streaming as server-sent events ending with `data: [DONE]`),
`GET /health`, `GET /metrics` (Prometheus text). Notable:
- Every error is OpenAI's JSON shape (`{"error": {"message", "type", "param", "code"}}`)
  with its status: a body that is not JSON or has the wrong types (400, naming the field),
  sampling values the engine refuses (400), an unknown model (404), a prompt longer than
  the context (400 naming the limit), a body over `max_body` bytes (413), a missing or
  wrong API key (401; compared in constant time), a full queue (429 with `Retry-After`),
  shutting down (503).
- Each choice of a request is one row of the engine's batch, seeded `seed + index` (a
  fresh seed when none is given), so `n` > 1 and a list of prompts reproduce like
  `slm-generate`. Token events come back from the engine thread through an asyncio queue.
- A client that goes away is cancelled within a step: a stream's generator is closed by
  Starlette on disconnect; a plain request listens for the disconnect while it waits (and
  is counted in /metrics as status 499, nginx's "client closed request").
- A request that asks for more choices (prompts × `n`) than the queue can ever hold is a
  400 before any prompt is tokenized; one that only has to wait is a 429. A long prompt
  is tokenized on a worker thread, so the event loop keeps answering meanwhile.
- A brief (the body's `brief`, or the one a chat message asks for: protocol.py) becomes
  the block before the prompt's ids (`prepare_prompt`); the text sent back is the story.
- `/health` and `/metrics` report the rows decoding now (0 once the last one has ended).
- `logprobs` are under the model's raw softmax (before penalties, filters and temperature),
  as the TUI's token view shows them; a token's string is its own bytes decoded (a
  character split over byte tokens shows as U+FFFD in each).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from slm_tui.briefs import Brief
from slm_tui.generation.engine import fresh_seed, prepare_prompt
from slm_tui.generation.events import Event
from slm_tui.generation.settings import MAX_SEED
from slm_tui.serve.connections import quiet_accept_errors
from slm_tui.serve.engine_process import EngineProcess, Setup
from slm_tui.serve.middleware import Gatekeeper, LimitBody
from slm_tui.serve.protocol import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    Sampling,
    unicode_text,
)
from slm_tui.serve.responses import (
    FINISH,
    chat_chunks,
    chat_logprobs,
    completion_chunks,
    completion_logprobs,
    sse,
)
from slm_tui.serve.scheduler import QueueFull, Row, Scheduler

# Prompts longer than this (characters in all) are tokenized on a worker thread: a 1 MiB
# prompt takes the tokenizer a noticeable time, which the event loop's other clients would
# wait through.
THREAD_TOKENIZE_CHARS = 16_384


if TYPE_CHECKING:
    from slm_tui.checkpoint.io import LoadedCheckpoint


class ClientGone(Exception):
    """The client disconnected while its request was running."""


def _busy(detail: str) -> ApiError:
    return ApiError(
        429,
        f"the server is busy ({detail}); retry shortly",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": "1"},
    )


class Server:
    """The state behind the app: the model, its scheduler, the limits, the counters."""

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        *,
        model_name: str,
        max_batch: int = 16,
        max_queue: int = 64,
        max_tokens_cap: int = 1024,
        api_key: str | None = None,
        engine: str = "thread",
        device: str | None = None,
        threads: int = 1,
    ) -> None:
        """`engine`: "thread" (the engine loop in this process: the model here is the one
        served) or "process" (engine_process.py: a child process loads the checkpoint's
        folder on `device`, default the checkpoint's, with `threads` torch threads; this
        process keeps the tokenizer and the limits)."""
        self.model, self.tokenizer = checkpoint.model, checkpoint.tokenizer
        self.model_name = model_name
        self.context = self.model.cfg.context_length
        self.max_tokens_cap = max_tokens_cap
        self.api_key = api_key
        self.created = int(time.time())
        # Events of one engine step, handed to the event loop in one wake-up (not one per
        # row and token: at 16 rows that is 16 cross-thread wake-ups a step).
        self._outbox: list[tuple[asyncio.Queue, int, Event]] = []  # the engine thread's
        self._loop: asyncio.AbstractEventLoop | None = None
        self.scheduler: Scheduler | EngineProcess
        if engine == "process":
            setup = Setup(path=str(checkpoint.path), device=device or str(checkpoint.device),
                          threads=threads, max_batch=max_batch, max_queue=max_queue,
                          weights_sha256=checkpoint.info.weights_sha256)  # fmt: skip
            self.scheduler = EngineProcess(setup, on_step=self._flush)
        elif engine == "thread":
            self.scheduler = Scheduler(
                self.model, self.tokenizer, max_batch=max_batch, max_queue=max_queue,
                on_step=self._flush,
            )  # fmt: skip
        else:
            raise ValueError(f"engine must be 'thread' or 'process', not {engine!r}")
        self.requests: Counter[tuple[str, int]] = Counter()

    # --- requests -> rows ---------------------------------------------------------------------
    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(
                404,
                f"model {name!r} does not exist; this server has {self.model_name!r}",
                param="model",
                code="model_not_found",
            )

    async def start_rows(
        self,
        prompts: list[str],
        body: Sampling,
        top_n: int,
        param: str,
        brief: Brief | None = None,
        *,
        probs: bool = True,
    ) -> tuple[asyncio.Queue, list[Row], int]:
        """Queue one row per prompt × n; (the events queue, the rows, prompt tokens).
        `brief`: one the request implies (a chat request), in place of the body's. `probs`:
        the request reads each token's probability (logprobs); without, the engine reads
        the chosen ids alone (no softmax over the vocabulary a step)."""
        self.check_model(body.model)
        settings = body.settings(self.max_tokens_cap, self.model.vocab_size)
        if brief is not None:
            settings = settings.replace(brief=brief)
        # What the queue can hold is known before any prompt is read: a request that can
        # never fit is the client's error (400), one that must wait its turn a 429.
        count, max_queue = len(prompts) * body.n, self.scheduler.max_queue
        if count > max_queue:
            raise ApiError(
                400,
                f"the request asks for {count} choices ({len(prompts)} prompts × n={body.n}); "
                f"this server queues at most {max_queue}",
                param="prompt" if len(prompts) > 1 else "n",
                code="too_many_choices",
            )
        if count > self.scheduler.room():
            raise _busy(f"room for {max(0, self.scheduler.room())} more choices, "
                        f"{count} asked")  # fmt: skip
        if sum(len(p) for p in prompts) > THREAD_TOKENIZE_CHARS:
            encoded = await asyncio.to_thread(self._encode, prompts, param, settings.brief)
        else:
            encoded = self._encode(prompts, param, settings.brief)
        base_seed = settings.seed if settings.seed is not None else fresh_seed()
        guided = settings  # each row's brief guide (generation/guide.py) is made from it
        # Each row's seed is its own (below); the brief is in the prompt's ids and the rows'
        # guides now, so rows of requests that differ only in their briefs share one sampler.
        settings = settings.replace(seed=None, brief=None, brief_strength=1.0)
        self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Event | None]] = asyncio.Queue()
        rows, prompt_tokens = [], sum(len(ids) for ids in encoded)
        for i, ids in enumerate(encoded):
            for j in range(body.n):
                k = i * body.n + j
                seed = (base_seed + k) % (MAX_SEED + 1)
                rows.append(
                    Row(
                        ids=ids,
                        settings=settings,
                        seed=seed,
                        sink=self._sink(queue, k),
                        top_n=top_n,
                        probs=probs,
                        guided=guided,
                    )
                )
        try:
            self.scheduler.submit(rows)
        except QueueFull as exc:
            raise _busy(str(exc)) from None
        except RuntimeError as exc:
            raise ApiError(503, str(exc), type="server_error", code="shutting_down") from None
        return queue, rows, prompt_tokens

    def _encode(self, prompts: list[str], param: str, brief: Brief | None) -> list[list[int]]:
        """Each prompt's ids (BOS first, then the brief's block), checked: Unicode text,
        within the context."""
        encoded = []
        for i, prompt in enumerate(prompts):
            where = f"{param}[{i}]" if len(prompts) > 1 else param
            text = unicode_text(prompt, where, param)
            ids, too_long = prepare_prompt(
                self.tokenizer, text, self.context, brief=brief, truncate=False
            )
            if too_long:
                raise ApiError(
                    400,
                    f"the prompt is {len(ids)} tokens; this model's context is {self.context}",
                    param=param,
                    code="context_length_exceeded",
                )
            encoded.append(ids)
        return encoded

    def _sink(self, queue: asyncio.Queue, k: int) -> Callable[[Event], None]:
        def put(event: Event) -> None:  # on the engine thread
            self._outbox.append((queue, k, event))

        return put

    def _flush(self) -> None:
        """After each engine step (engine thread): deliver its events in one wake-up."""
        if self._outbox and self._loop is not None:
            batch, self._outbox = self._outbox, []
            # (a closed event loop: nobody is listening any more)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_deliver, batch)

    @staticmethod
    async def collect(request: Request, queue: asyncio.Queue, rows: list[Row]) -> list[list[Event]]:
        """Every row's events, once all rows are done; ClientGone as soon as the client
        leaves (a listener waits for the disconnect beside the events)."""
        events: list[list[Event]] = [[] for _ in rows]
        pending = len(rows)
        listener = asyncio.ensure_future(_until_gone(request, queue))
        try:
            while pending:
                k, event = await queue.get()
                if event is None:
                    raise ClientGone
                events[k].append(event)
                pending -= event.kind == "done"
        finally:
            listener.cancel()
        return events

    def token_string(self, token_id: int) -> str:
        return self.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    def usage(self, prompt_tokens: int, rows: list[Row]) -> dict[str, int]:
        completion = sum(row.index for row in rows)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }

    def metrics(self) -> str:
        s = self.scheduler.stats
        lines = [
            "# HELP slm_requests_total HTTP requests answered, by path and status.",
            "# TYPE slm_requests_total counter",
        ]
        for (path, status), count in sorted(self.requests.items()):
            lines.append(f'slm_requests_total{{path="{path}",status="{status}"}} {count}')
        for name, kind, value, text in (
            ("slm_generated_tokens_total", "counter", s.tokens_generated, "Tokens generated."),
            ("slm_prompt_tokens_total", "counter", s.prompt_tokens, "Prompt tokens prefilled."),
            ("slm_rows_finished_total", "counter", s.rows_finished, "Choices finished."),
            ("slm_engine_steps_total", "counter", s.steps, "Batched decode steps."),
            ("slm_engine_errors_total", "counter", s.errors, "Decode steps that failed."),
            ("slm_active_rows", "gauge", s.active_rows, "Choices decoding now."),
            ("slm_queue_depth", "gauge", s.queued_rows, "Choices waiting for a row."),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"


async def _until_gone(request: Request, queue: asyncio.Queue) -> None:
    """Put (-1, None) on `queue` when the client disconnects. The body has been read, so
    the server's next message is the disconnect (uvicorn sends it when the socket closes)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # (another message: never a busy loop)
    queue.put_nowait((-1, None))


def _deliver(batch: list[tuple[asyncio.Queue, int, Event]]) -> None:
    for queue, k, event in batch:  # on the event loop
        queue.put_nowait((k, event))


def _failed(events: list[list[Event]]) -> str | None:
    for row in events:
        if row and row[-1].finish_reason == "error":
            return row[-1].error or "generation failed"
    return None


def create_app(
    server: Server,
    *,
    max_body: int = 1 << 20,
    body_timeout: float = 30.0,
    cors: list[str] | None = None,
) -> FastAPI:
    """The FastAPI app over `server` (its scheduler is stopped, draining, at shutdown).
    A request body must arrive whole within `body_timeout` seconds of its head (408)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        quiet_accept_errors(asyncio.get_running_loop())
        yield
        await asyncio.to_thread(server.scheduler.stop)

    app = FastAPI(title="slm-serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message, param = f"the body is not valid JSON ({first.get('msg', '')})", None
        else:
            param = ".".join(loc) or None
            message = f"{param or 'body'}: {first.get('msg', 'invalid')}"
        return JSONResponse(ApiError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        error = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                         type=kind)  # fmt: skip
        return JSONResponse(error.body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        error = ApiError(500, f"internal error: {type(exc).__name__}", type="server_error")
        return JSONResponse(error.body(), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        s = server.scheduler.stats
        status = "ok" if server.scheduler.running else "stopped"
        return {"status": status, "model": server.model_name, "active_rows": s.active_rows,
                "queued_rows": s.queued_rows}  # fmt: skip

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(server.metrics(), media_type="text/plain; version=0.0.4")

    def model_card() -> dict[str, Any]:
        return {"id": server.model_name, "object": "model", "created": server.created,
                "owned_by": "slm-tui"}  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        server.check_model(model_id)
        return model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        top_n = body.logprobs or 0
        queue, rows, prompt_tokens = await server.start_rows(
            body.prompts(), body, top_n, "prompt", probs=body.logprobs is not None
        )
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": server.model_name}  # fmt: skip
        want_logprobs = body.logprobs is not None
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            chunks = completion_chunks(server, queue, rows, meta, want_logprobs)
            return sse(chunks, rows, server, prompt_tokens, meta, usage, "text_completion")
        events = await _collect_or_cancel(request, queue, rows)
        if events is None:
            return Response(status_code=CLIENT_GONE)
        choices = []
        for k, row_events in enumerate(events):
            text = "".join(e.text for e in row_events)
            logprobs = completion_logprobs(server, row_events) if want_logprobs else None
            choices.append({"index": k, "text": text, "logprobs": logprobs,
                            "finish_reason": FINISH.get(row_events[-1].finish_reason or "")})  # fmt: skip
        return {**meta, "choices": choices, "usage": server.usage(prompt_tokens, rows)}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        top_n = (body.top_logprobs or 0) if body.logprobs else 0
        prompt = body.story_prompt()
        brief = body.requested_brief()  # a request for a story: written from its brief alone
        queue, rows, prompt_tokens = await server.start_rows(
            ["" if brief is not None else prompt],
            body,
            top_n,
            "messages",
            brief,
            probs=bool(body.logprobs),
        )
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": server.model_name}  # fmt: skip
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            chunks = chat_chunks(server, queue, rows, meta, body.logprobs)
            return sse(chunks, rows, server, prompt_tokens, meta, usage, "chat.completion.chunk")
        events = await _collect_or_cancel(request, queue, rows)
        if events is None:
            return Response(status_code=CLIENT_GONE)
        choices = []
        for k, row_events in enumerate(events):
            text = "".join(e.text for e in row_events)
            logprobs = {"content": chat_logprobs(server, row_events)} if body.logprobs else None
            choices.append({"index": k, "message": {"role": "assistant", "content": text},
                            "logprobs": logprobs,
                            "finish_reason": FINISH.get(row_events[-1].finish_reason or "")})  # fmt: skip
        return {**meta, "choices": choices, "usage": server.usage(prompt_tokens, rows)}

    app.add_middleware(LimitBody, limit=max_body, timeout=body_timeout)
    app.add_middleware(Gatekeeper, api_key=server.api_key, requests=server.requests)
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors, allow_methods=["*"],
                           allow_headers=["*"])  # fmt: skip
    return app


CLIENT_GONE = 499  # nginx's "client closed request": what /metrics counts (nobody reads it)


async def _collect_or_cancel(
    request: Request, queue: asyncio.Queue, rows: list[Row]
) -> list[list[Event]] | None:
    """The rows' events; None (the rows cancelled) when the client has gone."""
    try:
        events = await Server.collect(request, queue, rows)
    except (ClientGone, asyncio.CancelledError) as exc:
        for row in rows:
            row.cancelled.set()
        if isinstance(exc, ClientGone):
            return None
        raise
    error = _failed(events)
    if error is not None:
        raise ApiError(500, f"generation failed: {error}", type="server_error")
    return events
