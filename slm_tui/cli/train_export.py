"""`slm-train export`: a slim copy of a checkpoint for sharing or bundling.

Keeps what generation needs (weights, config, tokenizer, meta, metrics, loss plot), drops
`trainer_state.pt` (optimizer moments: twice the weights), and can store the weights in
bfloat16; loading upcasts them to float32 on CPU. This is how the bundled demo model is made.
Torch and the checkpoint code are imported when the command runs, so `--help` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from slm_tui.checkpoint_files import is_checkpoint, read_checkpoint_meta
from slm_tui.cli.common import cli_errors, err, out
from slm_tui.errors import CheckpointError

DTYPES = ("float32", "bfloat16", "float16")  # names of torch dtypes


def export(
    checkpoint: Annotated[
        str, typer.Option(help="Checkpoint folder, or a run folder (its best/, else latest/).")
    ],
    output: Annotated[str, typer.Option(help="Folder to write the slim checkpoint to.")],
    dtype: Annotated[
        str, typer.Option(help="Weights dtype: float32, bfloat16 or float16.")
    ] = "bfloat16",
    force: Annotated[bool, typer.Option(help="Replace a checkpoint already in --output.")] = False,
) -> None:
    """Copy a checkpoint without its trainer state, optionally with bf16 weights."""
    with cli_errors():
        import torch

        from slm_tui.checkpoints import load_checkpoint, save_checkpoint

        if dtype not in DTYPES:
            raise CheckpointError(f"--dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        dest = Path(output)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            if not force:
                raise CheckpointError(f"{dest} already exists; use --force to replace it")
            if dest.is_dir() and not is_checkpoint(dest):
                raise CheckpointError(
                    f"{dest} holds something that is not a checkpoint; not replacing it"
                )
        loaded = load_checkpoint(checkpoint, device="cpu")
        meta = read_checkpoint_meta(loaded.path)
        meta = {k: v for k, v in meta.items() if k not in ("format", "version")}
        extra = {
            name: loaded.path / name
            for name in ("metrics.jsonl", "loss.png")
            if (loaded.path / name).is_file()
        }
        save_checkpoint(
            dest,
            loaded.model,
            loaded.config,
            loaded.tokenizer,
            meta,
            extra_files=extra,
            weights_dtype=getattr(torch, dtype),
        )
        size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
        err.print(f"exported {loaded.path} -> {dest} ({dtype} weights, {size / 1e6:.1f} MB)")
        out.print(str(dest.resolve()), highlight=False)
