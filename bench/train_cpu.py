"""CPU training throughput: the seed-style step, the trainer in eager float32 and the trainer
as shipped (`train.dtype/compile: auto`), on the `tiny` and `tinystories-demo` shapes, with
this machine's measured GEMM peak so each row shows its MFU.

All rows of a shape train the SAME model (`slm_tui.model.GPT` with the preset's shape) on the
same random-token shard, so ratios measure the training step, not the architecture:

- `seed-style`: written the way the seed notebook writes its loop: eager float32, the whole
  batch at once, the memmap re-opened every batch and rows stacked in Python, plain
  `torch.optim.AdamW`, `loss.item()` every step, glibc's default allocator.
- `trainer fp32`: the real `TrainStep` with `train.dtype=float32 train.compile=false`
  (before issue 11 this was what CPUs got): the preset's optimizer (Muon + AdamW for the
  demo), micro-batches, fused AdamW, the tuned allocator, the loss-only graph.
- `trainer auto`: the trainer as shipped: `speed.choose` decides from this CPU (the JSON and
  the table say what it chose and why); compile counts as on for the preset's full run.

MFU: model FLOPs per token (`GPT.flops_per_token`: 6 x params + attention) x tokens/s over
the peak this machine measured in the same run (a 2048^3 `torch.mm`, best of 5), in the
dtype the row computes in. `eval` rows: forward-only validation tokens/s (no grad, batches
of 32) in float32 and in the auto dtype.

What the profile showed (torch.profiler, demo shape, 2 cores, Xeon with AMX, bf16 +
compile before the fix): 47% of CPU time in `_scaled_dot_product_flash_attention_for_cpu_
backward` (bf16 flash backward: ~7 ms per layer per micro-batch at T=128), 22% `aten::mm`,
18% inductor's fused elementwise kernels, 9% the Muon step (its Newton-Schulz already runs
in bf16), ~1% casts. With SDPA's math kernel for bf16 CPU training (matmuls plus a softmax
inductor fuses) the same step went from 11.5k to 18.5k tokens/s; what is left is ~40%
inductor's kernels (softmax, cross-entropy over (1024, 4096) logits, RMSNorm, rotary,
SwiGLU), ~35% matmuls, ~15% Muon.

Each variant runs in its own process (allocator settings are process-wide), variants
alternate over rounds, each reports the median step of its round, the best round counts.

Run: `python bench/train_cpu.py [--quick] [--rounds N] [--steps N] [--shapes tiny,...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("seed-style", "trainer fp32", "trainer auto")
SHAPES = ("tiny", "tinystories-demo")


def make_shard(folder: Path, vocab: int, n_tokens: int = 2_000_000) -> Path:
    """A random-token shard in the data layer's format (throughput does not care about text)."""
    rng = np.random.default_rng(0)
    rng.integers(0, vocab, n_tokens, dtype=np.uint16).tofile(folder / "train.bin")
    meta = {"format": "slm-tui-shard", "version": 1, "dtype": "uint16", "tokens": n_tokens,
            "bytes": n_tokens * 4, "stories": 1, "split": "train"}  # fmt: skip
    (folder / "train.json").write_text(json.dumps(meta))
    return folder / "train.bin"


