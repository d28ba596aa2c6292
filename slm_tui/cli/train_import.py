"""`slm-train import`: a Hugging Face Llama or GPT-2 model folder as a checkpoint of ours.

The result opens in `slm-tui` (next to our own models on the compare screen) and
`slm-generate` like any checkpoint. What cannot be held exactly (another architecture, RoPE
scaling, a byte-level BPE tokenizer, ...) is refused with one line naming it; see
`slm_tui.interop.hf_import`. Torch and transformers load when the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from slm_tui.cli.common import cli_errors, err, out, shown_path
from slm_tui.errors import SlmError

SOURCES = ("hf",)


def import_checkpoint(
    folder: Annotated[str, typer.Argument(help="The Hugging Face model folder (local files).")],
    output: Annotated[str, typer.Option(help="Checkpoint folder to write.")],
    source: Annotated[
        str, typer.Option("--from", help="What the folder is: hf (a transformers folder).")
    ] = "hf",
    force: Annotated[bool, typer.Option(help="Replace a checkpoint already at --output.")] = False,
) -> None:
    """Import a Hugging Face model folder (LlamaForCausalLM, GPT2LMHeadModel) as a checkpoint."""
    with cli_errors():
        if source not in SOURCES:
            raise SlmError(f"--from must be one of {', '.join(SOURCES)}; got {source!r}")
        from slm_tui.interop.hf_import import import_hf

        res = import_hf(folder, output, force=force)
        err.print(
            f"imported {shown_path(folder)} -> {shown_path(res.path)} ({res.architecture}, {res.params / 1e6:.2f}M "
            f"parameters, {res.weights_dtype} weights, tokenizer {res.tokenizer_kind})",
            highlight=False,
        )
        out.print(str(res.path), highlight=False)
