"""`slm-serve`: the OpenAI-compatible HTTP server (FastAPI on uvicorn) over one checkpoint.

Thin: check the flags, load the checkpoint (default: the bundled demo), build the app
(`slm_tui.serve.app`), run uvicorn. SIGTERM or Ctrl-C stops accepting connections and lets
the requests in flight finish for up to `--drain-seconds`, then exits 0. Binding to
anything but loopback without an API key prints a warning. The server stack is the
`serve` extra (`pip install 'slm-tui[serve]'`); without it this command says so in one line.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from slm_tui.cli.common import Command, cli_errors, err, fail, warn

app = typer.Typer(
    name="slm-serve",
    help="Serve a checkpoint over the OpenAI HTTP API (completions, chat, streaming).",
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    threads: Annotated[
        int,
        typer.Option(
            help="torch threads for the model on CPU (0: one per physical core but one, which "
            "is left to HTTP)."
        ),
    ] = 0,
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
        try:
            import uvicorn

            from slm_tui.serve.app import Server, create_app
        except ImportError as exc:
            fail(f"slm-serve needs the server extra ({exc.name} is missing): "
                 "pip install 'slm-tui[serve]'")  # fmt: skip
        from slm_tui.checkpoints import bundled_demo_path, load_checkpoint

        path = checkpoint if checkpoint is not None else bundled_demo_path()
        if path is None:
            fail("no --checkpoint given and no bundled demo model found")
        if threads < 0:
            fail(f"--threads must be 0 (automatic) or more, got {threads}")
        loaded = load_checkpoint(path, device)
        import torch

        if loaded.device.type == "cpu":
            import psutil

            # The engine's OpenMP threads must not fight the event loop for the cores: a
            # contended thread spin-waits (a 2-thread engine beside a busy HTTP thread ran
            # ~30x slower here).
            cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
            torch.set_num_threads(threads or max(1, cores - 1))
        name = model_name or loaded.info.name
        server = Server(
            loaded,
            model_name=name,
            max_batch=max_batch,
            max_queue=max_queue,
            max_tokens_cap=max_tokens_cap,
            api_key=api_key,
        )
        fastapi_app = create_app(server, cors=list(cors or []))
        if not _loopback(host) and api_key is None:
            warn(f"serving on {host} without an API key: anyone who can reach it may use it "
                 "(set --api-key or SLM_API_KEY)")  # fmt: skip
        err.print(
            f"serving {name} ({loaded.model.num_params() / 1e6:.1f}M parameters, "
            f"{loaded.device}, torch threads {torch.get_num_threads()}) on http://{host}:{port}/v1 · max batch {max_batch} · "
            f"pid {os.getpid()}",
            highlight=False,
            markup=False,
        )
        config = uvicorn.Config(
            fastapi_app,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=drain_seconds,
            lifespan="on",
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
