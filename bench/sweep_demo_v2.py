"""The demo model's second sweep (issue 12): 3x the data, every choice made on dev.txt.

Every run goes through the project's own commands, as a user would type them:

    slm-train tokenizer --data-files train.txt train-extra.txt --vocab-size 4096 \
        --output runs/sweep2/tokenizer
    slm-train model --config <preset> --tokenizer runs/sweep2/tokenizer \
        --data-files train.txt train-extra.txt --val-files dev.txt \
        --set train.max_steps=800 --set ... --output runs/sweep2/<name> --force
    slm-train eval --checkpoint runs/sweep2/<name> --data-files dev.txt --json

In-run validation and `best/` use dev.txt (`--val-files`), and the figure each row reports
is `slm-train eval` on all of dev.txt: these are validation figures, they guide the choice.
valid.txt is not read here (the final model is scored on it once, by its card's command).
Results merge into `bench/results/sweep_demo_v2.json` by run name (under a file lock), so
lanes can run side by side (`--threads 1` each):

    python bench/sweep_demo_v2.py --list
    python bench/sweep_demo_v2.py --threads 1 base d256 ... &
    python bench/sweep_demo_v2.py --table
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results" / "sweep_demo_v2.json"
BIN = Path(sys.executable).parent
TEXT = Path(os.environ.get("SLM_TINYSTORIES_DIR", REPO.parent / "shared" / "data" / "tinystories"))
TRAIN = [TEXT / "train.txt", TEXT / "train-extra.txt"]
DEV = TEXT / "dev.txt"

# 800 optimizer steps of 32 x 128 tokens = 3.28M tokens, ~0.76 epochs of the 4.3M-token
# corpus: every row the same budget unless it says otherwise.
STEPS = 800
COMMON = ["train.eval_every=200", "train.save_every=100000", "train.eval_batches=100",
          "train.sample_tokens=0", "train.warmup_steps=40"]  # fmt: skip

# name -> (preset, overrides, what it tests). Base: the v1 demo recipe (d192 x 6, Muon 0.02 +
# AdamW 2e-3, WSD with 20% decay, context 128, weight decay 0.1, no dropout).
RUNS: dict[str, tuple[str, list[str], str]] = {
    "base": ("tinystories-demo", [], "the v1 demo recipe (d192, 6 layers)"),
    "base-again": ("tinystories-demo", ["train.seed=7"], "the same, another seed: the noise"),
    "d256": (
        "tinystories-demo",
        ["model.d_model=256", "model.n_head=8"],
        "wider: d256, 6 layers (5.9M params)",
    ),
    "d224-l8": (
        "tinystories-demo",
        ["model.d_model=224", "model.n_head=7", "model.n_layer=8"],
        "deeper: d224, 8 layers (5.8M params)",
    ),
    "adamw": ("tinystories-demo", ["train.optimizer=adamw"], "AdamW for everything (no Muon)"),
    "muon-lr03": (
        "tinystories-demo",
        ["train.muon_lr=0.03", "train.lr=3e-3"],
        "higher lr: Muon 0.03, AdamW 3e-3",
    ),
    "decay40": ("tinystories-demo", ["train.decay_fraction=0.4"], "WSD decay over the last 40%"),
    "ctx256": (
        "tinystories-demo",
        ["model.context_length=256", "train.batch_size=16"],
        "context 256, 16 rows (same tokens a step)",
    ),
    "drop01": ("tinystories-demo", ["model.dropout=0.1"], "dropout 0.1"),
    "wd03": ("tinystories-demo", ["train.weight_decay=0.3"], "weight decay 0.3"),
}


def run(cmd: list[str], log: Path) -> subprocess.CompletedProcess:
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True)


@contextlib.contextmanager
def locked():
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with (RESULTS.parent / ".sweep_demo_v2.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}


def save(data: dict) -> None:
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(RESULTS)


def ensure_tokenizer(root: Path) -> Path:
    tok = root / "tokenizer"
    if not (tok / "tokenizer.json").is_file():
        cmd = [str(BIN / "slm-train"), "tokenizer", "--data-files", *map(str, TRAIN),
               "--vocab-size", "4096", "--output", str(tok), "--force"]  # fmt: skip
        if run(cmd, root / "tokenizer.log").returncode:
            raise SystemExit(f"tokenizer training failed; see {root / 'tokenizer.log'}")
    return tok


def one(name: str, root: Path, tok: Path, threads: int) -> dict:
    preset, overrides, what = RUNS[name]
    out, log = root / name, root / f"{name}.log"
    cmd = [str(BIN / "slm-train"), "model", "--config", preset, "--tokenizer", str(tok),
           "--data-files", *map(str, TRAIN), "--val-files", str(DEV), "--output", str(out),
           "--force"]  # fmt: skip
    for o in [f"train.max_steps={STEPS}", *COMMON, *overrides, f"train.threads={threads}"]:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    proc = run(cmd, log)
    wall = time.perf_counter() - t0
    rec = {"name": name, "preset": preset, "overrides": overrides, "what": what,
           "train_seconds": round(wall, 1), "threads": threads, "ok": proc.returncode == 0}  # fmt: skip
    if proc.returncode:
        return rec
    meta = json.loads((out / "latest" / "meta.json").read_text())
    rec.update(params=meta["params"], steps=meta["step"], tokens_seen=meta["tokens_seen"],
               train_loss=meta.get("train_loss"))  # fmt: skip
    ev = run([str(BIN / "slm-train"), "eval", "--checkpoint", str(out / "latest"),
              "--data-files", str(DEV), "--json"], log)  # fmt: skip
    if ev.returncode == 0:
        res = json.loads(ev.stdout)
        rec.update(dev_loss=res["loss"], dev_bpb=res["bpb"], dev_dtype=res["dtype"])
    return rec


def table(data: dict) -> Table:
    t = Table(title=f"demo sweep v2: dev.txt bits per byte after {STEPS} steps (lower is better)")
    for col in ("run", "what", "params", "tokens", "epochs", "wall", "train loss", "dev bpb"):
        t.add_column(col)
    corpus_tokens = data.get("corpus_tokens") or 1
    for r in sorted(data["runs"].values(), key=lambda r: r.get("dev_bpb") or 9):
        t.add_row(r["name"], r["what"], f"{r.get('params', 0) / 1e6:.2f}M",
                  f"{r.get('tokens_seen', 0) / 1e6:.2f}M",
                  f"{r.get('tokens_seen', 0) / corpus_tokens:.2f}",
                  f"{r['train_seconds'] / 60:.1f} min ({r['threads']} thr)",
                  f"{r['train_loss']:.3f}" if r.get("train_loss") else "-",
                  f"{r['dev_bpb']:.4f}" if "dev_bpb" in r else "failed")  # fmt: skip
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--quick", action="store_true", help="(make bench) print the table only")
    ap.add_argument("--root", default=str(REPO / "runs" / "sweep2"))
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    console = Console(width=160)
    if args.list:
        for name, (_preset, overrides, what) in RUNS.items():
            console.print(f"{name:12} {what}: {' '.join(overrides)}", highlight=False)
        return 0
    if args.table or args.quick or not args.names:
        console.print(table(load()))
        return 0
    if not all(p.is_file() for p in [*TRAIN, DEV]):
        console.print(f"error: TinyStories text not found in {TEXT}", markup=False)
        return 2
    unknown = [n for n in args.names if n not in RUNS]
    if unknown:
        console.print(f"error: unknown run {unknown[0]}; see --list", markup=False)
        return 2
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    with locked():
        tok = ensure_tokenizer(root)
    for name in args.names:
        console.print(f"{name}: {RUNS[name][2]}", highlight=False)
        rec = one(name, root, tok, args.threads)
        with locked():
            data = load()
            data["runs"][name] = rec
            # the corpus size, for the epochs column: the run's "training ..." line
            found = re.search(r"([\d,]+) train tokens", (root / f"{name}.log").read_text())
            if found:
                data["corpus_tokens"] = int(found.group(1).replace(",", ""))
            save(data)
        console.print(rec, highlight=False)
    console.print(table(load()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
