"""`slm-train export`: a checkpoint as a slim copy (`slm`), a Hugging Face folder (`hf`) or a
GGUF file for llama.cpp and ollama (`gguf`).

`slm` (the default) keeps what generation needs (weights, config, tokenizer, meta, metrics,
loss plot), drops `trainer_state.pt` and stores bf16 weights by default: how the bundled
demo is made. `hf` and `gguf` are written by `slm_tui.interop` (see its modules for what
each keeps). Everything heavy (torch, gguf) is imported when the command runs, so `--help`
stays quick; every refusal is one line and exit code 2, and nothing is half-written.
"""

from __future__ import annotations

from typing import Annotated

import typer

from slm_tui.cli.common import cli_errors, err, out, shown_path


def export(
    checkpoint: Annotated[
        str, typer.Option(help="Checkpoint folder, or a run folder (its best/, else latest/).")
    ],
    output: Annotated[
        str, typer.Option(help="Where to write: a folder (slm, hf) or a .gguf file (gguf).")
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="slm: slim checkpoint of ours; hf: Hugging Face transformers folder "
            "(Llama or GPT-2); gguf: one file for llama.cpp / ollama (Llama blocks only).",
        ),
    ] = "slm",
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weights type: float32, float16, bfloat16, or q8_0 (gguf only). "
            "Default: bfloat16 for slm, float32 for hf and gguf.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an earlier export at --output.")] = False,
) -> None:
    """Export a checkpoint: slim copy, Hugging Face folder, or GGUF file."""
    with cli_errors():
        from slm_tui.interop.export import export_checkpoint

        res = export_checkpoint(checkpoint, output, fmt=format, dtype=dtype, force=force)
        err.print(
            f"exported {shown_path(res.source)} -> {shown_path(res.path)} ({res.format}, {res.dtype} weights, "
            f"{res.size_bytes / 1e6:.1f} MB)",
            highlight=False,
        )
        out.print(str(res.path), highlight=False)
