"""`make bench`: run every benchmark in bench/, then print one table of their headlines.

Each bench script compares two things side by side in one run, prints its own table and
writes `bench/results/<name>.json` with a `headline` list of
`{"what": str, "value": str, "target": str, "ok": bool | None}` rows. This runner calls them
one after another (they measure time, so never in parallel), then gathers the headlines.
GPU benchmarks skip themselves without a GPU and say so in their JSON.

    python bench/run_all.py            # the full run (tens of minutes on 2 cores)
    python bench/run_all.py --quick    # smaller inputs, for a smoke check
    python bench/run_all.py tokenizer generate   # only these
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _machine import cpu_name
from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ORDER = [
    "tokenizer",
    "shards",
    "train_cpu",
    "train_gpu",
    "generate",
    "decode_step",
    "tui_latency",
]


def scripts() -> list[str]:
    found = {
        p.stem for p in BENCH.glob("*.py") if p.stem != "run_all" and not p.stem.startswith("_")
    }
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument(
        "--table-only", action="store_true", help="print the table from existing results"
    )
    args = parser.parse_args()
    console = Console()
    names = args.names or scripts()
    unknown = sorted(set(names) - set(scripts()))
    if unknown:
        console.print(
            f"[red]error:[/] unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(scripts())}"
        )
        return 2
    failed: list[str] = []
    if not args.table_only:
        for name in names:
            cmd = [sys.executable, str(BENCH / f"{name}.py")] + (["--quick"] if args.quick else [])
            console.rule(f"[bold]{name}")
            t0 = time.perf_counter()
            rc = subprocess.call(cmd)
            console.print(f"[dim]{name}: exit {rc} in {time.perf_counter() - t0:.0f} s[/]")
            if rc != 0:
                failed.append(name)

    table = Table(title="slm-tui benchmarks (ratios from one run; see bench/results/*.json)")
    for col in ("bench", "what", "value", "target", "ok"):
        table.add_column(col, overflow="fold")
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            table.add_row(name, "no result", "", "", "[red]✗[/]")
            continue
        data = json.loads(path.read_text())
        rows = data.get("headline") or []
        if data.get("skipped"):
            table.add_row(name, f"skipped: {data.get('reason', '')}", "", "", "–")
            continue
        for i, row in enumerate(rows):
            ok = row.get("ok")
            mark = "[green]✓[/]" if ok is True else "[red]✗[/]" if ok is False else "–"
            table.add_row(
                name if i == 0 else "",
                str(row.get("what", "")),
                str(row.get("value", "")),
                str(row.get("target", "")),
                mark,
            )
    console.print(table)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    console.print(
        f"{now} · {platform.node()} · {cpu_name()} · "
        f"python {platform.python_version()} · `make bench{' ARGS=--quick' if args.quick else ''}`"
    )
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