def gemm_peak(dtype_name: str, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of the best of `reps` n^3 matmuls in `dtype_name` on this process's threads."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def worker(variant: str, shape: str, shard_path: Path, steps: int, warmup: int) -> dict:
    import torch

    from slm_tui.model import GPT
    from slm_tui.presets import load_config
    from slm_tui.trainer.distributed import cpu_threads

    overrides = ["train.dtype=float32", "train.compile=false"] if variant != "trainer auto" else []
    cfg = load_config(shape, overrides)
    cfg.model.vocab_size = cfg.tokenizer.vocab_size
    tc = cfg.train
    B, T = tc.batch_size, cfg.model.context_length
    torch.set_num_threads(cpu_threads(tc.threads))
    torch.manual_seed(0)
    model = GPT(cfg.model)
    model.train()
    chose, why, dtype = "float32 eager", "", "float32"

    if variant == "seed-style":
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                                eps=tc.eps, weight_decay=tc.weight_decay)  # fmt: skip

        def get_batch():
            data = np.memmap(shard_path, dtype=np.uint16, mode="r")  # re-opened every batch
            ix = torch.randint(len(data) - T, (B,))
            x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix])
            y = torch.stack(
                [torch.from_numpy(data[i + 1 : i + 1 + T].astype(np.int64)) for i in ix]
            )
            return x, y

        def one_step(i: int) -> None:
            x, y = get_batch()
            _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # the notebook reads the loss every step
    else:
        from slm_tui.shards import BatchSampler, load_shard
        from slm_tui.trainer.optim import build_optimizers
        from slm_tui.trainer.speed import choose
        from slm_tui.trainer.step import TrainStep, configure_runtime, wrap_for_training

        device = torch.device("cpu")
        configure_runtime(tc, device)
        micro = B // tc.grad_accum
        speed = choose(tc, device, cfg.model, micro, tc.max_steps)
        chose, why, dtype = speed.describe().split(" (")[0], speed.why, speed.dtype
        opt = build_optimizers(model, tc, device)
        train = wrap_for_training(model, speed, device, False)
        step_fn = TrainStep(model, train, opt, tc, micro, device, speed.dtype)
        sampler = BatchSampler(load_shard(shard_path), B, T, tc.seed)
        pending = torch.zeros(())

        def one_step(i: int) -> None:
            nonlocal pending
            pending += step_fn(sampler.next_batch(), i)
            if (i + 1) % tc.log_every == 0:
                pending.item()
                pending = torch.zeros(())

    started = time.perf_counter()
    for i in range(warmup):
        one_step(i)
    warm_s = time.perf_counter() - started
    times = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(warmup, warmup + steps):
        times.append(_timed(lambda i=i: one_step(i)))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    tokens_per_s = B * T / statistics.median(times)
    out = {
        "variant": variant, "shape": shape, "chose": chose, "why": why, "dtype": dtype,
        "tokens_per_s": tokens_per_s, "step_ms_median": 1000 * statistics.median(times),
        "warmup_s": warm_s, "sys_share": sys_ / max(user + sys_, 1e-9),
        "threads": torch.get_num_threads(), "flops_per_token": model.flops_per_token(T),
    }  # fmt: skip
    if variant != "seed-style":
        out["eval_tokens_per_s"] = eval_speed(model, dtype, T)
    return out


