"""The training loop: one function, `train(config, output, ...)`, for one process or many.

Each optimizer step draws one global batch from the `BatchSampler` (this rank's slice),
splits it into `grad_accum` micro-batches (DDP syncs gradients only on the last), clips,
steps the optimizer(s) with the schedule's lr for that step. Notable:
- No host sync inside the step: the loss is summed on the device and read every
  `log_every` steps (and at evaluations/saves, where finiteness is checked).
- Exact resume: `trainer_state.pt` holds the optimizer(s), the step, tokens seen, the
  sampler cursor, the best val loss and the torch CPU/CUDA RNG states (dropout draws from
  them). Evaluation and sampling never consume the global RNG, so a resumed run replays the
  uninterrupted one step for step.
- SIGINT/SIGTERM set a flag; the current step finishes, `latest/` is saved, and the run
  returns status "interrupted" (a second Ctrl-C aborts at once). Under torchrun the ranks
  agree on stopping at the next log step.
- A non-finite loss raises TrainingError; `latest/` still holds the last good weights,
  because every save first checks the loss since the previous one.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slm_tui.config import Config
from slm_tui.errors import SlmError, TrainingError
from slm_tui.trainer import distributed as D
from slm_tui.trainer.evaluate import sample_continuations, val_metrics
from slm_tui.trainer.optim import build_optimizers
from slm_tui.trainer.prepare import plan_run
from slm_tui.trainer.report import MetricsLog, Reporter, plot_loss
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
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


@dataclass
class TrainResult:
    status: str  # "finished" | "interrupted"
    step: int
    tokens_seen: int
    output: Path
    val_loss: float | None = None
    val_bpb: float | None = None
    best_val_loss: float | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _StopFlag:
    """Set by SIGINT/SIGTERM; a second SIGINT raises KeyboardInterrupt (abort now)."""

    def __init__(self, event: threading.Event | None) -> None:
        self.event = event or threading.Event()
        self.old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if torch.cuda.is_available() and "torch_cuda" in state:
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["torch_cuda"])


def train(
    config: Config,
    output: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    tokenizer_path: str | None = None,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train (or resume) a model as `config` says, writing checkpoints under `output`."""
    from slm_tui.data import BatchSampler

    reporter = reporter or Reporter()
    cfg = config
    tc = cfg.train
    dist = D.setup(tc)
    main = dist.is_main
    rep = reporter if main else Reporter()
    try:
        # Rank 0 checks and builds (tokenizer, shards); then the others load what it built.
        plan = None
        error: SlmError | None = None
        if main:
            try:
                plan = plan_run(
                    cfg,
                    output,
                    resume=resume,
                    force=force,
                    tokenizer_path=tokenizer_path,
                    reporter=rep,
                )
                plan.commit(rep)
            except SlmError as exc:
                error = exc
        if dist.distributed:
            import torch.distributed as tdist

            box = [str(error) if error is not None else None]
            tdist.broadcast_object_list(box, src=0)
            if box[0] is not None and not main:
                raise TrainingError(box[0])
            if not main:
                plan = plan_run(
                    cfg,
                    output,
                    resume=resume,
                    force=force,
                    tokenizer_path=tokenizer_path,
                    build=False,
                )
        if error is not None:
            raise error
        assert plan is not None
        return _run(plan, dist, rep, resume, stop, BatchSampler)
    finally:
        D.teardown(dist)


