"""Numerics check for bf16 training: a 300-step `tiny` run trained in float32 and the same
run as shipped (bf16 autocast + compile + math attention where the CPU picks it) reach the
same bits per byte on dev.txt, within 0.01.

Same tokenizer (the demo's), same data (`train.txt`), same seed and schedule; only the
training numerics differ. Both final checkpoints are then scored on all of dev.txt by
`slm-train eval --dtype float32`, so the comparison is of the trained weights, not of the
evaluation's arithmetic (the bf16 evaluation of the bf16 run is reported beside it).
dev.txt figures here are validation figures.

Run: `python bench/bf16_quality.py [--steps 300]` (2 cores: about 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name
from _runs import BEFORE, ROOT, SLM_TRAIN, TEXT, need_text, train


def score(run: Path, dtype: str) -> dict:
    proc = subprocess.run(
        [str(SLM_TRAIN), "eval", "--checkpoint", str(run / "latest"), "--data-files",
         str(TEXT / "dev.txt"), "--json", "--dtype", dtype, "--batch-size", "32"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="40 steps (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.steps = 40
    need_text()
    common = [
        "--config", "tiny",
        "--tokenizer", str(ROOT / "checkpoints" / "tinystories-demo" / "tokenizer"),
        "--data-files", str(TEXT / "train.txt"),
        "--set", f"train.max_steps={args.steps}", "--set", f"train.eval_every={args.steps}",
        "--set", f"train.save_every={args.steps}", "--set", "train.sample_tokens=0",
    ]  # fmt: skip
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("float32", BEFORE), ("as shipped", [])):
            print(f"{name}: training ...", file=sys.stderr)
            w = train(name, [*common, *extra], Path(tmp) / name.replace(" ", "-"))
            if w.returncode:
                sys.exit(f"{name} failed; see {Path(tmp) / name}.log")
            rows[name] = {
                "speed": w.speed,
                "dev_fp32_eval": score(Path(tmp) / name.replace(" ", "-"), "float32"),
            }
            if name == "as shipped":
                rows[name]["dev_auto_eval"] = score(Path(tmp) / "as-shipped", "auto")
    a, b = rows["float32"]["dev_fp32_eval"]["bpb"], rows["as shipped"]["dev_fp32_eval"]["bpb"]
    out = {
        "bench": "bf16_quality", "cpu": cpu_name(), "cores": os.cpu_count(),
        "steps": args.steps, "runs": rows, "difference_bpb": b - a,
        "headline": [{"what": f"tiny, {args.steps} steps: dev.txt bits/byte, as shipped vs "
                              "float32 training", "value": f"{b:.4f} vs {a:.4f} ({b - a:+.4f})",
                      "target": "within 0.01", "ok": abs(b - a) <= 0.01}],
    }  # fmt: skip
    print(f"tiny, {args.steps} steps, dev.txt bits/byte ({out['cpu']})")
    for name, r in rows.items():
        extra = r.get("dev_auto_eval")
        print(f"  {name:11} {r['dev_fp32_eval']['bpb']:.4f} (float32 eval)"
              + (f", {extra['bpb']:.4f} ({extra['dtype']} eval)" if extra else "")
              + f"  [{r['speed']}]")  # fmt: skip
    print(f"  difference {b - a:+.4f} (target: within 0.01)")
    dest = ROOT / "bench" / "results" / ("bf16_quality.json" if not args.quick else
                                          "bf16_quality.quick.tmp")  # fmt: skip
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
