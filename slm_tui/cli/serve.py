"""`slm-serve`: the OpenAI-compatible HTTP server (FastAPI on uvicorn) over one checkpoint.

Thin: check the flags, load the checkpoint (default: the bundled demo), build the app
(`slm_tui.serve.app`), run uvicorn. SIGTERM or Ctrl-C stops accepting connections and lets
the requests in flight finish for up to `--drain-seconds`, then exits 0. Binding to
anything but loopback without an API key prints a warning. A request head must arrive
within `--header-timeout` seconds and its body within `--body-timeout`, and at most
`--max-connections` are open (`slm_tui.serve.connections`); the open-file limit is raised
(up to the hard limit) to hold them, or `--max-connections` lowered to what it holds, with
a warning. The server stack is the `serve` extra (`pip install 'slm-tui[serve]'`); without
it this command says so in one line.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from slm_tui.cli.common import Command, cli_errors, err, fail, warn

if TYPE_CHECKING:
    from slm_tui.serve.connections import Limits

app = typer.Typer(
    name="slm-serve",
    help="Serve a checkpoint over the OpenAI HTTP API (completions, chat, streaming).",
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Open files the process needs besides its connections (the listening socket, the event
# loop's, logs; the model's files are closed once loaded), with room to spare.
RESERVED_FILES = 64


def _fit_open_files(limits: Limits) -> Limits:
    """`limits`, fitted to the open-file limit: the soft limit is raised toward the hard one
    to hold `limits.open_files()` (Go's runtime raises it the same way); where it cannot
    be, fewer connections (and a shorter accept burst) that fit. Unchanged where the
    platform has no such limit."""
    try:
        import resource
    except ImportError:  # Windows: no RLIMIT_NOFILE
        return limits
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = limits.open_files() + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return limits
    room = soft - RESERVED_FILES
    backlog = min(limits.backlog, max(8, room // 4))
    return replace(limits, backlog=backlog, max_connections=room - backlog)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command(cls=Command)
def serve(
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint (or run) folder; default: the bundled demo model."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SLM_API_KEY",
            help="Require 'Authorization: Bearer KEY' (also $SLM_API_KEY).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    max_batch: Annotated[int, typer.Option(help="Requests (choices) decoded together.")] = 16,
    max_queue: Annotated[
        int, typer.Option(help="Choices that may wait for a place; more get 429.")
    ] = 64,
    max_tokens_cap: Annotated[
        int, typer.Option(help="The largest max_tokens a request may ask for.")
    ] = 1024,
    model_name: Annotated[
        str | None,
        typer.Option(
            help="Model id clients send (default: the checkpoint's name).", show_default=False
        ),
    ] = None,
    cors: Annotated[
        list[str] | None,
        typer.Option(help="Allow browser requests from this origin (repeatable); none by default."),
    ] = None,
    drain_seconds: Annotated[
        float, typer.Option(help="On SIGTERM, how long requests in flight may finish.")
    ] = 30.0,
    header_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a request's head (request line and headers) may take to "
            "arrive; later, 408 and the connection closed."
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a request's body may take to arrive after its head; later, 408."
        ),
    ] = 30.0,
    max_connections: Annotated[
        int,
        typer.Option(
            help="Connections open at once; past it a new one closes the one idle "
            "longest (or gets 503 when none is idle)."
        ),
    ] = 1000,
    threads: Annotated[
        int,
        typer.Option(
            help="torch threads for the model on CPU (0: one per physical core but one, which "
            "is left to HTTP)."
        ),
    ] = 0,
    engine: Annotated[
        str,
        typer.Option(
            help="process: the model runs in a process of its own, beside the HTTP one (the "
            "two never wait on each other's interpreter lock); thread: in the HTTP process."
        ),
    ] = "process",
) -> None:
    """Serve a checkpoint over the OpenAI HTTP API."""
    with cli_errors():
        for flag, value in (("--max-batch", max_batch), ("--max-queue", max_queue),
                            ("--max-tokens-cap", max_tokens_cap)):  # fmt: skip
            if value < 1:
                fail(f"{flag} must be at least 1, got {value}")
        if not 0 < port < 65536:
            fail(f"--port must be in 1..65535, got {port}")
        if api_key is not None and not api_key.strip():
            fail("--api-key is empty")
        if max_connections < 1:
            fail(f"--max-connections must be at least 1, got {max_connections}")
        for flag, seconds in (("--header-timeout", header_timeout),
                              ("--body-timeout", body_timeout)):  # fmt: skip
            if not 0 < seconds < float("inf"):
                fail(f"{flag} must be a positive number of seconds, got {seconds}")
        try:
            import uvicorn

            from slm_tui.serve.app import Server, create_app
            from slm_tui.serve.connections import Limits, uvicorn_config
        except ImportError as exc:
            fail(f"slm-serve needs the server extra ({exc.name} is missing): "
                 "pip install 'slm-tui[serve]'")  # fmt: skip
        from slm_tui.checkpoint.io import bundled_demo_path, load_checkpoint

        path = checkpoint if checkpoint is not None else bundled_demo_path()
        if path is None:
            fail("no --checkpoint given and no bundled demo model found")
        if threads < 0:
            fail(f"--threads must be 0 (automatic) or more, got {threads}")
        if engine not in ("process", "thread"):
            fail(f"--engine must be process or thread, got {engine!r}")
        if engine == "process" and os.name != "posix":  # (a socket pair handed to a child)
            warn("--engine process needs a POSIX system; the engine runs in this process")
            engine = "thread"
        import psutil
        import torch

        # The engine's OpenMP threads must not fight the event loop for the cores: a
        # contended thread spin-waits (a 2-thread engine beside a busy HTTP thread ran
        # ~30x slower here).
        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        engine_threads = threads or max(1, cores - 1)
        # With the engine in its own process, this one reads the folder (checks, tokenizer)
        # on the CPU and runs no model: the child loads it on --device.
        loaded = load_checkpoint(path, "cpu" if engine == "process" else device)
        if engine == "process":
            torch.set_num_threads(1)
        elif loaded.device.type == "cpu":
            torch.set_num_threads(engine_threads)
        name = model_name or loaded.info.name
        from slm_tui.serve.engine_process import EngineFailed, EngineProcess

        try:
            server = Server(
                loaded,
                model_name=name,
                max_batch=max_batch,
                max_queue=max_queue,
                max_tokens_cap=max_tokens_cap,
                api_key=api_key,
                engine=engine,
                device=device,
                threads=engine_threads,
            )
        except EngineFailed as exc:
            fail(str(exc))
        fastapi_app = create_app(server, body_timeout=body_timeout, cors=list(cors or []))
        if not _loopback(host) and api_key is None:
            warn(f"serving on {host} without an API key: anyone who can reach it may use it "
                 "(set --api-key or SLM_API_KEY)")  # fmt: skip
        if api_key is not None and not api_key.isascii():
            warn("--api-key holds non-ASCII characters: the server takes them as UTF-8 "
                 "(curl sends them so), but some clients (httpx, the openai package) "
                 "send only ASCII keys")  # fmt: skip
        wanted = Limits(header_timeout=header_timeout, body_timeout=body_timeout,
                        max_connections=max_connections)  # fmt: skip
        limits = _fit_open_files(wanted)
        if limits.max_connections < wanted.max_connections:
            if limits.max_connections < 1:
                fail("the open-file limit (ulimit -n) leaves no room for connections")
            fitted = limits.max_connections
            warn(f"the open-file limit (ulimit -n) holds {fitted} connections, not "
                 f"{max_connections}: --max-connections is {fitted}")  # fmt: skip
        where = f"{loaded.device}, torch threads {torch.get_num_threads()}"
        if isinstance(server.scheduler, EngineProcess):
            where = (f"{server.scheduler.device}, torch threads {server.scheduler.threads}, "
                     f"engine process {server.scheduler.pid}")  # fmt: skip
        err.print(
            f"serving {name} ({loaded.model.num_params() / 1e6:.1f}M parameters, {where}) "
            f"on http://{host}:{port}/v1 · max batch {max_batch} · pid {os.getpid()}",
            highlight=False,
            markup=False,
        )
        config = uvicorn_config(
            fastapi_app, host=host, port=port, limits=limits, drain_seconds=drain_seconds
        )
        # uvicorn handles SIGTERM (stop accepting, drain) and then re-raises it to the handler
        # that was there before: make that one a no-op, so a drained server exits 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        uvicorn.Server(config).run()
        server.scheduler.stop(cancel=True, timeout=5)
        err.print("stopped", highlight=False, markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
