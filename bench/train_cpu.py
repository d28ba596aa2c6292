"""CPU training throughput of the `tiny` preset: the trainer's step vs a seed-notebook step.

Both sides train the SAME model (`slm_tui.model.GPT` with the tiny preset's shape: 4 layers,
d_model 128, 4 heads, context 128, vocab 4096, batch 32) on the same random-token shard, so
the ratio measures the training step, not the architecture:

- `seed-style`: written the way the seed notebook writes its loop: eager float32, the
  memmap re-opened every batch and rows stacked in Python, `torch.optim.AdamW` with its
  default (foreach) kernel, `loss.item()` every step, glibc's default allocator, torch's
  default thread count.
- `trainer fp32`: the real `slm_tui.trainer.step.TrainStep` with the preset as shipped
  (float32 on CPU): `BatchSampler`, fused AdamW, loss read every `log_every` steps, threads =
  physical cores, the tuned allocator, the loss-only training graph.
- `trainer bf16`: the same with `train.dtype=bfloat16` (autocast; oneDNN bf16 matmuls on
  CPUs with AVX512-BF16/AMX). Not the default: on CPUs without bf16 units it is slower.

Each variant runs in its own process (allocator settings are process-wide), variants
alternate over rounds, and each reports the median step time of its round; the best round
counts (the machine is shared, so the minimum is the least-disturbed figure).

What the profile showed (torch.profiler, tiny preset, 2 cores; see README for the table):
- ~37% of CPU time in `aten::mm` (the matmuls, already ~50% of fp32 peak), ~40% in small
  elementwise ops (rotary `mul`/`cat`/`neg`, RMSNorm's `pow`/`mean`/`mul`, SwiGLU, `fill_`,
  `copy_`), ~5% in log-softmax over the (4096, 4096) float32 logits, ~6% in AdamW.
- System time was 10-15% of CPU time: glibc serves blocks over its mmap threshold with fresh
  mmap'd pages and unmaps them on free, so every step page-faults and zero-fills ~200 MB.
  `tune_cpu_allocator` (mallopt: mmap threshold 32 MiB, trim threshold 1 GiB, top pad
  64 MiB) keeps freed blocks in the heap; the 64 MiB logits are still above any threshold.
- Micro-batching: the preset's 32 rows as `grad_accum: 4` micro-batches of 8 keep every
  tensor under glibc's 32 MiB mmap ceiling; with the allocator tuning, page faults fell from
  ~75,000 to ~500 per step and the system-time share from ~17% to ~2%.
- `torch.compile` (inductor C++) did not pay on these 2 cores: 13.4k vs 13.3k tokens/s
  eager, after ~16 s of compiling, so CPU runs keep `compile: false` (on for `small` on GPU).

Measured here (AMD EPYC Zen 4, 2 cores, shared; `--rounds 2 --steps 10`): seed-style
10,062 tokens/s; trainer fp32 13,175 (1.31x); trainer bf16 15,057 (1.50x). The 2x target
is not met: the matmuls already run near the fp32 roofline, and the remaining ~40% is the
model's small elementwise ops (rotary, RMSNorm, SwiGLU) that only fusion would remove.
- SDPA picks the CPU flash kernel (`_scaled_dot_product_flash_attention_for_cpu`), ~5%.
- Threads: torch already defaults to the core count here; `train.threads=0` counts
  physical cores so hyper-threaded machines do not oversubscribe the vector units.

Run: `python bench/train_cpu.py [--quick] [--rounds N] [--steps N]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("seed-style", "trainer fp32", "trainer bf16")


def make_shard(folder: Path, vocab: int, n_tokens: int = 2_000_000) -> Path:
    """A random-token shard in the data layer's format (throughput does not care about text)."""
    rng = np.random.default_rng(0)
    rng.integers(0, vocab, n_tokens, dtype=np.uint16).tofile(folder / "train.bin")
    meta = {"format": "slm-tui-shard", "version": 1, "dtype": "uint16", "tokens": n_tokens,
            "bytes": n_tokens * 4, "stories": 1, "split": "train"}  # fmt: skip
    (folder / "train.json").write_text(json.dumps(meta))
    return folder / "train.bin"


