"""`export_checkpoint`: one entry point for the three export formats, all written atomically.

- `slm`: the slim copy of a checkpoint (no trainer state; bf16 weights by default), what
  `slm-train export` always made and how the bundled demo is built.
- `hf`: a Hugging Face transformers folder (hf_export.py).
- `gguf`: one file for llama.cpp and ollama (gguf_export.py).

Every refusal (a format that cannot hold the model, a dtype the format has not, an output
that exists without `force`, or holds something else, an output that is the checkpoint,
lies inside it or holds it, `force` or not) happens before anything is written;
outputs are built in a hidden temporary sibling and renamed into place, so a failure leaves
nothing half-written and whatever was at the output before is kept.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from slm_tui.checkpoint.format import is_checkpoint, read_checkpoint_meta, resolve_checkpoint
from slm_tui.errors import CheckpointError
from slm_tui.interop.common import (
    InteropError,
    check_apart,
    check_destination,
    discard,
    finish_dir,
    new_temp_dir,
)

FORMATS = ("slm", "hf", "gguf")
DTYPES = {
    "slm": ("bfloat16", "float32", "float16"),
    "hf": ("float32", "float16", "bfloat16"),
    "gguf": ("float32", "float16", "bfloat16", "q8_0"),
}  # the first of each is the default
SLIM_EXTRAS = ("metrics.jsonl", "loss.png")


@dataclass
class ExportResult:
    path: Path
    format: str
    dtype: str
    source: Path
    size_bytes: int


def _is_hf_folder(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / "config.json").is_file()
        and ((path / "model.safetensors").is_file() or (path / "tokenizer.json").is_file())
    )


def _is_gguf_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def check_request(fmt: str, dtype: str | None) -> str:
    """The dtype to use; InteropError for an unknown format or a dtype the format has not."""
    if fmt not in FORMATS:
        raise InteropError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    dtype = dtype or DTYPES[fmt][0]
    if dtype not in DTYPES[fmt]:
        raise InteropError(
            f"--dtype must be one of {', '.join(DTYPES[fmt])} for --format {fmt}; got {dtype!r}"
        )
    return dtype


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    fmt: str = "slm",
    dtype: str | None = None,
    force: bool = False,
) -> ExportResult:
    """Export `checkpoint` (a checkpoint or run folder) to `output` in format `fmt`."""
    dtype = check_request(fmt, dtype)
    dest = Path(output).expanduser()
    given = Path(checkpoint).expanduser()
    check_apart(given, dest, "checkpoint")  # a run folder: its latest/ and best/ too
    with contextlib.suppress(CheckpointError):  # a missing one is refused when it loads
        check_apart(resolve_checkpoint(given), dest, "checkpoint")
    if fmt == "gguf":
        if dest.is_dir():
            raise InteropError(f"{dest} is a folder; GGUF is one file: give a path like model.gguf")
        check_destination(dest, force, is_ours=_is_gguf_file)
    else:
        check_destination(dest, force, is_ours=is_checkpoint if fmt == "slm" else _is_hf_folder)

    import torch  # the heavy part starts here: --help and refusals above stay quick

    from slm_tui.checkpoint.io import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(checkpoint, device="cpu")
    if fmt == "slm":
        meta = read_checkpoint_meta(loaded.path)
        meta = {k: v for k, v in meta.items() if k not in ("format", "version")}
        extra = {n: loaded.path / n for n in SLIM_EXTRAS if (loaded.path / n).is_file()}
        save_checkpoint(dest, loaded.model, loaded.config, loaded.tokenizer, meta,
                        extra_files=extra, weights_dtype=getattr(torch, dtype))  # fmt: skip
    elif fmt == "hf":
        from slm_tui.interop.hf_export import hf_files, write_hf

        hf_files(loaded, dtype)  # every refusal before a folder is made
        tmp = new_temp_dir(dest)
        try:
            write_hf(loaded, tmp, dtype)
            finish_dir(tmp, dest)
        except BaseException:
            discard(tmp)
            raise
    else:
        from slm_tui.interop.gguf_export import write_gguf_file

        write_gguf_file(loaded, dest, dtype)
    return ExportResult(dest.resolve(), fmt, dtype, loaded.path, _size(dest))
