"""Time to quality: wall time for `tinystories-demo` to reach 1.0 bits per byte on dev.txt,
before and after issue 11 (train.dtype/compile auto), same data, same command.

Both runs: `slm-train model --config tinystories-demo --tokenizer <the demo's tokenizer>
--data-files train.txt --val-files dev.txt`, evaluated on (nearly) all of dev.txt every
100 steps (100 batches of 8 x 128 tokens); each is stopped at its first evaluation at or
under the target. "before" adds `--set train.dtype=float32 --set train.compile=false`: the
path every CPU trained on before (float32, eager, flash attention). "after" is the command
as shipped. Seconds count from the run's start (tokenizer and shards are built before, and
cached for the second run); evaluations are inside the clock for both. dev.txt figures guide
nothing here but are validation figures all the same.

Run: `python bench/time_to_quality.py [--target 1.0] [--only before|after]` (2 cores: about
12 + 6 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name
from _runs import BEFORE, ROOT, TEXT, need_text, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--only", choices=("before", "after"))
    args = ap.parse_args()
    need_text()
    common = [
        "--config", "tinystories-demo",
        "--tokenizer", str(ROOT / "checkpoints" / "tinystories-demo" / "tokenizer"),
        "--data-files", str(TEXT / "train.txt"), "--val-files", str(TEXT / "dev.txt"),
        "--set", f"train.eval_every={args.eval_every}", "--set", "train.eval_batches=100",
        "--set", "train.save_every=100000", "--set", "train.sample_tokens=0",
    ]  # fmt: skip
    dest = ROOT / "bench" / "results" / "time_to_quality.json"
    out = json.loads(dest.read_text()) if dest.is_file() and args.only else {}
    out.update({"bench": "time_to_quality", "cpu": cpu_name(), "cores": os.cpu_count(),
                "target_bpb": args.target, "corpus": "train.txt; val dev.txt"})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("before", BEFORE), ("after", [])):
            if args.only and name != args.only:
                continue
            print(f"{name}: training ...", file=sys.stderr)
            w = train(name, [*common, *extra], Path(tmp) / name, args.target)
            out[name] = {
                "speed": w.speed,
                "reached": None if w.reached is None else
                {"step": w.reached[0], "seconds": round(w.reached[1], 1),
                 "val_bpb": w.reached[2]},
                "evals": [{"step": s, "seconds": round(t, 1), "val_bpb": b} for s, t, b in w.evals],
                "median_tokens_per_s": sorted(w.tokens_per_s)[len(w.tokens_per_s) // 2]
                if w.tokens_per_s else None,
                "returncode": w.returncode,
            }  # fmt: skip
    print(f"time to {args.target} bits/byte on dev.txt, tinystories-demo ({out['cpu']}, "
          f"{out['cores']} cores)")  # fmt: skip
    print(f"{'run':8} {'reached at step':>16} {'seconds':>9} {'tok/s':>8}  speed")
    for name in ("before", "after"):
        r = out.get(name)
        if not r:
            continue
        hit = r["reached"]
        step, secs = (hit["step"], f"{hit['seconds']:.0f}") if hit else ("not reached", "-")
        print(f"{name:8} {step!s:>16} {secs:>9} {r['median_tokens_per_s'] or 0:>8,.0f}  "
              f"{r['speed']}")  # fmt: skip
    if out.get("before", {}).get("reached") and out.get("after", {}).get("reached"):
        out["speedup"] = out["before"]["reached"]["seconds"] / out["after"]["reached"]["seconds"]
        print(f"after is {out['speedup']:.2f}x faster to the target")
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
