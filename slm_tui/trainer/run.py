"""A training run's parts and state: built fresh or restored from `latest/`, and saved.

- `Run`: what is fixed once training starts (plan, model, the step function, optimizer,
  sampler, metrics log, reporter, batch geometry, the GPU's peak FLOP/s for MFU).
- `RunState`: what changes step by step (step, tokens seen, best validation loss, the loss
  summed on the device and not yet read, the latest validation figures, clocks).
- `start_run` builds both, restoring from `trainer_state.pt` on resume: the optimizer(s),
  the step, tokens seen, the sampler cursor, the best val loss, the seconds trained, the
  torch CPU/CUDA RNG states (dropout draws from them) and the run's dtype/compile/attention
  choice (decided once, when the run started), so a resumed run replays the uninterrupted
  one exactly. `save` writes exactly that state with each checkpoint; on
  resume every field is checked (`check_saved`) before anything is restored from it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from slm_tui.checkpoint.format import CONFIG_FILE
from slm_tui.checkpoint.io import load_checkpoint, load_trainer_state, save_checkpoint
from slm_tui.config import Config, TrainConfig
from slm_tui.errors import CheckpointError
from slm_tui.fileio import atomic_write_bytes
from slm_tui.model import GPT
from slm_tui.shards import BatchSampler
from slm_tui.trainer import distributed as D
from slm_tui.trainer.optim import Optimizers, build_optimizers
from slm_tui.trainer.pace import Pace
from slm_tui.trainer.prepare import RunPlan
from slm_tui.trainer.report import (
    EvalRecord,
    EventRecord,
    MetricsLog,
    Reporter,
    RunStart,
    TensorBoardLog,
)
from slm_tui.trainer.speed import SpeedChoice, recorded_choice
from slm_tui.trainer.speed import choose as choose_speed
from slm_tui.trainer.speed import resumed as resumed_speed
from slm_tui.trainer.step import TrainStep, configure_runtime, wrap_for_training

# Dense bf16 peak FLOP/s by GPU name fragment, for MFU (datasheet figures, no sparsity).
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
    "4090": 165e12,
    "3090": 71e12,
    "T4": 65e12,
    "V100": 125e12,
}


def peak_flops(device: torch.device) -> float | None:
    """The GPU's dense bf16 FLOP/s from `PEAK_BF16`; None off CUDA or for an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


@dataclass
class Run:
    """The parts of a run, fixed once it starts."""

    plan: RunPlan
    dist: D.DistInfo
    model: GPT  # the raw model: checkpoints, validation and samples use it
    train_step: TrainStep  # one optimizer step, through the compiled / DDP wrapper
    speed: SpeedChoice  # dtype, compile and attention kernel, and why
    opt: Optimizers
    sampler: BatchSampler
    log: MetricsLog  # rank 0's metrics.jsonl (/dev/null on the other ranks)
    rep: Reporter  # a no-op Reporter on ranks other than 0
    micro: int  # rows per micro-step on each rank
    tokens_per_step: int  # global
    flops_per_token: float
    peak: float | None  # the GPU's bf16 FLOP/s, for MFU; None elsewhere

    @property
    def cfg(self) -> Config:
        return self.plan.config

    @property
    def tc(self) -> TrainConfig:
        return self.plan.config.train

    @property
    def out(self) -> Path:
        return self.plan.output


@dataclass
class RunState:
    """What changes as the run goes; `trainer_state.pt` holds what a resume needs."""

    loss_sum: Tensor  # training loss summed on the device since the last read
    loss_steps: int = 0  # steps summed into loss_sum
    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float = math.inf
    elapsed_before: float = 0.0  # seconds trained before this process (a resumed run)
    start_step: int = 0  # the step this process began at
    last_loss: float | None = None  # the latest loss read from the device
    val: EvalRecord | None = None  # the latest validation figures
    started: float = field(default_factory=time.perf_counter)  # this process's start
    log_time: float = field(default_factory=time.perf_counter)  # the last train record
    log_tokens: int = 0  # tokens_seen at the last train record
    pace: Pace = field(default_factory=Pace)  # the moving step rate behind eta_s