def eval_speed(model, dtype: str, T: int, batch: int = 32, reps: int = 3) -> float:
    """Forward-only validation tokens/s, as `slm-train eval` computes them."""
    import torch

    from slm_tui.trainer.evaluation import autocast_for

    model.eval()
    idx = torch.randint(0, model.cfg.vocab_size, (batch, T + 1))
    x, y = idx[:, :-1], idx[:, 1:]
    device = torch.device("cpu")

    def forward() -> None:
        with torch.no_grad(), autocast_for(device, dtype):
            model(x, y, reduction="none")

    forward()
    return batch * T / min(_timed(forward) for _ in range(reps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 4 steps per variant")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    ap.add_argument("--shard", help=argparse.SUPPRESS)
    ap.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak:
        import torch

        from slm_tui.trainer.distributed import cpu_threads

        torch.set_num_threads(cpu_threads(0))
        print(json.dumps({d: gemm_peak(d) for d in ("float32", "bfloat16")}))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.shape, Path(args.shard), args.steps, 3)))
        return
    if args.quick:
        args.rounds, args.steps = 1, 4
    shapes = [s for s in args.shapes.split(",") if s]

    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, width=max(150, Console().width))
    run = [sys.executable, __file__]
    peak = json.loads(subprocess.run([*run, "--peak"], capture_output=True, text=True,
                                     check=True).stdout)  # fmt: skip
    best: dict[str, dict[str, dict]] = {s: {} for s in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        shard = make_shard(Path(tmp), 4096)
        for r in range(args.rounds):
            for shape in shapes:
                for variant in VARIANTS:
                    console.print(f"round {r + 1}/{args.rounds}: {shape} {variant} ...",
                                  highlight=False)  # fmt: skip
                    proc = subprocess.run(
                        [*run, "--worker", variant, "--shape", shape, "--shard", str(shard),
                         "--steps", str(args.steps)],
                        capture_output=True, text=True, cwd=ROOT,
                    )  # fmt: skip
                    if proc.returncode:
                        sys.exit(f"{shape} {variant} failed:\n{proc.stderr[-3000:]}")
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    had = best[shape].get(variant)
                    if had is None or res["tokens_per_s"] > had["tokens_per_s"]:
                        best[shape][variant] = res
    cpu = cpu_name()
    table = Table(title=f"CPU training step, same model and data per shape ({cpu}, "
                        f"{os.cpu_count()} cores; GEMM peak fp32 {peak['float32'] / 1e9:,.0f}, "
                        f"bf16 {peak['bfloat16'] / 1e9:,.0f} GFLOP/s)")  # fmt: skip
    for col in ("shape", "variant", "computes in", "tokens/s", "x seed", "MFU", "eval tok/s",
                "warm-up s"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("shape", "variant", "computes in")
                         else "right")  # fmt: skip
    headline = []
    from slm_tui.trainer.speed import cpu_bf16_unit, cpu_info

    unit = cpu_bf16_unit(cpu_info()[1])
    need = 3.0 if unit == "AMX-BF16" else 2.0  # the targets, by what the CPU has
    for shape in shapes:
        base = best[shape]["seed-style"]["tokens_per_s"]
        for v in VARIANTS:
            b = best[shape][v]
            b["x_seed"] = b["tokens_per_s"] / base
            b["mfu"] = b["tokens_per_s"] * b["flops_per_token"] / peak[b["dtype"]]
            ev = b.get("eval_tokens_per_s")
            table.add_row(shape, v, b["chose"], f"{b['tokens_per_s']:,.0f}",
                          f"{b['x_seed']:.2f}x", f"{b['mfu']:.1%}",
                          f"{ev:,.0f}" if ev else "-", f"{b['warmup_s']:.1f}")  # fmt: skip
        auto = best[shape]["trainer auto"]
        headline.append({
            "what": f"{shape} CPU training, trainer as shipped vs seed-style step ({cpu})",
            "value": f"{auto['x_seed']:.2f}x ({auto['tokens_per_s']:,.0f} vs {base:,.0f} "
                     f"tok/s; {auto['chose']}; MFU {auto['mfu']:.1%})",
            "target": f">= {need:.0f}x ({unit or 'unknown'} CPU)",
            "ok": auto["x_seed"] >= need if shape == "tinystories-demo" else None,
        })  # fmt: skip
        headline.append({
            "what": f"{shape}: MFU as shipped against this machine's measured "
                    f"{'bf16' if auto['dtype'] == 'bfloat16' else 'fp32'} GEMM peak",
            "value": f"{auto['mfu']:.1%}",
            "target": ">= 25% (aim, demo shape)",
            "ok": auto["mfu"] >= 0.25 if shape == "tinystories-demo" else None,
        })  # fmt: skip
    console.print(table)
    for shape in shapes:
        console.print(f"{shape}: auto chose {best[shape]['trainer auto']['chose']} "
                      f"({best[shape]['trainer auto']['why']})", highlight=False)  # fmt: skip
    out = {
        "bench": "train_cpu", "quick": args.quick, "rounds": args.rounds, "steps": args.steps,
        "cpu": cpu, "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
        "gemm_peak_flops": peak, "results": best, "headline": headline,
    }  # fmt: skip
    dest = ROOT / "bench" / "results" / "train_cpu.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {dest}", highlight=False)


if __name__ == "__main__":
    main()
