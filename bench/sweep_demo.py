"""The demo model's sweep: which configuration reaches the lowest held-out bits per byte on
the shared TinyStories text, on this machine's CPU, in a bounded time.

Every run goes through the project's own commands, as a user would type them:

    slm-train tokenizer --data-files train.txt --vocab-size 4096 --output runs/sweep/tokenizer
    slm-train model --config <preset> --tokenizer runs/sweep/tokenizer --data-files train.txt \
        --set train.max_steps=400 --set ... --output runs/sweep/<name> --force
    slm-train eval --checkpoint runs/sweep/<name> --data-files valid.txt --json

`valid.txt` is never trained on: the in-run validation (used to keep `best/`) is the
trainer's own held-out slice of train.txt (every 200th story), and valid.txt is read once
per run, at the end, for the figure reported (`slm-train eval` at the model's own context
length, so a context-256 model is also *evaluated* with longer windows). Results are merged
into `bench/results/sweep_demo.json` by run name (under a file lock), so the sweep can be run
in parts and in parallel:

    python bench/sweep_demo.py --list
    python bench/sweep_demo.py --threads 1 seed-gpt d256-l6 ... &   # one lane per core
    python bench/sweep_demo.py --threads 1 demo-seedwall demo ...
    python bench/sweep_demo.py --add demo-final=runs/demo --what "..."  # a run made elsewhere
    python bench/sweep_demo.py --table               # print the table of what is there

How it was run (2026-11-24, 2-core VM): two lanes of one thread each, side by side (about 25%
more work than one 2-thread run on this machine); `seed-gpt` and `demo-seedwall` ran beside
each other, so their wall times and tokens/s are comparable; the other tokens/s figures
depend on what shared the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results" / "sweep_demo.json"
BIN = Path(sys.executable).parent


def data_dir() -> Path:
    env = os.environ.get("SLM_TINYSTORIES_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "tinystories"


# Every run gets the same budget unless it says otherwise: STEPS optimizer steps of 32 rows of
# 128 tokens (4,096 tokens a step), so 400 steps are 1.64M tokens, about 1.1 epochs of
# train.txt. The longer points (3-4 epochs) are the demo model's own runs (README). The
# default blocks are `tinystories-demo` (d192, 6 layers, RoPE/RMSNorm/SwiGLU).
STEPS = 400
COMMON = ["train.eval_every=200", "train.save_every=200", "train.grad_accum=4"]

# name -> (preset, overrides, what it tests). All use the same 4096-vocab BPE tokenizer.
RUNS: dict[str, tuple[str, list[str], str]] = {
    "demo": ("tinystories-demo", [], "the demo blocks: d192, 6 layers, lr 2e-3, cosine"),
    "tiny": ("tiny", [], "smaller: the tiny preset (d128, 4 layers, lr 3e-3)"),
    "d256-l6": (
        "tinystories-demo",
        ["model.d_model=256", "model.n_head=8", "train.lr=1.5e-3"],
        "bigger: d256, 6 layers (~6M parameters)",
    ),
    "demo-drop": ("tinystories-demo", ["model.dropout=0.1"], "dropout 0.1"),
    "demo-wd3": ("tinystories-demo", ["train.weight_decay=0.3"], "weight decay 0.3 (not 0.1)"),
    "demo-lr1e-3": ("tinystories-demo", ["train.lr=1e-3"], "peak lr 1e-3 (not 2e-3)"),
    "demo-ctx256": (
        "tinystories-demo",
        ["model.context_length=256", "train.batch_size=16"],
        "context 256, 16 rows (same tokens a step)",
    ),
    "demo-wsd": ("tinystories-demo", ["train.schedule=wsd"], "warmup-stable-decay schedule"),
    "demo-muon": (
        "tinystories-demo",
        ["train.optimizer=muon"],
        "Muon for the matrices, AdamW for the rest",
    ),
    "seed-gpt": (
        "seed-gpt",
        ["train.lr=1e-3", "train.warmup_steps=60"],
        "the seed's GPT-2 blocks and shape (d384; lr 1e-3, not its 1e-4)",
    ),
    "demo-seedwall": (
        "tinystories-demo",
        ["train.max_steps=1200"],
        "demo blocks for seed-gpt's wall time (run beside it): 3x the tokens",
    ),
}


def run(cmd: list[str], log: Path) -> subprocess.CompletedProcess:
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True)


def ensure_tokenizer(root: Path, train: Path, log: Path) -> Path:
    tok = root / "tokenizer"
    if not (tok / "tokenizer.json").is_file():
        cmd = [
            str(BIN / "slm-train"),
            "tokenizer",
            "--data-files",
            str(train),
            "--vocab-size",
            "4096",
            "--output",
            str(tok),
            "--force",
        ]
        if run(cmd, log).returncode != 0:
            raise SystemExit(f"tokenizer training failed; see {log}")
    return tok


@contextlib.contextmanager
def locked():
    """Several sweep processes (one per core) share the tokenizer and the results file."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with (RESULTS.parent / ".sweep_demo.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}


