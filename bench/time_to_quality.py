"""Time to quality: wall time for `tinystories-demo` to reach 1.0 bits per byte on dev.txt,
before and after issue 11 (train.dtype/compile auto), same data, same command.

Both runs: `slm-train model --config tinystories-demo --tokenizer <a 4096 BPE trained on
train.txt> --data-files train.txt --val-files dev.txt` with the v1 demo recipe pinned
(`V1_RECIPE`), evaluated on (nearly) all of dev.txt every
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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name
from _runs import BEFORE, ROOT, SLM_TRAIN, TEXT, need_text, train

# The v1 demo recipe (the preset when this was first measured), pinned so the figure does not
# move when the preset does: d192 x 6 layers, 6 heads, context 128, Muon 0.02 + AdamW 2e-3,
# WSD over 1,800 steps with 20% decay.
V1_RECIPE = ["model.d_model=192", "model.n_head=6", "model.n_layer=6", "model.context_length=128",
             "train.optimizer=muon", "train.muon_lr=0.02", "train.lr=2e-3",
             "train.schedule=wsd", "train.decay_fraction=0.2", "train.max_steps=1800",
             "train.warmup_steps=60", "train.batch_size=32", "train.grad_accum=4",
             "model.dropout=0.0", "train.weight_decay=0.1"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--only", choices=("before", "after"))
    ap.add_argument(
        "--quick", action="store_true",
        help="(make bench) print the stored result only: the runs take ~15 min",
    )  # fmt: skip
    args = ap.parse_args()
    dest = ROOT / "bench" / "results" / "time_to_quality.json"
    if args.quick:
        print(json.dumps(json.loads(dest.read_text()).get("headline", []), indent=1)
              if dest.is_file() else "no stored result")  # fmt: skip
        return
    need_text()
    tmp_root = Path(tempfile.mkdtemp(prefix="ttq-"))
    tok = tmp_root / "tokenizer"  # the v1 demo's tokenizer, made the same way
    subprocess.run([str(SLM_TRAIN), "tokenizer", "--data-files", str(TEXT / "train.txt"),
                    "--vocab-size", "4096", "--output", str(tok)],
                   check=True, capture_output=True)  # fmt: skip
    common = [
        "--config", "tinystories-demo", "--tokenizer", str(tok),
        *[x for o in V1_RECIPE for x in ("--set", o)],
        "--data-files", str(TEXT / "train.txt"), "--val-files", str(TEXT / "dev.txt"),
        "--set", f"train.eval_every={args.eval_every}", "--set", "train.eval_batches=100",
        "--set", "train.save_every=100000", "--set", "train.sample_tokens=0",
    ]  # fmt: skip
    out = json.loads(dest.read_text()) if dest.is_file() and args.only else {}
    out.update({"bench": "time_to_quality", "cpu": cpu_name(), "cores": os.cpu_count(),
                "target_bpb": args.target, "corpus": "train.txt; val dev.txt"})  # fmt: skip
    try:
        for name, extra in (("before", BEFORE), ("after", [])):
            if args.only and name != args.only:
                continue
            print(f"{name}: training ...", file=sys.stderr)
            w = train(name, [*common, *extra], tmp_root / name, args.target)
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
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
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
        b, a = out["before"]["reached"], out["after"]["reached"]
        out["headline"] = [{
            "what": f"tinystories-demo (v1 recipe) to {args.target} bits/byte on dev.txt, 2 cores: "
                    "before vs after issue 11",
            "value": f"{b['seconds'] / 60:.1f} vs {a['seconds'] / 60:.1f} min (step {b['step']} vs "
                     f"{a['step']}; {out['speedup']:.2f}x)",
            "target": "report",
        }]  # fmt: skip
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
