"""What every exporter and importer shares: the error type, architecture mapping, outputs.

- `InteropError` (an `SlmError`: the CLI prints it on one line and exits 2).
- `architecture(cfg)`: which outside architecture a `ModelConfig` is exactly
  (`llama` for the default blocks, `gpt2` for the GPT-2 switches), or a refusal naming the
  switches that neither represents.
- `prepare_output` / `finish_dir` / `finish_file`: outputs are built in a hidden temporary
  sibling and renamed into place (`slm_tui.fileio`), so a failed export leaves nothing
  half-written, and an existing path is only replaced with `force`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

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


def check_destination(dest: Path, force: bool, *, is_ours) -> None:
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
    """A file from a folder someone else made, refused (one line) when over `limit` bytes."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise InteropError(f"{path} is {size:,} bytes; more than the {limit:,} this reads")
        return path.read_bytes()
    except OSError as exc:
        raise InteropError(f"{path} cannot be read ({exc.strerror})") from None
