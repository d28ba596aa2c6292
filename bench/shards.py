"""Benchmark: token shard writing vs raw SentencePiece encoding of the same text.

Cases, each in its own child process (so peak memory is per case, from getrusage):
  raw-encode   the corpus already in memory as a list of stories, `SentencePieceProcessor
               .encode(stories, num_threads=cores)`, nothing else (the floor).
  shards       `prepare_shards` on the same file: read + split + encode_batch + write
               uint16 shards + fingerprint; overhead over raw must stay under 25%.
  shards-big   the same pipeline on a 10x larger corpus: peak memory must stay flat.
MB/s counts UTF-8 bytes of story text. Writes bench/results/shards.json.

    .venv/bin/python bench/shards.py            # 50 MB vs 500 MB (a few minutes on 2 cores)
    .venv/bin/python bench/shards.py --quick    # 5 MB vs 50 MB
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _synth import REPO, tinystories_dir, write_corpus


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu() -> float:
    # CPU seconds of this process, all threads: less sensitive than wall time to other
    # work on a shared machine.
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(case: str, corpus: str, tok_dir: str, work: str) -> dict:
    from slm_tui.corpus import corpus_source, iter_stories
    from slm_tui.shards import prepare_shards
    from slm_tui.tokenizers import load_tokenizer

    tok = load_tokenizer(tok_dir)
    src = corpus_source(data_files=[corpus])
    if case == "raw-encode":
        stories = list(iter_stories(src))
        nbytes = sum(len(s.encode()) for s in stories)
        base = _peak_mb()
        c0, t0 = _cpu(), time.perf_counter()
        ids = tok._sp.encode(stories, num_threads=os.cpu_count())
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        tokens = sum(map(len, ids)) + 2 * len(stories)  # + BOS/EOS, as the shards count
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "bytes": nbytes,
            "tokens": tokens,
            "peak_mb": _peak_mb(),
            "peak_before_encode_mb": base,
        }
    c0, t0 = _cpu(), time.perf_counter()
    shards = prepare_shards(src, tok, Path(work) / case, force=True)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    nbytes = shards.train.num_bytes + shards.val.num_bytes
    tokens = shards.train.num_tokens + shards.val.num_tokens
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bytes": nbytes,
        "tokens": tokens,
        "peak_mb": _peak_mb(),
    }


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def headline(report: dict) -> list[dict]:
    """The rows `bench/run_all.py` prints, from this script's report."""
    cases = report["cases"]
    small, big = cases["shards"], cases["shards-big"]
    overhead, cpu = report["overhead_vs_raw_encode"], report["cpu_overhead_vs_raw_encode"]
    ratio = report["peak_memory_ratio_big_vs_small"]
    return [
        {
            "what": "shard pipeline overhead over raw sentencepiece encode",
            "value": f"{overhead * 100:+.1f}% wall ({cpu * 100:+.1f}% CPU)",
            "target": "< 25%",
            "ok": overhead < 0.25,
        },
        {
            "what": f"peak memory, {small['corpus_mb']:.0f} MB vs {big['corpus_mb']:.0f} MB corpus",
            "value": f"{small['peak_mb']:.0f} MB vs {big['peak_mb']:.0f} MB (x{ratio:.2f})",
            "target": "flat (x <= 1.25)",
            "ok": ratio <= 1.25,
        },
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 MB vs 50 MB instead of 50 vs 500")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help="where to put the synthetic corpora (default: a temp dir)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    from rich.console import Console
    from rich.table import Table

    from slm_tui.tokenizers import train_tokenizer

    small, big = (5_000_000, 50_000_000) if args.quick else (50_000_000, 500_000_000)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="slm-bench-", dir=args.workdir) as work:
        w = Path(work)
        console.print(f"writing synthetic corpora ({small / 1e6:.0f} MB, {big / 1e6:.0f} MB)...")
        small_path = write_corpus(w / "small.txt", small)
        big_path = write_corpus(w / "big.txt", big)
        d = tinystories_dir()
        tok_src = (d / "train.txt").read_text(encoding="utf-8") if d else small_path.read_text()
        stories = [s.strip() for s in tok_src.split("<|endoftext|>")[:20000] if s.strip()]
        tok = train_tokenizer("sentencepiece-bpe", stories, 4096, w / "tok")
        # Other work on a shared machine adds noise: the two small cases alternate,
        # `reps` times, and the fastest run of each is kept (peak memory: the largest).
        reps = 5 if args.quick else 3
        results: dict[str, dict] = {}
        plan = [("raw-encode", small_path), ("shards", small_path)] * reps
        plan.append(("shards-big", big_path))
        for name, path in plan:
            console.print(f"running {name} on {path.stat().st_size / 1e6:.0f} MB...")
            r = run_child(name, str(path), str(tok.path), work)
            r["mb_per_s"] = r["bytes"] / 1e6 / r["seconds"]
            r["corpus_mb"] = path.stat().st_size / 1e6
            prev = results.get(name)
            r["runs"] = [*(prev["runs"] if prev else []), round(r["seconds"], 3)]
            if prev is not None:
                r["peak_mb"] = max(r["peak_mb"], prev["peak_mb"])
                r["cpu_seconds"] = min(r["cpu_seconds"], prev["cpu_seconds"])
                if prev["seconds"] < r["seconds"]:
                    r = {
                        **prev,
                        "runs": r["runs"],
                        "peak_mb": r["peak_mb"],
                        "cpu_seconds": r["cpu_seconds"],
                    }
            results[name] = r

    overhead = results["shards"]["seconds"] / results["raw-encode"]["seconds"] - 1
    cpu_overhead = results["shards"]["cpu_seconds"] / results["raw-encode"]["cpu_seconds"] - 1
    mem_ratio = results["shards-big"]["peak_mb"] / results["shards"]["peak_mb"]
    title = f"token shards vs raw SentencePiece encode ({os.cpu_count()} cores, best of runs)"
    table = Table(title=title)
    for col in ("case", "corpus MB", "seconds", "CPU s", "MB/s", "tokens", "peak RSS MB"):
        table.add_column(col, justify="right" if col != "case" else "left")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['corpus_mb']:.0f}",
            f"{r['seconds']:.1f}",
            f"{r['cpu_seconds']:.1f}",
            f"{r['mb_per_s']:.2f}",
            f"{r['tokens']:,}",
            f"{r['peak_mb']:.0f}",
        )
    Console(width=110).print(table)
    Console().print(
        f"pipeline overhead over raw encode: {overhead * 100:+.1f}% wall, "
        f"{cpu_overhead * 100:+.1f}% CPU (target < 25%); "
        f"peak memory {results['shards']['corpus_mb']:.0f} MB -> "
        f"{results['shards-big']['corpus_mb']:.0f} MB corpus: x{mem_ratio:.2f}"
    )
    report = {
        "bench": "shards",
        "quick": args.quick,
        "cores": os.cpu_count(),
        "cases": results,
        "overhead_vs_raw_encode": overhead,
        "cpu_overhead_vs_raw_encode": cpu_overhead,
        "peak_memory_ratio_big_vs_small": mem_ratio,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report["headline"] = headline(report)
    out = REPO / "bench" / "results" / ("shards-quick.json" if args.quick else "shards.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
