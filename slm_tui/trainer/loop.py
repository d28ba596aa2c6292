"""The training loop: `train(config, output, ...)`, for one process or many.

`train` plans the run (rank 0 checks and builds; see `prepare`), `run.start_run` builds its
parts and state (fresh or restored), and `train_loop` reads like nanoGPT's: one optimizer
step; every `log_every` steps a train record; every `eval_every` validation and samples;
every `save_every` a checkpoint; then stop if asked. Notable:
- Each step draws one global batch from the `BatchSampler` (this rank's slice), split into
  `grad_accum` micro-batches (DDP syncs gradients only on the last); see `step.TrainStep`.
- No host sync inside the step: the loss is summed on the device and read every
  `log_every` steps (and at evaluations/saves, where finiteness is checked).
- Exact resume (see `run`): validation and sampling never consume the global RNG, so a
  resumed run replays the uninterrupted one step for step.
- SIGINT/SIGTERM set a flag; the current step finishes, `latest/` is saved, and the run
  returns status "interrupted" (a second Ctrl-C aborts at once). Under torchrun the ranks
  agree on stopping at the next log step.
- A non-finite loss raises TrainingError; `latest/` still holds the last good weights,
  because every save first checks the loss since the previous one.
- One run per folder: rank 0 holds `<output>/.lock` (`lock.RunLock`) from before the first
  check to the end, so a second `slm-train model` on the same `--output` (fresh, `--resume`
  or `--force`) is refused, naming the process that trains there. Holding it, rank 0 first
  cleans up what killed saves left (`fileio.recover_leftovers`: a `latest/` cut between the
  two renames of a swap is put back before `--resume` looks for it).
- A full disk (metrics, loss.png, a checkpoint) stops the run with one line saying so and
  which checkpoint is kept.
- `train.keep_every_eval` also keeps `evals/step-NNNNNN/` at each evaluation (weights,
  config, tokenizer; no optimizer state), so two points of one run can be compared.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slm_tui.checkpoint.format import read_info
from slm_tui.config import Config
from slm_tui.errors import SlmError, TrainingError
from slm_tui.fileio import disk_full_reason, is_disk_full, recover_leftovers
from slm_tui.trainer import distributed as D
from slm_tui.trainer.evaluation import sample_continuations, validate
from slm_tui.trainer.lock import RunLock
from slm_tui.trainer.prepare import RunPlan, plan_run
from slm_tui.trainer.report import (
    DivergedRecord,
    EvalRecord,
    EventRecord,
    Reporter,
    SamplesRecord,
    TrainRecord,
    plot_loss,
)
from slm_tui.trainer.run import Run, RunState, save, start_run

EVALS_DIR = "evals"  # train.keep_every_eval: <output>/evals/step-NNNNNN/

__all__ = ["TrainResult", "train", "train_loop"]


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


# ---- starting ------------------------------------------------------------------------------
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
    """Train (or resume) a model as `config` says, writing checkpoints under `output`.

    `stop` (optional): setting it stops the run the way SIGINT does."""
    reporter = reporter or Reporter()
    dist = D.setup(config.train)
    rep = reporter if dist.is_main else Reporter()
    lock = RunLock(Path(output).expanduser(), create=not resume)
    planned = False
    try:
        plan = _plan(config, output, dist, rep, resume, force, tokenizer_path, lock)
        planned = True
        run, state = start_run(plan, dist, rep, resume)
        return train_loop(run, state, stop)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise TrainingError(
            f"{disk_full_reason(exc)} (writing {exc.filename or 'a file'}); training stopped; "
            f"{_kept(Path(output).expanduser())}"
        ) from None
    finally:
        lock.release(keep_folder=planned)
        D.teardown(dist)


def _kept(output: Path) -> str:
    """Which checkpoint a stopped run leaves, for its last message."""
    try:
        return f"kept: {output / 'latest'} at step {read_info(output / 'latest').step}"
    except (SlmError, OSError):
        return "no checkpoint had been saved yet"


def _plan(
    cfg: Config,
    output: str | Path,
    dist: D.DistInfo,
    rep: Reporter,
    resume: bool,
    force: bool,
    tokenizer_path: str | None,
    lock: RunLock,
) -> RunPlan:
    """Rank 0 takes the folder's lock, cleans up after saves killed there earlier (only the
    lock holder may: nothing else writes there meanwhile), checks and builds (tokenizer,
    shards); then the others load what it built. A refusal on rank 0 stops every rank with
    its message."""
    plan, error = None, None
    if dist.is_main:
        try:
            lock.acquire()
            for folder in (lock.folder, lock.folder.parent):
                for note in recover_leftovers(folder):
                    rep.on_message(note)
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
    message = D.share_error(None if error is None else str(error), dist)
    if error is not None:
        raise error
    if message is not None:
        raise TrainingError(message)
    if plan is None:
        plan = plan_run(
            cfg, output, resume=resume, force=force, tokenizer_path=tokenizer_path, build=False
        )
    return plan


# ---- the loop ------------------------------------------------------------------------------
def train_loop(run: Run, state: RunState, stop: threading.Event | None = None) -> TrainResult:
    """Step until train.max_steps or a stop request; log, evaluate and save on the way."""
    tc = run.tc
    status = "finished"
    with _StopFlag(stop) as flag:
        run.model.train()
        while state.step < tc.max_steps:
            state.loss_sum += run.train_step(run.sampler.next_batch(), state.step)
            state.step += 1
            state.loss_steps += 1
            state.tokens_seen += run.tokens_per_step

            # Bookkeeping: the only host syncs.
            last = state.step == tc.max_steps
            paused = False  # tokens/s measures training, not evaluation or saving
            if state.step % tc.log_every == 0 or last:
                log_train(run, state)
            if state.step % tc.eval_every == 0 or last:
                evaluate_and_sample(run, state)
                paused = True
            if state.step % tc.save_every == 0 or last:
                read_loss(run, state)
                save(run, state, "latest")
                paused = True
            if paused:  # the next record counts from here, tokens and time alike
                state.log_time, state.log_tokens = time.perf_counter(), state.tokens_seen
            if stop_requested(run, state, flag.event) and not last:
                interrupt(run, state)
                status = "interrupted"
                break
    if run.dist.is_main and status == "finished":
        plot_loss(run.log.records, run.out / "loss.png", title=run.out.name)
        if state.start_step == state.step:
            run.rep.on_message(
                f"already at step {state.step} of {tc.max_steps}; raise train.max_steps"
            )
    # Rank 0 may still be evaluating, saving or plotting: every rank leaves the group
    # together (a rank tearing its group down while another still works in it aborted at
    # exit under load).
    D.barrier(run.dist)
    return TrainResult(
        status=status,
        step=state.step,
        tokens_seen=state.tokens_seen,
        output=run.out,
        val_loss=state.val.val_loss if state.val else None,
        val_bpb=state.val.val_bpb if state.val else None,
        best_val_loss=state.best_val_loss if math.isfinite(state.best_val_loss) else None,
        seconds=time.perf_counter() - state.started,
    )


def read_loss(run: Run, state: RunState) -> float | None:
    """The mean training loss over the ranks since the last read (a host sync, so every rank
    calls it at the same steps); the previous value when no step ran since.
    TrainingError (after a "diverged" event) when it is not finite."""
    if state.loss_steps == 0:
        return state.last_loss
    value = float(D.all_mean(state.loss_sum, run.dist).item()) / state.loss_steps
    state.loss_sum = torch.zeros((), device=run.dist.device)
    state.loss_steps = 0
    if not math.isfinite(value):
        kept = run.out / "latest"
        run.log.append(DivergedRecord(step=state.step, loss=value))
        raise TrainingError(
            f"the loss became {value} by step {state.step}; stopped (last good checkpoint: "
            f"{kept if kept.exists() else 'none yet'}); lower train.lr or raise warmup"
        )
    state.last_loss = value
    return value


def log_train(run: Run, state: RunState) -> None:
    """A train record: loss since the last one, lr, tokens/s (and MFU on a GPU), ETA (None
    until the moving rate has settled: `pace.Pace`)."""
    loss = read_loss(run, state)
    now = time.perf_counter()
    tps = (state.tokens_seen - state.log_tokens) / max(now - state.log_time, 1e-9)
    state.log_time, state.log_tokens = now, state.tokens_seen
    elapsed = state.elapsed_before + now - state.started
    state.pace.add(state.step, elapsed)  # a moving rate that leaves the warm-up out
    mfu = None
    if run.peak:
        mfu = run.flops_per_token * tps / (run.peak * run.dist.world_size)
    record = TrainRecord(
        step=state.step,
        tokens=state.tokens_seen,
        loss=loss,
        lr=run.train_step.lr,
        tokens_per_s=tps,
        elapsed_s=elapsed,
        mfu=mfu,
        eta_s=state.pace.eta_s(run.tc.max_steps),
    )
    run.log.append(record)
    run.rep.on_log(record)


def evaluate_and_sample(run: Run, state: RunState) -> None:
    """Validation figures and sample continuations (rank 0), loss.png, and `best/` when the
    validation loss is the lowest so far."""
    read_loss(run, state)
    if not run.dist.is_main:
        return
    tc, plan = run.tc, run.plan
    seq_len = run.cfg.model.context_length
    measure = validate(
        run.model,
        plan.shards.val,
        seq_len,
        run.micro,
        tc.eval_batches,
        run.dist.device,
        run.speed.dtype,
    )
    state.val = EvalRecord(
        step=state.step,
        tokens=state.tokens_seen,
        val_loss=measure.loss,
        val_bpb=measure.bpb,
        val_tokens=measure.targets,
    )
    run.log.append(state.val)
    run.rep.on_eval(state.val)
    samples = sample_continuations(run.model, plan.tokenizer, tc)
    if samples:
        record = SamplesRecord(step=state.step, tokens=state.tokens_seen, samples=samples)
        run.log.append(record)
        run.rep.on_samples(record)
    plot_loss(run.log.records, run.out / "loss.png", title=run.out.name)
    if measure.loss < state.best_val_loss:
        state.best_val_loss = measure.loss
        save(run, state, "best")
    if tc.keep_every_eval:  # weights only: for reading and comparing, not for resuming
        save(run, state, f"{EVALS_DIR}/step-{state.step:06d}", resumable=False)


def stop_requested(run: Run, state: RunState, event: threading.Event) -> bool:
    """Whether to stop now: the flag, or under torchrun any rank's flag (checked at log
    steps only, since agreeing is a collective)."""
    stop = event.is_set()
    if run.dist.distributed:
        stop = state.step % run.tc.log_every == 0 and D.any_rank(stop, run.dist)
    return stop


def interrupt(run: Run, state: RunState) -> None:
    """Stop cleanly: log the event and save `latest/` unless this step just did."""
    read_loss(run, state)
    if run.dist.is_main:
        run.log.append(EventRecord(event="interrupted", step=state.step, tokens=state.tokens_seen))
    if state.step % run.tc.save_every:
        save(run, state, "latest")
