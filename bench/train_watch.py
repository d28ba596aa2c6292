"""How fast the Train screen opens a long run: a metrics.jsonl of 100,000 rows (train records
in the trainer's exact line format, an evaluation with its samples every 1,000 steps).

1. Read: `RunWatch.poll()` over the whole file (read, parse, fold into the downsampled
   curve, the evaluations and the samples), best of N.
2. Open: the Train screen pushed in a real app (Pilot, headless, 120x36) until the first
   frame that draws the chart with the whole curve: the benchmark wraps the chart's
   `render_line` (Textual's public line API, as bench/tui_latency.py does) and stamps the
   first call once the data is in. Best of N.

Target: under 1 s to open. Run: `.venv/bin/python bench/train_watch.py [--rows N] [--quick]`;
prints a table and writes bench/results/train_watch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _machine import cpu_name  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from slm_tui.tui.training.watch import RunWatch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ["Once upon a time", "The little dog", "Lily wanted to"]


def write_metrics(path: Path, rows: int, eval_every: int = 1000) -> int:
    """A finished run of `rows` lines in the trainer's format; returns its size in bytes."""
    lines = [{"kind": "event", "event": "start", "step": 0, "tokens": 0, "max_steps": rows}]
    step = 0
    while len(lines) < rows:
        step += 1
        tokens = step * 4096
        loss = 2.0 + 6.0 * math.exp(-step / 3000) + 0.05 * math.sin(step)
        lines.append(
            {
                "kind": "train",
                "step": step,
                "tokens": tokens,
                "loss": loss,
                "lr": 3e-4,
                "tokens_per_s": 12288.0 + step % 97,
                "elapsed_s": step / 3.0,
                "eta_s": (rows - step) / 3.0,
            }
        )
        if step % eval_every == 0:
            lines.append({"kind": "eval", "step": step, "tokens": tokens, "val_loss": loss + 0.1,
                          "val_bpb": (loss + 0.1) / 2.7, "val_tokens": 40960})  # fmt: skip
            samples = [{"prompt": p, "text": " there was a little girl named Lily." * 3}
                       for p in PROMPTS]  # fmt: skip
            lines.append({"kind": "samples", "step": step, "tokens": tokens, "samples": samples})
    data = "".join(json.dumps(x) + "\n" for x in lines[:rows])
    path.write_text(data)
    return len(data.encode())


def read_once(folder: Path) -> tuple[float, RunWatch]:
    watch = RunWatch(folder)
    t = time.perf_counter()
    while watch.poll() - {"reset"}:  # a huge file arrives over several polls
        pass
    return time.perf_counter() - t, watch


async def open_once(folder: Path) -> float:
    from slm_tui.tui.app import SlmApp
    from slm_tui.tui.training.chart import LossChart
    from slm_tui.tui.training.screen import TrainScreen

    stamp: dict[str, float | None] = {"t": None}
    original = LossChart.render_line

    def render_line(self, y: int):
        if stamp["t"] is None and self.train[0]:
            stamp["t"] = time.perf_counter()
        return original(self, y)

    app = SlmApp(rescan=False, demo=False, device="cpu", checkpoints_dir=folder / "none")
    LossChart.render_line = render_line  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause(0.2)
            app.training.watch_folder(folder)
            t0 = time.perf_counter()
            app.action_train()
            while stamp["t"] is None and time.perf_counter() - t0 < 30:
                await asyncio.sleep(0.001)
            assert isinstance(app.screen, TrainScreen)
            return (stamp["t"] or math.inf) - t0
    finally:
        LossChart.render_line = original  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20,000 rows, one repeat")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats = 20_000, 1
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SLM_TUI_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["SLM_TUI_CONFIG_DIR"] = str(Path(tmp) / "config")
        folder = Path(tmp) / "run"
        folder.mkdir()
        size = write_metrics(folder / "metrics.jsonl", args.rows)
        reads = []
        for _ in range(args.repeats):
            seconds, watch = read_once(folder)
            reads.append(seconds)
        opens = [asyncio.run(open_once(folder)) for _ in range(args.repeats)]
    h = watch.history
    summary = {
        "rows": args.rows,
        "bytes": size,
        "read_s": min(reads),
        "open_s": min(opens),
        "runs": {"read_s": reads, "open_s": opens},
        "curve_points": len(h.train.points()[0]),
        "evaluations": len(h.evals),
        "config": {"cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    summary["headline"] = [
        {
            "what": f"Train screen opens a {args.rows:,}-row metrics.jsonl",
            "value": f"{summary['open_s'] * 1000:.0f} ms (read + fold {summary['read_s'] * 1000:.0f} ms)",
            "target": "< 1 s",
            "ok": summary["open_s"] < 1.0,
        }
    ]
    table = Table(title=f"Train screen on a {args.rows:,}-row run, {cpu_name()}")
    table.add_column("measure")
    table.add_column("best", justify="right")
    table.add_column("target", justify="right")
    table.add_row(
        f"read + fold {size / 1e6:.1f} MB (RunWatch.poll)", f"{min(reads) * 1000:.0f} ms", ""
    )
    table.add_row("push → first chart frame", f"{min(opens) * 1000:.0f} ms", "< 1 s")
    table.add_row("curve points drawn", f"{summary['curve_points']}", "≤ 800")
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("train_watch-quick.json" if args.quick else "train_watch.json")
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
