"""The machine: which torch device to run on (the one resolver the trainer, the TUI and the
CLIs share), what the CPU is, and slm-tui's cache folder.

`auto` picks CUDA (this process's GPU under torchrun) > Apple MPS > CPU; any other value
forces that device and is checked, so a typo or a GPU that is not there is a one-line
`ConfigError` naming the flag, never a torch assertion deep inside a load.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch
from platformdirs import user_cache_dir

from slm_tui.errors import ConfigError

CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(
    preference: str | torch.device = "auto", *, local_rank: int = 0, flag: str = "--device"
) -> torch.device:
    """The device `preference` names; `auto` is CUDA > MPS > CPU. `flag` names the option
    in error messages (`--device`, `train.device`)."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.isdigit():
        pref = f"cuda:{pref}"
    try:
        device = torch.device(pref)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag} {preference!r} is not a device; use {CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{flag} is {preference} but no CUDA GPU is available; use auto or cpu"
            )
        count = torch.cuda.device_count()
        if device.index is None:
            return torch.device("cuda", local_rank % count)
        if device.index >= count:
            raise ConfigError(f"{flag} {preference} does not exist ({count} GPUs)")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ConfigError(f"{flag} is mps but MPS is not available; use auto or cpu")
        return device
    if device.type != "cpu":
        raise ConfigError(f"{flag} {preference!r} is not supported; use {CHOICES}")
    return device


def cache_dir() -> Path:
    """slm-tui's user cache folder (`SLM_TUI_CACHE_DIR` overrides)."""
    env = os.environ.get("SLM_TUI_CACHE_DIR")
    return Path(env) if env else Path(user_cache_dir("slm-tui"))


def cpu_info() -> tuple[str, frozenset[str] | None]:
    """(CPU model name, its feature flags) from /proc/cpuinfo; flags None where unreadable."""
    name, flags = platform.processor() or platform.machine(), None
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and name in ("", platform.machine()):
                name = value.strip()
            elif key in ("flags", "Features") and flags is None:
                flags = frozenset(value.split())
    return name, flags
