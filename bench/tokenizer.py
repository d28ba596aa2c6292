"""Benchmark: tokenizer quality, training time and peak memory, real text vs a 500 MB corpus.

Cases, each in its own child process (peak memory per case, from getrusage):
  bpe-tinystories      4096-vocab sentencepiece-bpe on ../shared/data/tinystories/train.txt
  unigram-tinystories  the same with sentencepiece-unigram, for comparison
  bpe-synthetic        4096-vocab sentencepiece-bpe on a synthetic corpus of >= 500 MB made of
                       real TinyStories sentences; training samples at most `max_sentences`
                       lines, so peak memory must stay under 2 GB
Quality: UTF-8 bytes per token on valid.txt (never trained on); target >= 3.9 for BPE.
Writes bench/results/tokenizer.json (tokenizer-quick.json with --quick: a 50 MB corpus).

    .venv/bin/python bench/tokenizer.py            # several minutes on 2 cores
    .venv/bin/python bench/tokenizer.py --quick
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


def child(kind: str, corpus: str, out: str) -> dict:
    from slm_tui.corpus import corpus_source, iter_stories
    from slm_tui.tokenizers import train_tokenizer

    t0 = time.perf_counter()
    tok = train_tokenizer(kind, iter_stories(corpus_source(data_files=[corpus])), 4096, out)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
    valid = tinystories_dir() / "valid.txt"
    stories = list(iter_stories(corpus_source(data_files=[str(valid)])))
    tokens = sum(len(ids) for ids in tok.encode_batch(stories))
    nbytes = sum(len(s.encode()) for s in stories)
    assert all(tok.decode(tok.encode(s)) == s for s in stories)
    return {
        "seconds": seconds,
        "peak_mb": peak,
        "valid_bytes_per_token": nbytes / tokens,
        "training_lines": tok.options.get("training_lines"),
        "max_sentences": tok.options.get("max_sentences"),
    }


def headline(report: dict) -> list[dict]:
    """The rows `bench/run_all.py` prints, from this script's report."""
    cases = report["cases"]
    bpt = cases["bpe-tinystories"]["valid_bytes_per_token"]
    big = cases["bpe-synthetic"]
    return [
        {
            "what": "BPE 4096 trained on train.txt: bytes/token on valid.txt",
            "value": f"{bpt:.3f}",
            "target": ">= 3.9",
            "ok": bpt >= 3.9,
        },
        {
            "what": f"peak memory training on the {big['corpus_mb']:.0f} MB corpus",
            "value": f"{big['peak_mb']:.0f} MB",
            "target": "< 2048 MB",
            "ok": big["peak_mb"] < 2048,
        },
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 50 MB synthetic corpus, not 500 MB")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help="where to put the synthetic corpus (default: a temp dir)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    d = tinystories_dir()
    if d is None:
        sys.exit("needs ../shared/data/tinystories (or $SLM_TINYSTORIES_DIR)")
    size = 50_000_000 if args.quick else 500_000_000
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="slm-bench-", dir=args.workdir) as work:
        w = Path(work)
        console.print(f"writing a {size / 1e6:.0f} MB synthetic corpus...")
        synth = write_corpus(w / "synthetic.txt", size)
        cases = [
            ("bpe-tinystories", "sentencepiece-bpe", d / "train.txt"),
            ("unigram-tinystories", "sentencepiece-unigram", d / "train.txt"),
            ("bpe-synthetic", "sentencepiece-bpe", synth),
        ]
        for name, kind, path in cases:
            console.print(f"training {name} on {path.stat().st_size / 1e6:.0f} MB...")
            proc = subprocess.run(
                [sys.executable, __file__, "--child", kind, str(path), str(w / name)],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["corpus_mb"] = path.stat().st_size / 1e6
            results[name] = r

    table = Table(title=f"tokenizer training, vocab 4096 ({os.cpu_count()} cores)")
    for col in (
        "case",
        "corpus MB",
        "lines in corpus",
        "seconds",
        "peak RSS MB",
        "bytes/token (valid)",
    ):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['corpus_mb']:.0f}", f"{r['training_lines']:,}",
                      f"{r['seconds']:.1f}", f"{r['peak_mb']:.0f}",
                      f"{r['valid_bytes_per_token']:.3f}")  # fmt: skip
    Console(width=110).print(table)
    bpe = results["bpe-tinystories"]["valid_bytes_per_token"]
    peak = results["bpe-synthetic"]["peak_mb"]
    Console().print(
        f"BPE on train.txt: {bpe:.3f} bytes/token on valid.txt (target >= 3.9); "
        f"peak memory on the {size / 1e6:.0f} MB corpus: {peak:.0f} MB (target < 2048)"
    )
    report = {
        "bench": "tokenizer",
        "quick": args.quick,
        "cores": os.cpu_count(),
        "cases": results,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report["headline"] = headline(report)
    out = REPO / "bench" / "results" / ("tokenizer-quick.json" if args.quick else "tokenizer.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
