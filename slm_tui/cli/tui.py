"""`slm-tui`: open the story REPL on a checkpoint (default: the bundled demo, else the newest);
`--watch RUN_DIR` opens the Train screen on a run folder.

Flags are checked before the screen takes over, so a bad path is a one-line error (exit 2)
on a normal terminal instead of a message lost in an alternate screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from slm_tui.cli.common import Command, cli_errors, fail

app = typer.Typer(
    name="slm-tui",
    help="Write stories with your own model, one token at a time (a Textual app).",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command(cls=Command)
def tui(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint (or run) directory to open; default: the bundled demo, else the newest."
        ),
    ] = None,
    checkpoints_dir: Annotated[
        Path, typer.Option(help="Folder listed in the checkpoint picker (F2); rescanned every 2 s.")
    ] = Path("checkpoints"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    server: Annotated[
        str | None,
        typer.Option(
            help="Write stories on an OpenAI-compatible server (slm-serve, llama.cpp, vLLM, ...) "
            "instead: http://host:port; the picker lists its models.",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SLM_API_KEY",
            help="The server's API key (also $SLM_API_KEY).",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        Path | None,
        typer.Option(
            help="Open the Train screen on this run folder: live while it trains (here or "
            "from another terminal), or its whole history when finished; Ctrl+T later.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Open the app. F1 lists the keys; Ctrl+Q quits."""
    with cli_errors():
        if server is not None:
            from slm_tui.generation.remote import Remote

            if checkpoint is not None:
                fail("give --checkpoint or --server, not both")
            Remote(server, api_key)  # a malformed URL or key is refused before the screen
        if checkpoint is not None and not checkpoint.exists():
            fail(f"{checkpoint}: no such checkpoint directory")
        if checkpoints_dir.exists() and not checkpoints_dir.is_dir():
            fail(f"{checkpoints_dir}: not a directory")
        if watch is not None and watch.exists() and not watch.is_dir():
            fail(f"{watch}: not a run folder")  # one that does not exist yet is waited for
        from slm_tui.tui.app import SlmApp  # imported late: --help stays instant

        SlmApp(
            checkpoint=checkpoint,
            checkpoints_dir=checkpoints_dir,
            device=device,
            server=server,
            api_key=api_key,
            watch=watch,
        ).run()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