def _run(plan, dist: D.DistInfo, rep: Reporter, resume: bool, stop, BatchSampler) -> TrainResult:
    from slm_tui.checkpoints import load_checkpoint, load_trainer_state, save_checkpoint
    from slm_tui.model import GPT

    cfg, tc, out, device, main = (
        plan.config,
        plan.config.train,
        plan.output,
        dist.device,
        dist.is_main,
    )
    seq_len = cfg.model.context_length
    micro = D.check_batch(tc, dist.world_size)
    configure_runtime(tc, device)

    torch.manual_seed(tc.seed)
    state: dict[str, Any] = {}
    if resume:
        model = load_checkpoint(plan.resume_from, device=device).model.train()
        state = load_trainer_state(plan.resume_from)
    else:
        model = GPT(cfg.model).to(device)
    if dist.rank:
        torch.manual_seed(tc.seed + dist.rank)  # different dropout masks per rank
    opt = build_optimizers(model, tc, device)
    sampler = BatchSampler(
        plan.shards.train,
        tc.batch_size,
        seq_len,
        tc.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    step, tokens_seen, best = 0, 0, math.inf
    elapsed_before = 0.0
    metrics_path = out / "metrics.jsonl"
    if state:
        opt.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        step, tokens_seen = int(state["step"]), int(state["tokens_seen"])
        best = state.get("best_val_loss")
        best = math.inf if best is None else float(best)
        elapsed_before = float(state.get("elapsed", 0.0))
        if main:  # metrics continue from the save, not from any steps logged after it
            records = MetricsLog.read(plan.resume_from / "metrics.jsonl")
            log = MetricsLog(metrics_path, records)
            log.rewrite()
        if dist.rank == 0:
            _set_rng_state(state["rng"])
    else:
        log = MetricsLog(metrics_path)
        if main:
            log.rewrite()
    if not main:
        log = MetricsLog(Path("/dev/null"))

    train_model = wrap_for_training(model, tc, device, dist.distributed)
    train_step = TrainStep(model, train_model, opt, tc, micro, device, dist.distributed)
    tokens_per_step = tc.batch_size * seq_len
    flops_tok = model.flops_per_token(seq_len)
    peak = peak_flops(device)
    start_step = step
    if main:
        rep.on_start(
            {
                "step": step,
                "max_steps": tc.max_steps,
                "params": model.num_params(),
                "device": str(device),
                "world_size": dist.world_size,
                "micro_batch": micro,
                "tokens_per_step": tokens_per_step,
                "output": str(out),
                "resumed": bool(state),
                "tokenizer": plan.tokenizer.kind,
                "vocab_size": plan.tokenizer.vocab_size,
                "train_tokens": plan.shards.train.num_tokens,
                "dtype": tc.dtype,
                "config": cfg,
            }
        )
        log.append(
            {
                "kind": "event",
                "event": "resume" if state else "start",
                "step": step,
                "tokens": tokens_seen,
            }
        )

    pending = torch.zeros((), device=device)  # loss summed since the last read
    pending_steps = 0
    last_loss: float | None = None
    val: dict[str, float] = {}
    t_log = time.perf_counter()
    t_start = t_log
    tokens_at_log = tokens_seen

    def read_loss() -> float | None:
        nonlocal pending, pending_steps, last_loss
        if pending_steps == 0:
            return last_loss
        value = float(D.all_mean(pending, dist).item()) / pending_steps
        pending = torch.zeros((), device=device)
        pending_steps = 0
        if not math.isfinite(value):
            kept = out / "latest"
            log.append({"kind": "event", "event": "diverged", "step": step, "loss": value})
            raise TrainingError(
                f"the loss became {value} by step {step}; stopped (last good checkpoint: "
                f"{kept if kept.exists() else 'none yet'}); lower train.lr or raise warmup"
            )
        last_loss = value
        return value

    def save(kind: str) -> None:
        if not main:
            return
        meta = {
            "step": step,
            "tokens_seen": tokens_seen,
            "val_loss": val.get("val_loss"),
            "val_bpb": val.get("val_bpb"),
            "max_steps": tc.max_steps,
            "train_loss": last_loss,
            "world_size": dist.world_size,
        }
        tstate = {
            "step": step,
            "tokens_seen": tokens_seen,
            "optimizer": opt.state_dict(),
            "sampler": sampler.state_dict(),
            "rng": _rng_state(),
            "best_val_loss": best if math.isfinite(best) else None,
            "elapsed": elapsed_before + time.perf_counter() - t_start,
        }
        extra = {"metrics.jsonl": metrics_path, "loss.png": out / "loss.png"}
        path = save_checkpoint(
            out / kind, model, cfg, plan.tokenizer, meta, trainer_state=tstate, extra_files=extra
        )
        rep.on_save(path, kind)

    def evaluate_now() -> None:
        nonlocal best, val
        read_loss()
        if not main:
            return
        val = val_metrics(model, plan.shards.val, seq_len, micro, tc.eval_batches, device, tc.dtype)
        rec = {"kind": "eval", "step": step, "tokens": tokens_seen, **val}
        log.append(rec)
        rep.on_eval(rec)
        samples = sample_continuations(
            model,
            plan.tokenizer,
            list(tc.sample_prompts),
            tc.sample_tokens,
            device,
            seed=tc.seed,
            dtype=tc.dtype,
        )
        if samples:
            log.append({"kind": "samples", "step": step, "tokens": tokens_seen, "samples": samples})
            rep.on_samples(step, samples)
        plot_loss(log.records, out / "loss.png", title=out.name)
        if val["val_loss"] < best:
            best = val["val_loss"]
            save("best")

    status = "finished"
    with _StopFlag(stop) as flag:
        model.train()
        while step < tc.max_steps:
            # ---- one optimizer step -------------------------------------------------------
            pending += train_step(sampler.next_batch(), step)
            lr = train_step.lr
            step += 1
            pending_steps += 1
            tokens_seen += tokens_per_step

            # ---- bookkeeping (host syncs only here) ---------------------------------------
            last = step == tc.max_steps
            if step % tc.log_every == 0 or last:
                loss_value = read_loss()
                now = time.perf_counter()
                tps = (tokens_seen - tokens_at_log) / max(now - t_log, 1e-9)
                t_log, tokens_at_log = now, tokens_seen
                rec = {
                    "kind": "train",
                    "step": step,
                    "tokens": tokens_seen,
                    "loss": loss_value,
                    "lr": lr,
                    "tokens_per_s": tps,
                    "elapsed_s": elapsed_before + now - t_start,
                }
                if peak:
                    rec["mfu"] = flops_tok * tps / (peak * dist.world_size)
                rate = (step - start_step) / max(now - t_start, 1e-9)
                rec["eta_s"] = (tc.max_steps - step) / rate if rate > 0 else None
                log.append(rec)
                rep.on_log(rec)
            paused = False
            if step % tc.eval_every == 0 or last:
                evaluate_now()
                paused = True
            if step % tc.save_every == 0 or last:
                read_loss()
                save("latest")
                paused = True
            if paused:  # tokens/s measures training, not evaluation or saving
                t_log = time.perf_counter()
            stop_now = flag.event.is_set()
            if dist.distributed:
                stop_now = step % tc.log_every == 0 and D.any_rank(stop_now, dist)
            if stop_now and not last:
                read_loss()
                status = "interrupted"
                if main:
                    log.append(
                        {
                            "kind": "event",
                            "event": "interrupted",
                            "step": step,
                            "tokens": tokens_seen,
                        }
                    )
                if step % tc.save_every:
                    save("latest")
                break
    if dist.distributed:
        import torch.distributed as tdist

        tdist.barrier()  # rank 0 may still be evaluating/saving; leave the group together
    if main and status == "finished":
        plot_loss(log.records, out / "loss.png", title=out.name)
        if start_step == step:
            rep.on_message(f"already at step {step} of {tc.max_steps}; raise train.max_steps")
    return TrainResult(
        status=status,
        step=step,
        tokens_seen=tokens_seen,
        output=out,
        val_loss=val.get("val_loss"),
        val_bpb=val.get("val_bpb"),
        best_val_loss=best if math.isfinite(best) else None,
        seconds=time.perf_counter() - t_start,
    )
