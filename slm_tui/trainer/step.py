"""One optimizer step, and the process settings it runs best under (shared by the loop and
`bench/train_cpu.py`, so the benchmark measures exactly what training runs).

- `configure_runtime`: TF32 matmuls on CUDA; on CPU, intra-op threads = physical cores and
  glibc malloc told to keep freed memory (see `tune_cpu_allocator`).
- `LossOnly` wraps the model so the compiled/DDP graph returns only the loss: the (B, T, V)
  logits are then an intermediate that inductor can fuse into the cross-entropy instead of
  an output it must keep.
- `TrainStep`: lr from the schedule, pinned non-blocking host-to-device copy, `grad_accum`
  micro-batches (DDP all-reduces only on the last), clipping, optimizer step. The loss stays
  on the device; the caller decides when to read it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.parallel import DistributedDataParallel as DDP

from slm_tui.config import TrainConfig
from slm_tui.trainer.evaluation import autocast_for
from slm_tui.trainer.optim import Optimizers
from slm_tui.trainer.speed import SpeedChoice, set_matmul_precision, use_inductor_cache

_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Stop glibc malloc from returning every large tensor's pages to the kernel.

    By default glibc serves big blocks with mmap and gives them back with munmap on free, so
    each step's activations are fresh pages: a page fault and a kernel zero-fill per 4 KiB,
    which showed up as system time in the profile. Raising the mmap threshold to its maximum
    (32 MiB) and the trim threshold/top pad keeps freed blocks in the heap for reuse. No-op
    off glibc. Returns True when applied."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, 32 << 20) == 1
    ok &= mallopt(m_trim_threshold, 1 << 30) == 1
    ok &= mallopt(m_top_pad, 64 << 20) == 1
    _ALLOCATOR_TUNED = bool(ok)
    return _ALLOCATOR_TUNED


def configure_runtime(tc: TrainConfig, device: torch.device) -> None:
    set_matmul_precision(device)  # evaluation sets the same, so both compute alike
    if device.type == "cpu":
        tune_cpu_allocator()


class LossOnly(nn.Module):
    """`model(x, y)` reduced to the mean loss (what the training graph needs), with SDPA's
    math kernel when `math_attention` (see `speed.py`)."""

    def __init__(self, model: nn.Module, math_attention: bool = False) -> None:
        super().__init__()
        self.model = model
        self.math_attention = math_attention

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.math_attention:
            with sdpa_kernel(SDPBackend.MATH):
                return self.model(x, y)[1]
        return self.model(x, y)[1]


def wrap_for_training(model: nn.Module, speed: SpeedChoice, device: torch.device,
                      distributed: bool) -> nn.Module:  # fmt: skip
    """LossOnly(model), compiled as `speed` says, DDP-wrapped under torchrun."""
    wrapped: nn.Module = LossOnly(model, speed.math_attention)
    if speed.compile:
        use_inductor_cache()
        wrapped = cast(nn.Module, torch.compile(wrapped))  # a module in, a module out
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = DDP(wrapped, device_ids=ids)
    return wrapped


class TrainStep:
    """Callable: (rows (b, T+1) int64 numpy, step index) -> mean loss (device tensor)."""

    def __init__(self, model: nn.Module, train_model: nn.Module, opt: Optimizers,
                 tc: TrainConfig, micro: int, device: torch.device, dtype: str,
                 distributed: bool = False) -> None:  # fmt: skip
        self.model, self.train_model, self.opt, self.tc = model, train_model, opt, tc
        self.dtype = dtype  # the autocast dtype speed.choose picked
        self.micro, self.device, self.distributed = micro, device, distributed
        self.pin = device.type == "cuda"
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.lr = 0.0

    def __call__(self, rows_np: np.ndarray, step: int) -> Tensor:
        tc = self.tc
        self.lr = self.opt.set_step(step, tc)
        rows = torch.from_numpy(rows_np)  # (micro * grad_accum, T+1) int64
        if self.pin:
            rows = rows.pin_memory()
        rows = rows.to(self.device, non_blocking=self.pin)
        total = torch.zeros((), device=self.device)
        for i in range(tc.grad_accum):
            chunk = rows[i * self.micro : (i + 1) * self.micro]
            x, y = chunk[:, :-1], chunk[:, 1:].contiguous()  # (b, T)
            last = i == tc.grad_accum - 1
            sync: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
            if self.distributed and not last:
                assert isinstance(self.train_model, DDP)  # wrap_for_training's, distributed
                sync = self.train_model.no_sync()  # all-reduce once, on the last micro-batch
            with sync, autocast_for(self.device, self.dtype):
                loss = self.train_model(x, y)
            (loss / tc.grad_accum).backward()
            total += loss.detach() / tc.grad_accum
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip, foreach=True)
        self.opt.step()
        self.opt.zero_grad()
        return total
