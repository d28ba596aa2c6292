"""What every exporter and importer shares: the error type, architecture mapping, outputs.

- `InteropError` (an `SlmError`: the CLI prints it on one line and exits 2).
- `architecture(cfg)`: which outside architecture a `ModelConfig` is exactly
  (`llama` for the default blocks, `gpt2` for the GPT-2 switches), or a refusal naming the
  switches that neither represents.
- `check_destination` / `new_temp_dir` / `finish_dir`: outputs are built in a hidden
  temporary sibling and renamed into place (`slm_tui.fileio`), so a failed export leaves
  nothing half-written, and an existing path is only replaced with `force`; `check_apart`
  refuses an output that is, lies inside or holds what is being read (`--force` included).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slm_tui.config import ModelConfig
from slm_tui.errors import SlmError
from slm_tui.fileio import fsync_tree, replace_dir, temp_dir


class InteropError(SlmError):
    """An export or import that cannot be done exactly, or bad input to one."""


LLAMA_SWITCHES = {"positions": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
GPT2_SWITCHES = {"positions": "learned", "norm": "layernorm", "mlp": "gelu"}
GPT2_MLPS = ("gelu", "gelu_tanh")  # GPT-2 and GPT-Neo: "gelu" and "gelu_new"
HF_CLASSES = {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel",
              "gpt_neo": "GPTNeoForCausalLM"}  # fmt: skip


def architecture(cfg: ModelConfig) -> str:
    """`llama` (rotary, RMSNorm, SwiGLU), `gpt2` (learned positions, LayerNorm, GELU) or
    `gpt_neo` (GPT-2's blocks with unscaled attention scores and optional local layers)."""
    have = {k: getattr(cfg, k) for k in LLAMA_SWITCHES}
    local = any(cfg.attention_windows)
    if have == LLAMA_SWITCHES and cfg.scale_attention and not local:
        return "llama"
    if have["positions"] == "learned" and have["norm"] == "layernorm" and have["mlp"] in GPT2_MLPS:
        if not cfg.scale_attention:
            if len({w for w in cfg.attention_windows if w}) > 1:
                raise InteropError(
                    f"GPT-Neo has one window size for its local layers; this model has "
                    f"{sorted({w for w in cfg.attention_windows if w})}"
                )
            return "gpt_neo"
        if not local:
            return "gpt2"
    switches = ", ".join(f"{k}={v}" for k, v in have.items())
    if not cfg.scale_attention:
        switches += ", scale_attention=false"
    if local:
        switches += f", attention_windows={cfg.attention_windows}"
    raise InteropError(
        f"a model with {switches} is neither a Llama (rope, rmsnorm, swiglu), a GPT-2 "
        "(learned, layernorm, gelu) nor a GPT-Neo (GPT-2's with scale_attention=false, local "
        "layers allowed); there is no outside architecture that holds it exactly"
    )


def _ident(path: Path) -> tuple[int, int] | None:
    """(device, inode) of `path`, symlinks followed; None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_apart(source: Path, dest: Path, what: str) -> None:
    """Refuse an output that is the source (`what`: "checkpoint", "model folder"), lies
    inside it, or holds it, symlinks and bind mounts seen through: writing it would replace
    or change what is being read. Checked before anything is written."""
    src, out = Path(os.path.realpath(source)), Path(os.path.realpath(dest))
    src_id, out_id = _ident(src), _ident(out)
    if out == src or (src_id is not None and out_id == src_id):
        raise InteropError(f"--output {dest} is the {what} being read ({source}); choose another")
    if out.is_relative_to(src) or (src_id is not None and src_id in map(_ident, out.parents)):
        raise InteropError(
            f"--output {dest} is inside the {what} being read ({source}); choose a path outside it"
        )
    if src.is_relative_to(out) or (out_id is not None and out_id in map(_ident, src.parents)):
        raise InteropError(
            f"--output {dest} holds the {what} being read ({source}); choose another path"
        )


def check_destination(dest: Path, force: bool, *, is_ours: Callable[[Path], bool]) -> None:
    """Refuse an existing `dest` unless `force`, and never replace something that is not
    one of our outputs (`is_ours(dest)`), even with `force`."""
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_dir() and not any(dest.iterdir()):
        return
    if not force:
        raise InteropError(f"{dest} already exists; use --force to replace it")
    if not is_ours(dest):
        raise InteropError(f"{dest} holds something this export did not write; not replacing it")


def new_temp_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return temp_dir(dest.parent, prefix=f".tmp-{dest.name}-")


def finish_dir(tmp: Path, dest: Path) -> None:
    """fsync the finished folder `tmp` and swap it in for `dest`."""
    fsync_tree(tmp)
    replace_dir(tmp, dest)


def discard(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        Path(tmp).unlink(missing_ok=True)


def read_limited(path: Path, limit: int) -> bytes:
    """A file from a folder someone else made, refused (one line) when over `limit` bytes or
    not a regular file (a FIFO or a device would block or never end)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InteropError(f"{path} is not a regular file")
            if st.st_size > limit:
                raise InteropError(
                    f"{path} is {st.st_size:,} bytes; more than the {limit:,} this reads"
                )
            data = f.read(limit + 1)
    except OSError as exc:
        raise InteropError(f"{path} cannot be read ({exc.strerror})") from None
    if len(data) > limit:
        raise InteropError(f"{path} holds more than the {limit:,} bytes this reads")
    return data


def check_size(path: Path, limit: int) -> None:
    """Refuse (one line) a file another library is about to read whole when it is over
    `limit` bytes or not a regular file; a missing file passes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InteropError(f"{path} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InteropError(f"{path} is not a regular file")
    if st.st_size > limit:
        raise InteropError(f"{path} is {st.st_size:,} bytes; more than the {limit:,} this reads")


def read_json(path: Path, limit: int) -> Any:
    """A JSON file from a folder someone else made: bounded (`read_limited`), UTF-8, valid,
    and not nested too deeply for the parser; every failure one line naming the file."""
    data = read_limited(path, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InteropError(f"{path} is corrupt (not UTF-8 text)") from None
    except RecursionError:
        raise InteropError(f"{path} is corrupt (nested too deeply to be a model file)") from None
    except ValueError as exc:
        where = f" at line {exc.lineno}" if hasattr(exc, "lineno") else ""
        raise InteropError(f"{path} is corrupt (not valid JSON{where})") from None