def save_results(data: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    best = min(
        (r for r in data["runs"].values() if r.get("bpb") is not None),
        key=lambda r: r["bpb"],
        default=None,
    )
    data["headline"] = (
        []
        if best is None
        else [
            {
                "what": f"best held-out bpb ({best['name']})",
                "value": f"{best['bpb']:.3f}",
                "target": "≤ 1.0 (aim 0.9)",
                "ok": best["bpb"] <= 1.0,
            },
        ]
    )
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(RESULTS)


def one(
    name: str, root: Path, tok: Path, train: Path, valid: Path, log: Path, threads: int
) -> dict:
    preset, overrides, what = RUNS[name]
    out = root / name
    cmd = [
        str(BIN / "slm-train"),
        "model",
        "--config",
        preset,
        "--tokenizer",
        str(tok),
        "--data-files",
        str(train),
        "--output",
        str(out),
        "--force",
    ]
    for o in [f"train.max_steps={STEPS}", *COMMON, *overrides, f"train.threads={threads}"]:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    proc = run(cmd, log)
    wall = time.perf_counter() - t0
    rec: dict = {
        "name": name,
        "preset": preset,
        "overrides": overrides,
        "what": what,
        "train_seconds": round(wall, 1),
        "threads": threads,
        "ok": proc.returncode == 0,
    }
    if proc.returncode != 0:
        return rec
    return measure(rec, out, valid, log, wall)


def measure(rec: dict, out: Path, valid: Path, log: Path, wall: float) -> dict:
    """Add a finished run's size, tokens and speed, and its valid.txt figures, to `rec`."""
    meta = json.loads((out / "best" / "meta.json").read_text())
    latest = json.loads((out / "latest" / "meta.json").read_text())
    rec.update(
        params=meta["params"],
        best_step=meta["step"],
        steps=latest["step"],
        tokens_seen=latest["tokens_seen"],
        tokens_per_s=round(latest["tokens_seen"] / wall, 1),
        inrun_val_bpb=meta.get("val_bpb"),
    )
    cmd = [str(BIN / "slm-train"), "eval", "--checkpoint", str(out)]
    ev = run([*cmd, "--data-files", str(valid), "--json"], log)
    if ev.returncode == 0:
        res = json.loads(ev.stdout)
        rec.update(loss=res["loss"], bpb=res["bpb"])
    return rec


def add_existing(name: str, out: Path, what: str, valid: Path, log: Path) -> dict:
    """Record a run trained outside the sweep (e.g. the demo itself, by its own command):
    its wall time is the trainer's elapsed time in metrics.jsonl (evaluations included)."""
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    wall = max(r.get("elapsed_s", 0.0) for r in records if r.get("kind") == "train")
    cfg = (out / "latest" / "config.yaml").read_text()
    rec: dict = {
        "name": name,
        "preset": "(run dir)",
        "overrides": [],
        "what": what,
        "train_seconds": round(wall, 1),
        "run_dir": str(out),
        "config": cfg,
        "ok": True,
    }
    return measure(rec, out, valid, log, wall)


def table(data: dict) -> Table:
    t = Table(title="demo sweep: held-out bits per byte on valid.txt (lower is better)")
    for col in ("run", "what", "params", "tokens", "tok/s", "time", "val loss", "bpb"):
        t.add_column(col)
    for r in sorted(data["runs"].values(), key=lambda r: r.get("bpb") or 9):
        t.add_row(
            r["name"],
            r["what"],
            f"{r.get('params', 0) / 1e6:.2f}M",
            f"{r.get('tokens_seen', 0) / 1e6:.2f}M",
            f"{r.get('tokens_per_s', 0):,.0f}",
            f"{r['train_seconds'] / 60:.1f} min",
            f"{r['loss']:.3f}" if "loss" in r else "-",
            f"{r['bpb']:.3f}" if "bpb" in r else "failed",
        )
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="runs to do (default: all)")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    parser.add_argument("--table", action="store_true", help="print the results table and exit")
    parser.add_argument("--root", default=str(REPO / "runs" / "sweep"), help="where runs go")
    parser.add_argument("--quick", action="store_true", help="(make bench) print the table only")
    parser.add_argument(
        "--add",
        metavar="NAME=DIR",
        help="record a run trained outside the sweep (its valid.txt figures), with --what",
    )
    parser.add_argument("--what", default="", help="description for --add")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads per run (0: one per core). Two sweeps with --threads 1 side by side "
        "do ~25%% more work on 2 cores than one with 2 threads",
    )
    args = parser.parse_args()
    console = Console()
    if args.list:
        for name, (preset, overrides, what) in RUNS.items():
            console.print(f"{name:16} {preset:9} {what}: {' '.join(overrides)}")
        return 0
    data = load_results()
    quiet = not args.names and not args.add and os.environ.get("SLM_SWEEP") != "1"
    if args.table or args.quick or quiet:
        # The whole sweep takes hours on 2 cores: `make bench` only reprints its table.
        with locked():  # a lane may be writing its result right now
            data = load_results()
            save_results(data)
        console.print(table(data))
        return 0
    d = data_dir()
    train, valid = d / "train.txt", d / "valid.txt"
    if not train.is_file() or not valid.is_file():
        console.print(f"[red]error:[/] TinyStories text not found in {d}")
        return 2
    if args.add:
        name, _, path = args.add.partition("=")
        if not name or not (Path(path) / "latest" / "meta.json").is_file():
            console.print(f"[red]error:[/] --add wants NAME=RUN_DIR, got {args.add!r}")
            return 2
        Path(args.root).mkdir(parents=True, exist_ok=True)
        log = Path(args.root) / f"{name}.log"
        rec = add_existing(name, Path(path).resolve(), args.what, valid, log)
        with locked():
            data = load_results()
            data["runs"][name] = rec
            save_results(data)
        console.print(table(data))
        return 0
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    names = args.names or list(RUNS)
    for name in names:
        if name not in RUNS:
            console.print(f"[red]error:[/] unknown run {name}; see --list")
            return 2
    with locked():
        tok = ensure_tokenizer(root, train, root / "tokenizer.log")
    for name in names:
        console.print(f"[bold]{name}[/]: {RUNS[name][2]}")
        rec = one(name, root, tok, train, valid, root / f"{name}.log", args.threads)
        with locked():
            data = load_results()
            data["runs"][name] = rec
            save_results(data)
        console.print(rec)
    console.print(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