def worker(variant: str, shard_path: Path, steps: int, warmup: int) -> dict:
    import torch

    from slm_tui.config import load_config
    from slm_tui.model import GPT

    overrides = ["train.dtype=bfloat16"] if variant == "trainer bf16" else []
    cfg = load_config("tiny", overrides)
    cfg.model.vocab_size = cfg.tokenizer.vocab_size
    tc = cfg.train
    B, T = tc.batch_size, cfg.model.context_length
    torch.manual_seed(0)
    model = GPT(cfg.model)
    model.train()

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
        from slm_tui.data import BatchSampler, load_shard
        from slm_tui.trainer.distributed import cpu_threads
        from slm_tui.trainer.optim import build_optimizers
        from slm_tui.trainer.step import TrainStep, configure_runtime, wrap_for_training

        device = torch.device("cpu")
        torch.set_num_threads(cpu_threads(tc.threads))
        configure_runtime(tc, device)
        opt = build_optimizers(model, tc, device)
        step_fn = TrainStep(
            model, wrap_for_training(model, tc, device, False), opt, tc, B // tc.grad_accum, device
        )
        sampler = BatchSampler(load_shard(shard_path), B, T, tc.seed)
        pending = torch.zeros(())

        def one_step(i: int) -> None:
            nonlocal pending
            pending += step_fn(sampler.next_batch(), i)
            if (i + 1) % tc.log_every == 0:
                pending.item()
                pending = torch.zeros(())

    for i in range(warmup):
        one_step(i)
    times = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(warmup, warmup + steps):
        t = time.perf_counter()
        one_step(i)
        times.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {
        "variant": variant,
        "tokens_per_s": B * T / statistics.median(times),
        "step_ms_median": 1000 * statistics.median(times),
        "sys_share": sys_ / max(user + sys_, 1e-9),
        "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 4 steps per variant")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--shard", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.shard), args.steps, 2)))
        return
    if args.quick:
        args.rounds, args.steps = 1, 4

    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shard = make_shard(Path(tmp), 4096)
        for r in range(args.rounds):
            for variant in VARIANTS:
                console.print(f"round {r + 1}/{args.rounds}: {variant} ...", highlight=False)
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", variant, "--shard", str(shard),
                     "--steps", str(args.steps)],
                    capture_output=True, text=True, cwd=ROOT, check=True,
                )  # fmt: skip
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                if variant not in best or res["tokens_per_s"] > best[variant]["tokens_per_s"]:
                    best[variant] = res
    base = best["seed-style"]["tokens_per_s"]
    table = Table(title="tiny preset, CPU training step (same model, same data)")
    for col in ("variant", "tokens/s", "x seed", "step ms", "sys share", "faults/step", "threads"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for v in VARIANTS:
        b = best[v]
        table.add_row(v, f"{b['tokens_per_s']:,.0f}", f"{b['tokens_per_s'] / base:.2f}x",
                      f"{b['step_ms_median']:.0f}", f"{b['sys_share']:.1%}",
                      f"{b['minor_faults_per_step']:,.0f}", str(b["threads"]))  # fmt: skip
    Console().print(table)
    with contextlib.suppress(Exception):
        load = os.getloadavg()[0]
    out = {
        "bench": "train_cpu", "quick": args.quick, "rounds": args.rounds, "steps": args.steps,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_avg_1m": load, "results": best,
        "speedup_fp32": best["trainer fp32"]["tokens_per_s"] / base,
        "speedup_bf16": best["trainer bf16"]["tokens_per_s"] / base,
    }  # fmt: skip
    out["headline"] = [
        {"what": f"tiny CPU training, trainer {v.split()[1]} vs seed-style step",
         "value": f"{best[v]['tokens_per_s'] / base:.2f}x "
                  f"({best[v]['tokens_per_s']:,.0f} vs {base:,.0f} tok/s)",
         "target": ">= 2x", "ok": best[v]["tokens_per_s"] / base >= 2.0}
        for v in ("trainer fp32", "trainer bf16")
    ]  # fmt: skip
    dest = ROOT / "bench" / "results" / "train_cpu.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {dest}", highlight=False)


if __name__ == "__main__":
    main()
