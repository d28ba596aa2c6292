"""Benchmark: the seed notebook's recipe against ours at equal training time, on dev.txt.

Three recipes, each as its preset ships, trained on the shared text (train.txt +
train-extra.txt) for the same wall-clock budget (`--minutes`) on this machine, then scored
with `slm-train eval` on all of dev.txt (bits per byte: fair across tokenizers):
  seed-notebook   the seed as it ran: GPT-2 blocks 6 x 384, context 128, GPT-2's tokenizer
                  (50,257 ids), AdamW 1e-4, 1,024-row updates (32 x 32 accumulated)
  seed-gpt        the same model with our 4096 BPE and a sane schedule
  demo            tinystories-demo (d256 x 6 Llama-style blocks, Muon, WSD)
Equal time, each schedule complete: a calibration run of `--calibrate-steps` optimizer
steps measures the recipe's step time; the timed run then gets max_steps = what fits in the
budget (warmup cut to at most 10% of it), one evaluation at the end, no samples, and is
stopped with SIGTERM if it overruns by half. `train.compile` is off for all three (a
calibration too short to repay compiling would otherwise time another program than the
run). Seconds count from the run's start event (tokenizers and shards are built before).

    .venv/bin/python bench/seed_recipes.py --minutes 30          # the full comparison
    .venv/bin/python bench/seed_recipes.py --quick               # a smoke run (see --quick)

`--quick`: 1 minute each, 3 calibration steps, and seed-notebook's update shrunk to one
32-row micro-batch (its 1,024-row update takes minutes on a CPU): checks the pipeline and
prints what the full run would take; its bits per byte are not a comparison. Writes
bench/results/seed_recipes.json (seed_recipes-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name
from _runs import ROOT, SLM_TRAIN, TEXT, need_text, train

GPT2_VOCAB = ROOT.parent / "shared" / "data" / "gpt2" / "encoder.json"
RECIPES = {"seed-notebook": "seed-notebook", "seed-gpt": "seed-gpt", "demo": "tinystories-demo"}
QUICK_SEED = ["train.batch_size=32", "train.grad_accum=1"]


def sets(pairs: list[str]) -> list[str]:
    return [x for p in pairs for x in ("--set", p)]


def train_records(metrics: Path) -> list[dict]:
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r for r in recs if r.get("kind") == "train"]


def step_seconds(metrics: Path) -> float:
    """The median seconds of one optimizer step, the first left out (it pays for warm-up)."""
    recs = train_records(metrics)
    if len(recs) < 2:
        raise SystemExit(f"{metrics}: fewer than 2 logged steps; raise --calibrate-steps")
    gaps = sorted((b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])
                  for a, b in itertools.pairwise(recs))  # fmt: skip
    return gaps[len(gaps) // 2]


def evaluate(run: Path, device: str) -> dict:
    proc = subprocess.run(
        [str(SLM_TRAIN), "eval", "--checkpoint", str(run / "latest"), "--data-files",
         str(TEXT / "dev.txt"), "--json", "--device", device],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=None, help="training budget per recipe")
    ap.add_argument("--calibrate-steps", type=int, default=None)
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="train.threads (0: one per core)")
    ap.add_argument("--gpt2-vocab", default=str(GPT2_VOCAB) if GPT2_VOCAB.is_file() else "")
    ap.add_argument("--quick", action="store_true", help="a smoke run (see the docstring)")
    args = ap.parse_args()
    minutes = args.minutes or (1.0 if args.quick else 30.0)
    calibrate = args.calibrate_steps or (3 if args.quick else 5)
    need_text()
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="slm-seed-recipes-"))
    out: dict = {"bench": "seed_recipes", "quick": args.quick, "minutes": minutes,
                 "cpu": cpu_name(), "cores": os.cpu_count(), "device": args.device,
                 "corpus": "train.txt + train-extra.txt; scored on dev.txt", "recipes": {}}  # fmt: skip
    try:
        spm = work / "spm4096"
        subprocess.run([str(SLM_TRAIN), "tokenizer", "--data-files", str(TEXT / "train.txt"),
                        str(TEXT / "train-extra.txt"), "--vocab-size", "4096",
                        "--output", str(spm)], check=True, capture_output=True)  # fmt: skip
        gpt2 = work / "gpt2"
        cmd = [str(SLM_TRAIN), "tokenizer", "--kind", "gpt2", "--output", str(gpt2)]
        subprocess.run(cmd + (["--vocab-file", args.gpt2_vocab] if args.gpt2_vocab else []),
                       check=True, capture_output=True)  # fmt: skip
        data = ["--data-files", str(TEXT / "train.txt"), str(TEXT / "train-extra.txt"),
                "--val-files", str(TEXT / "dev.txt")]  # fmt: skip
        for name in args.recipes:
            tok = gpt2 if name == "seed-notebook" else spm
            base = ["--config", RECIPES[name], "--tokenizer", str(tok), *data, *sets([
                "train.compile=false", f"train.threads={args.threads}",
                f"train.device={args.device}", "train.sample_tokens=0", "train.eval_batches=4",
            ])]  # fmt: skip
            if args.quick and name == "seed-notebook":
                base += sets(QUICK_SEED)
            print(f"{name}: calibrating ({calibrate} steps) ...", file=sys.stderr)
            cal = work / f"{name}-calibrate"
            w = train(f"{name}-cal", [*base, *sets([f"train.max_steps={calibrate}",
                      "train.log_every=1", f"train.eval_every={calibrate}",
                      f"train.save_every={calibrate}"])], cal)  # fmt: skip
            if w.returncode != 0:
                raise SystemExit(f"{name}: calibration failed, see {cal.with_suffix('.log')}")
            per_step = step_seconds(cal / "metrics.jsonl")
            steps = max(1, math.floor(minutes * 60 / per_step))
            from slm_tui.presets import load_config

            preset = load_config(RECIPES[name]).train
            warmup = min(preset.warmup_steps, max(0, steps // 10))
            print(f"{name}: {per_step:.2f} s/step -> {steps} steps in {minutes:g} min",
                  file=sys.stderr)  # fmt: skip
            run = work / name
            t0 = time.perf_counter()
            w = train(name, [*base, *sets([f"train.max_steps={steps}",
                      f"train.warmup_steps={warmup}", f"train.eval_every={steps}",
                      f"train.save_every={steps}", "train.log_every=10"])], run,
                      deadline=minutes * 60 * 1.5)  # fmt: skip
            wall = time.perf_counter() - t0
            result = evaluate(run, args.device)
            out["recipes"][name] = {
                "preset": RECIPES[name], "tokenizer": result["tokenizer"],
                "vocab_size": result["vocab_size"], "seconds_per_step": per_step,
                "steps": steps, "warmup_steps": warmup, "run_wall_s": wall,
                "speed": w.speed, "returncode": w.returncode,
                "median_tokens_per_s": sorted(w.tokens_per_s)[len(w.tokens_per_s) // 2]
                if w.tokens_per_s else None,
                "train_seconds": train_records(run / "metrics.jsonl")[-1]["elapsed_s"],
                "dev_bpb": result["bpb"], "dev_loss": result["loss"],
                "quick_overrides": QUICK_SEED if args.quick and name == "seed-notebook" else [],
            }  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["seconds_total"] = time.perf_counter() - t_all
    print(f"equal training time ({minutes:g} min each), dev.txt bits/byte; {out['cpu']}")
    print(f"{'recipe':14} {'tokenizer':22} {'steps':>6} {'s/step':>7} {'trained s':>9} "
          f"{'tok/s':>7} {'dev bpb':>8}")  # fmt: skip
    for name, r in out["recipes"].items():
        print(f"{name:14} {r['tokenizer'] + ' ' + str(r['vocab_size']):22} {r['steps']:>6} "
              f"{r['seconds_per_step']:>7.2f} {r['train_seconds']:>9.0f} "
              f"{r['median_tokens_per_s'] or 0:>7,.0f} {r['dev_bpb']:>8.3f}")  # fmt: skip
    full = len(args.recipes) * 30 * 60
    cal_s = sum(r["seconds_per_step"] * 5 for r in out["recipes"].values())
    out["full_run_estimate_s"] = full + cal_s + 120 * len(args.recipes)
    print(f"this run: {out['seconds_total'] / 60:.1f} min; the full run (--minutes 30, "
          f"5 calibration steps): about {out['full_run_estimate_s'] / 60:.0f} min on this machine"
          + (" (seed-notebook's real 1,024-row steps take longer to calibrate: see s/step x 32)"
             if args.quick else ""))  # fmt: skip
    out["headline"] = [{
        "what": f"dev.txt bits/byte at equal training time ({minutes:g} min): "
                + " vs ".join(out["recipes"]),
        "value": " vs ".join(f"{r['dev_bpb']:.3f}" for r in out["recipes"].values()),
        "target": "report", "ok": None,
    }]  # fmt: skip
    name = "seed_recipes-quick.json" if args.quick else "seed_recipes.json"
    dest = ROOT / "bench" / "results" / name
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
