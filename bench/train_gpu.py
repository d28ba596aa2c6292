"""GPU training throughput and MFU of the `small` preset: eager bf16 vs bf16 + torch.compile.

Both rows run the real `slm_tui.trainer.step.TrainStep` (bf16 autocast, TF32, fused AdamW,
pinned non-blocking batch copies, loss read every `log_every` steps) on a random-token
shard with the preset's shape and batch (15.7M parameters, context 512, 128 rows). MFU =
`model.flops_per_token(T)` x tokens/s / the GPU's dense bf16 peak (table in
`slm_tui.trainer.loop.PEAK_BF16`; no figure for unknown GPUs). The compile row includes a
warm-up that absorbs compilation; timings use CUDA events around whole steps.

Without CUDA it prints why and writes `bench/results/train_gpu.json` with `skipped: true`.
Run: `python bench/train_gpu.py [--quick] [--steps N]`.
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


def measure(compile_: bool, shard_path: Path, steps: int, warmup: int) -> dict:
    import torch

    from slm_tui.model import GPT
    from slm_tui.presets import load_config
    from slm_tui.shards import BatchSampler, load_shard
    from slm_tui.trainer.loop import peak_flops
    from slm_tui.trainer.optim import build_optimizers
    from slm_tui.trainer.speed import choose as choose_speed
    from slm_tui.trainer.step import TrainStep, configure_runtime, wrap_for_training

    cfg = load_config("small", [f"train.compile={str(compile_).lower()}"])
    cfg.model.vocab_size = cfg.tokenizer.vocab_size
    tc, T = cfg.train, cfg.model.context_length
    device = torch.device("cuda")
    configure_runtime(tc, device)
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device).train()
    opt = build_optimizers(model, tc, device)
    speed = choose_speed(tc, device, cfg.model, tc.batch_size // tc.grad_accum, tc.max_steps)
    step = TrainStep(model, wrap_for_training(model, speed, device, False), opt, tc,
                     tc.batch_size // tc.grad_accum, device, speed.dtype)  # fmt: skip
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
    return {
        "variant": "bf16 + compile" if compile_ else "bf16 eager",
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
        for compile_ in (False, True):
            results.append(measure(compile_, Path(tmp, "train.bin"), steps, 10 if compile_ else 5))
    table = Table(title=f"small preset on {results[0]['gpu']}")
    for col in ("variant", "tokens/s", "step ms", "MFU", "warm-up s"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        table.add_row(r["variant"], f"{r['tokens_per_s']:,.0f}", f"{r['step_ms']:.1f}", mfu,
                      f"{r['warmup_s']:.0f}")  # fmt: skip
    Console().print(table)
    out = {"bench": "train_gpu", "skipped": False, "quick": args.quick, "steps": steps,
           "results": results,
           "speedup_compile": results[1]["tokens_per_s"] / results[0]["tokens_per_s"]}  # fmt: skip
    best = results[1]
    out["headline"] = [
        {"what": f"small on {best['gpu']}, bf16 + compile",
         "value": f"{best['tokens_per_s']:,.0f} tok/s, MFU "
                  + (f"{best['mfu']:.1%}" if best["mfu"] is not None else "n/a"),
         "target": "MFU >= 40%", "ok": None if best["mfu"] is None else best["mfu"] >= 0.4}
    ]  # fmt: skip
    DEST.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
