"""Distributed data parallel: one code path for one process or many.

`torchrun --nproc_per_node N slm-train model ...` sets RANK / LOCAL_RANK / WORLD_SIZE; without
them this is a world of one and no process group is created. NCCL on CUDA, gloo elsewhere.
Only rank 0 writes files or reports. The global batch is split evenly across ranks (the
sampler hands rank r its slice of the same global draw), so N processes compute the same
gradient as one process with the same `train.batch_size`.

Every `torch.distributed` call of the trainer is here (setup, teardown, the mean of the
loss, agreeing on a stop, passing rank 0's refusal on, the final barrier); each is a no-op
in a world of one. The device comes from `slm_tui.devices.resolve_device`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psutil
import torch
import torch.distributed as dist

from slm_tui.config import TrainConfig
from slm_tui.devices import resolve_device


@dataclass
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int, int]:
    """(rank, local_rank, world_size, local_world_size) from torchrun's environment."""

    def _int(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    world = _int("WORLD_SIZE", 1)
    return (
        _int("RANK", 0),
        _int("LOCAL_RANK", 0),
        world,
        _int("LOCAL_WORLD_SIZE", world),
    )


def cpu_threads(requested: int, local_world_size: int = 1) -> int:
    """Intra-op threads: `requested`, or the physical cores shared among local ranks.

    Hyper-threads share one core's vector units; matmul-bound training gains nothing from
    them and loses to contention, so the default counts physical cores only.
    """
    if requested > 0:
        return requested
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def setup(cfg: TrainConfig) -> DistInfo:
    """Pick the device, set threads, join the process group when launched by torchrun."""
    rank, local_rank, world, local_world = env_world()
    cfg.micro_batch_size(world)  # a batch that does not divide fails before any group forms
    device = resolve_device(cfg.device, local_rank=local_rank, flag="train.device")
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg.threads, local_world))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    return DistInfo(rank, local_rank, world, local_world, device)


def teardown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (identity for one process)."""
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when `flag` is true on any rank (used to agree on stopping together)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def share_error(message: str | None, info: DistInfo) -> str | None:
    """Rank 0's error message (or None) on every rank, so all ranks stop together when the
    run is refused."""
    if not info.distributed:
        return message
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_rank0(value: Any, info: DistInfo) -> Any:
    """Rank 0's `value` on every rank (a decision only rank 0 makes, such as a measured one)."""
    if not info.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait for every rank (rank 0 may still be evaluating or saving)."""
    if info.distributed:
        dist.barrier()
