"""GPU training throughput and MFU of the `small` preset, as shipped beside the variants tried.

Every row runs the real `slm_tui.trainer.step.TrainStep` (bf16 autocast, TF32, fused AdamW,
pinned non-blocking batch copies, loss read every `log_every` steps) on a random-token
shard with the preset's shape (15.7M parameters, context 512): `--variants` picks among
eager bf16, bf16 + torch.compile as the trainer does it (128 rows a step), the same with
256 rows a step, and with the compiled forward/backward captured in CUDA graphs
(`torch.compile(mode="reduce-overhead")`). MFU = `model.flops_per_token(T)` x tokens/s
over two peaks, both printed: the GPU's dense bf16 datasheet figure (`PEAK_BF16` in
`slm_tui.trainer.run`) and the bf16 matmul rate measured here (an 8192^3 product). Warm-up
absorbs compilation; timings use CUDA events around whole steps. `--profile` prints the
top CUDA kernels of a few steps of the shipped row (torch.profiler).

Without CUDA it prints why and writes `bench/results/train_gpu.json` with `skipped: true`.
Run: `python bench/train_gpu.py [--quick] [--steps N] [--variants ...] [--profile]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "bench" / "results" / "train_gpu.json"


VARIANTS = {  # name: (compile, rows a step, torch.compile mode)
    "eager": (False, 128, None),
    "shipped": (True, 128, None),
    "b256": (True, 256, None),
    "graphs": (True, 128, "reduce-overhead"),
}
LABELS = {
    "eager": "bf16 eager",
    "shipped": "bf16 + compile (as shipped)",
    "b256": "bf16 + compile, 256 rows a step",
    "graphs": "bf16 + compile, CUDA graphs",
}


def matmul_peak() -> float:
    """The bf16 matmul FLOP/s this GPU reaches (8192^3, random data, mean of 10)."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    end.synchronize()
    return 10 * 2 * 8192**3 / (start.elapsed_time(end) / 1000)