def _rng_state(device: torch.device) -> dict[str, Any]:
    """The generators dropout draws from: the CPU's, and the GPUs' on a CUDA run (a CPU run
    never touches CUDA, even with a GPU visible)."""
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def check_saved(saved: Any, where: Path) -> None:
    """The fields of a trainer_state.pt a resume reads, with their types (CheckpointError
    naming the first one that is wrong: the file may be damaged or not ours)."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: trainer_state.pt cannot be resumed from ({what})")

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for key in ("step", "tokens_seen"):
        if not whole(saved.get(key)):
            raise bad(f"{key} is not a whole number")
    for key in ("optimizer", "sampler", "rng"):
        if not isinstance(saved.get(key), dict):
            raise bad(f"{key} is missing")
    if not whole(saved["sampler"].get("cursor")):
        raise bad("sampler.cursor is not a whole number")
    cpu, own = saved["rng"].get("torch_cpu"), torch.get_rng_state()
    if not isinstance(cpu, Tensor) or cpu.dtype != own.dtype or cpu.shape != own.shape:
        raise bad("rng.torch_cpu is not a random generator state")
    for key in ("best_val_loss", "elapsed"):
        value = saved.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad(f"{key} is not a number")
    if "speed" in saved and recorded_choice(saved["speed"]) is None:
        raise bad("speed is not a recorded dtype and compile choice")


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["torch_cuda"])


def start_run(plan: RunPlan, dist: D.DistInfo, rep: Reporter, resume: bool) -> tuple[Run, RunState]:
    """Build the model, optimizer and sampler (restored from `latest/` when resuming), open
    metrics.jsonl, and announce the run."""
    cfg, tc, device = plan.config, plan.config.train, dist.device
    seq_len = cfg.model.context_length
    micro = tc.micro_batch_size(dist.world_size)
    configure_runtime(tc, device)

    latest = plan.resume_from if resume else None  # the checkpoint a resumed run continues
    assert latest is not None or not resume  # prepare_run found it (or refused to resume)
    saved: dict[str, Any] = {}
    if latest is not None:
        saved = load_trainer_state(latest)
        check_saved(saved, latest)  # so `saved` holds step, optimizer, sampler, rng
    # Decided once, before the random state is seeded or restored: a resumed run keeps the
    # dtype, compile and attention kernel it started with, whatever the machine would pick
    # now; the whole run's length decides compile. Rank 0 decides (a probe measures once)
    # and every rank computes alike.
    speed = None
    if dist.is_main and saved:
        speed = resumed_speed(saved.get("speed"), tc, device, cfg.model, micro, tc.max_steps)
    elif dist.is_main:
        speed = choose_speed(tc, device, cfg.model, micro, tc.max_steps)
    speed = D.from_rank0(speed, dist)

    torch.manual_seed(tc.seed)  # the initial weights (and rank 0's dropout) draw from here
    if latest is not None:
        model = load_checkpoint(latest, device=device).model.train()
    else:
        model = GPT(cfg.model).to(device)
    if dist.rank:
        torch.manual_seed(tc.seed + dist.rank)  # different dropout masks per rank
    opt = build_optimizers(model, tc, device)
    rows = micro * tc.grad_accum  # this rank's share of the global batch
    sampler = BatchSampler(
        plan.shards.train, rows, seq_len, tc.seed, rank=dist.rank, world_size=dist.world_size
    )
    state = RunState(loss_sum=torch.zeros((), device=device))
    metrics = plan.output / "metrics.jsonl"
    log = MetricsLog(metrics if dist.is_main else Path("/dev/null"))
    if latest is not None:
        try:
            opt.load_state_dict(saved["optimizer"])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(
                f"{latest}: the optimizer state in trainer_state.pt does not fit "
                f"this model and optimizer ({type(exc).__name__}); it cannot be resumed"
            ) from None
        sampler.load_state_dict(saved["sampler"])
        state.step, state.tokens_seen = int(saved["step"]), int(saved["tokens_seen"])
        best = saved.get("best_val_loss")
        state.best_val_loss = math.inf if best is None else float(best)
        state.elapsed_before = float(saved.get("elapsed", 0.0))
        if dist.is_main:  # metrics continue from the save, not from any steps logged after it
            log = MetricsLog(metrics, MetricsLog.read(latest / "metrics.jsonl"))
        if dist.rank == 0:
            _set_rng_state(saved["rng"], device)
    if dist.is_main:
        log.rewrite()
        # The resolved config, readable before the first checkpoint (and after a resume,
        # the one this process runs with); each checkpoint keeps its own copy too.
        atomic_write_bytes(plan.output / CONFIG_FILE, cfg.to_yaml().encode("utf-8"))
        if tc.tensorboard:
            log.mirror = TensorBoardLog(plan.output / "tensorboard", state.step if saved else None)

    train_model = wrap_for_training(model, speed, device, dist.distributed)
    run = Run(
        plan=plan,
        dist=dist,
        model=model,
        train_step=TrainStep(
            model, train_model, opt, tc, micro, device, speed.dtype, dist.distributed
        ),
        speed=speed,
        opt=opt,
        sampler=sampler,
        log=log,
        rep=rep,
        micro=micro,
        tokens_per_step=tc.batch_size * seq_len,
        flops_per_token=model.flops_per_token(seq_len),
        peak=peak_flops(device),
    )
    state.start_step = state.step
    if dist.is_main:
        rep.on_start(
            RunStart(
                step=state.step,
                max_steps=tc.max_steps,
                params=model.num_params(),
                device=str(device),
                world_size=dist.world_size,
                micro_batch=micro,
                tokens_per_step=run.tokens_per_step,
                output=str(plan.output),
                resumed=bool(saved),
                tokenizer=plan.tokenizer.kind,
                vocab_size=plan.tokenizer.vocab_size,
                train_tokens=plan.shards.train.num_tokens,
                dtype=speed.dtype,
                speed=speed.describe(),
                config=cfg,
                tokens_seen=state.tokens_seen,
                elapsed_s=state.elapsed_before,
                val_tokens=plan.shards.val.num_tokens,
                held_out=str(plan.shards.train.meta.get("split_rule", "")),
            )
        )
        event = "resume" if saved else "start"
        log.append(
            EventRecord(
                event=event,
                step=state.step,
                tokens=state.tokens_seen,
                max_steps=tc.max_steps,
                tokens_per_step=run.tokens_per_step,
                dtype=speed.dtype,
                compile=speed.compile,
                math_attention=speed.math_attention,
            )
        )
    state.started = state.log_time = time.perf_counter()
    state.log_tokens = state.tokens_seen
    return run, state


def save(run: Run, state: RunState, kind: str, *, resumable: bool = True) -> None:
    """Write `<output>/<kind>/` (rank 0): weights, config, tokenizer, meta, trainer state
    (unless not `resumable`: the evals/ copies), and copies of metrics.jsonl and loss.png."""
    if not run.dist.is_main:
        return
    val = state.val
    meta = {
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "val_loss": val.val_loss if val else None,
        "val_bpb": val.val_bpb if val else None,
        "max_steps": run.tc.max_steps,
        "train_loss": state.last_loss,
        "world_size": run.dist.world_size,
        "speed": run.speed.as_record(run.dist.device),  # what `slm-train eval` computes in
    }
    trainer_state = {
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "optimizer": run.opt.state_dict(),
        "sampler": run.sampler.state_dict(),
        "rng": _rng_state(run.dist.device),
        "best_val_loss": state.best_val_loss if math.isfinite(state.best_val_loss) else None,
        "elapsed": state.elapsed_before + time.perf_counter() - state.started,
        "speed": run.speed.as_record(run.dist.device),  # a resume keeps it
    }
    out = run.out
    path = save_checkpoint(
        out / kind,
        run.model,
        run.cfg,
        run.plan.tokenizer,
        meta,
        trainer_state=trainer_state if resumable else None,
        extra_files={"metrics.jsonl": out / "metrics.jsonl", "loss.png": out / "loss.png"},
    )
    run.rep.on_save(path, kind)