def measure(variant: str, shard_path: Path, steps: int, warmup: int, profile: bool) -> dict:
    import torch

    from slm_tui.model import GPT
    from slm_tui.presets import load_config
    from slm_tui.shards import BatchSampler, load_shard
    from slm_tui.trainer.optim import build_optimizers
    from slm_tui.trainer.run import peak_flops
    from slm_tui.trainer.speed import choose as choose_speed
    from slm_tui.trainer.step import LossOnly, TrainStep, configure_runtime, wrap_for_training

    compile_, rows, mode = VARIANTS[variant]
    cfg = load_config("small", [f"train.compile={str(compile_).lower()}",
                                f"train.batch_size={rows}"])  # fmt: skip
    cfg.model.vocab_size = cfg.tokenizer.vocab_size
    tc, T = cfg.train, cfg.model.context_length
    device = torch.device("cuda")
    configure_runtime(tc, device)
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device).train()
    opt = build_optimizers(model, tc, device)
    speed = choose_speed(tc, device, cfg.model, tc.batch_size // tc.grad_accum, tc.max_steps)
    wrapped = wrap_for_training(model, speed, device, False)
    if mode is not None:
        wrapped = torch.compile(LossOnly(model, speed.math_attention), mode=mode)
    step = TrainStep(model, wrapped, opt, tc, tc.batch_size // tc.grad_accum, device,
                     speed.dtype)  # fmt: skip
    sampler = BatchSampler(load_shard(shard_path), tc.batch_size, T, tc.seed)
    t0 = time.perf_counter()
    for i in range(warmup):
        step(sampler.next_batch(), i).item()
    warm_s = time.perf_counter() - t0
    times = []
    for i in range(warmup, warmup + steps, tc.log_every):
        n = min(tc.log_every, warmup + steps - i)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        pending = torch.zeros((), device=device)
        for j in range(n):
            pending += step(sampler.next_batch(), i + j)
        end.record()
        pending.item()  # one host sync per log window, as in training
        times.append(start.elapsed_time(end) / 1000 / n)
    tps = tc.batch_size * T / statistics.median(times)
    peak = peak_flops(device)
    top = None
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for j in range(5):
                step(sampler.next_batch(), warmup + steps + j)
            torch.cuda.synchronize()
        events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
        total = sum(e.device_time_total for e in events) or 1.0
        top = [(e.key[:90], e.device_time_total / total) for e in events[:15]]
    return {
        "variant": LABELS[variant],
        "key": variant,
        "top_kernels": top,
        "tokens_per_s": tps,
        "step_ms": 1000 * statistics.median(times),
        "mfu": model.flops_per_token(T) * tps / peak if peak else None,
        "warmup_s": warm_s,
        "params": model.num_params(),
        "gpu": torch.cuda.get_device_name(device),
        "peak_flops": peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 timed steps per variant")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--variants", default="eager,shipped,b256,graphs")
    ap.add_argument("--profile", action="store_true", help="top CUDA kernels of the shipped row")
    args = ap.parse_args()
    steps = 20 if args.quick else args.steps

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    DEST.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        why = f"no CUDA GPU visible to torch {torch.__version__}; nothing to measure"
        Console(stderr=True).print(f"skipped: {why}", highlight=False)
        out = {"bench": "train_gpu", "skipped": True, "reason": why,
               "headline": [{"what": "skipped without CUDA", "value": why, "target": "",
                             "ok": None}]}  # fmt: skip
        DEST.write_text(json.dumps(out) + "\n")
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        n = 50_000_000
        np.random.default_rng(0).integers(0, 4096, n, dtype=np.uint16).tofile(f"{tmp}/train.bin")
        meta = {"format": "slm-tui-shard", "version": 1, "dtype": "uint16", "tokens": n,
                "bytes": n * 4, "stories": 1}  # fmt: skip
        Path(tmp, "train.json").write_text(json.dumps(meta))
        measured = matmul_peak()
        for variant in args.variants.split(","):
            compile_ = VARIANTS[variant][0]
            results.append(measure(variant, Path(tmp, "train.bin"), steps,
                                   10 if compile_ else 5,
                                   args.profile and variant == "shipped"))  # fmt: skip
    for r in results:
        r["measured_peak_flops"] = measured
        r["mfu_measured"] = r["mfu"] * r["peak_flops"] / measured if r["mfu"] else None
    console = Console()
    table = Table(title=f"small preset on {results[0]['gpu']} (bf16 matmul measured "
                        f"{measured / 1e12:,.0f} TFLOP/s)")  # fmt: skip
    for col in ("variant", "tokens/s", "step ms", "MFU (datasheet)", "MFU (measured)",
                "warm-up s"):  # fmt: skip
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        mfu_m = f"{r['mfu_measured']:.1%}" if r["mfu_measured"] is not None else "n/a"
        table.add_row(r["variant"], f"{r['tokens_per_s']:,.0f}", f"{r['step_ms']:.1f}", mfu,
                      mfu_m, f"{r['warmup_s']:.0f}")  # fmt: skip
    console.print(table)
    for r in results:
        if r["top_kernels"]:
            console.print(f"top CUDA kernels, {r['variant']}:", highlight=False)
            for name, share in r["top_kernels"]:
                console.print(f"  {share:6.1%}  {name}", highlight=False)
    out = {"bench": "train_gpu", "skipped": False, "quick": args.quick, "steps": steps,
           "measured_peak_flops": measured, "results": results}  # fmt: skip
    best = next((r for r in results if r["key"] == "shipped"), results[-1])
    out["headline"] = [
        {"what": f"small on {best['gpu']}, {best['variant']}",
         "value": f"{best['tokens_per_s']:,.0f} tok/s, MFU "
                  + (f"{best['mfu']:.1%} of the datasheet, {best['mfu_measured']:.1%} of the "
                     "measured peak" if best["mfu"] is not None else "n/a"),
         "target": "MFU >= 40%", "ok": None if best["mfu"] is None else best["mfu"] >= 0.4}
    ]  # fmt: skip
    DEST.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
