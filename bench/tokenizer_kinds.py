"""Benchmark: every tokenizer kind on the same text; `bytelevel-bpe` beside `sentencepiece-bpe`.

Cases, each in its own child process (peak memory per case, from getrusage):
  <kind>-train      train.txt (the shared text, 6 MB): sentencepiece-bpe, sentencepiece-unigram
                    and bytelevel-bpe at vocab 4096; byte and gpt2 (nothing to train: gpt2 is
                    GPT-2's vocabulary, from --gpt2-vocab or ../shared/data/gpt2/encoder.json,
                    else tiktoken's download)
  <kind>-big        sentencepiece-bpe and bytelevel-bpe at 4096 on a big corpus made from the
                    shared text (train.txt + train-extra.txt, its stories shuffled and repeated
                    until --size-mb is reached; written to a temporary folder, never kept)
Quality: UTF-8 bytes per token on valid.txt and dev.txt (never trained on), each story
round-tripped exactly. Training time is the `train_tokenizer` call (reading the corpus
included); peak memory is the child's maximum RSS.

    .venv/bin/python bench/tokenizer_kinds.py                 # 1 GB corpus: see the README
    .venv/bin/python bench/tokenizer_kinds.py --quick         # a 50 MB corpus
    .venv/bin/python bench/tokenizer_kinds.py --size-mb 200

Writes bench/results/tokenizer_kinds.json (tokenizer_kinds-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _synth import REPO, tinystories_dir

GPT2_VOCAB = REPO.parent / "shared" / "data" / "gpt2" / "encoder.json"


def child(kind: str, corpus: str, out: str, vocab_file: str) -> dict:
    from slm_tui.corpus import corpus_source, iter_stories
    from slm_tui.tokenizers import train_tokenizer

    options = {"vocab_file": vocab_file} if kind == "gpt2" and vocab_file else {}
    stories = iter_stories(corpus_source(data_files=[corpus]))
    t0 = time.perf_counter()
    tok = train_tokenizer(kind, stories, 4096, out, **options)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
    result = {"seconds": seconds, "peak_mb": peak, "vocab_size": tok.vocab_size}
    for name in ("valid", "dev"):
        path = tinystories_dir() / f"{name}.txt"
        if not path.is_file():
            continue
        held_out = list(iter_stories(corpus_source(data_files=[str(path)])))
        ids = tok.encode_batch(held_out)
        assert all(tok.decode(i) == s for i, s in zip(ids, held_out, strict=True))
        nbytes = sum(len(s.encode()) for s in held_out)
        result[f"{name}_bytes_per_token"] = nbytes / sum(len(i) for i in ids)
    return result


def write_big_corpus(path: Path, size_bytes: int, seed: int = 0) -> Path:
    """The shared training text's stories, shuffled and repeated up to `size_bytes`."""
    d = tinystories_dir()
    stories = []
    for name in ("train.txt", "train-extra.txt"):
        if (d / name).is_file():
            text = (d / name).read_text(encoding="utf-8")
            stories += [s.strip("\n") for s in text.split("\n<|endoftext|>\n") if s.strip()]
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            rng.shuffle(stories)
            for s in stories:
                block = s + "\n<|endoftext|>\n"
                f.write(block)
                written += len(block.encode("utf-8"))
                if written >= size_bytes:
                    break
    return path


def headline(report: dict) -> list[dict]:
    c = report["cases"]
    rows = []
    for size in ("train", "big"):
        a, b = c.get(f"sentencepiece-bpe-{size}"), c.get(f"bytelevel-bpe-{size}")
        if not (a and b):
            continue
        mb = a["corpus_mb"]
        rows.append({
            "what": f"bytelevel-bpe vs sentencepiece-bpe at 4096, trained on {mb:,.0f} MB: "
                    "bytes/token on valid.txt, seconds, peak MB",
            "value": f"{b['valid_bytes_per_token']:.3f} vs {a['valid_bytes_per_token']:.3f}; "
                     f"{b['seconds']:.1f} vs {a['seconds']:.1f} s; "
                     f"{b['peak_mb']:,.0f} vs {a['peak_mb']:,.0f} MB",
            "target": "report",
            "ok": None,
        })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 50 MB corpus instead of --size-mb")
    ap.add_argument("--size-mb", type=float, default=1000.0, help="the big corpus (default 1000)")
    ap.add_argument(
        "--gpt2-vocab",
        default=str(GPT2_VOCAB) if GPT2_VOCAB.is_file() else "",
        help="GPT-2's encoder.json (default: ../shared/data/gpt2; none: tiktoken)",
    )
    ap.add_argument("--workdir", help="where to put the big corpus (default: a temp dir)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
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
    size = 50e6 if args.quick else args.size_mb * 1e6
    results: dict[str, dict] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slm-bench-kinds-", dir=args.workdir) as work:
        w = Path(work)
        t0 = time.perf_counter()
        big = write_big_corpus(w / "big.txt", int(size))
        console.print(f"wrote a {size / 1e6:,.0f} MB corpus in {time.perf_counter() - t0:.0f} s")
        cases = [
            (f"{k}-train", k, d / "train.txt")
            for k in ("sentencepiece-bpe", "sentencepiece-unigram", "bytelevel-bpe", "byte", "gpt2")
        ]
        cases += [(f"{k}-big", k, big) for k in ("sentencepiece-bpe", "bytelevel-bpe")]
        for name, kind, path in cases:
            console.print(f"{name}: {path.stat().st_size / 1e6:,.0f} MB ...")
            proc = subprocess.run(
                [sys.executable, __file__, "--child", kind, str(path), str(w / name),
                 args.gpt2_vocab],
                capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                console.print(f"  failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(kind=kind, corpus_mb=path.stat().st_size / 1e6)
            results[name] = r
    table = Table(title=f"tokenizer kinds, vocab 4096 where trained ({os.cpu_count()} cores)")
    for col in ("case", "vocab", "corpus MB", "seconds", "peak MB", "B/tok valid", "B/tok dev"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['vocab_size']:,}", f"{r['corpus_mb']:,.0f}",
                      f"{r['seconds']:.1f}", f"{r['peak_mb']:,.0f}",
                      f"{r.get('valid_bytes_per_token', 0):.3f}",
                      f"{r.get('dev_bytes_per_token', 0):.3f}")  # fmt: skip
    Console(width=120).print(table)
    report = {
        "bench": "tokenizer_kinds",
        "quick": args.quick,
        "corpus_mb": size / 1e6,
        "cores": os.cpu_count(),
        "seconds_total": time.perf_counter() - t_all,
        "cases": results,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report["headline"] = headline(report)
    name = "tokenizer_kinds-quick.json" if args.quick else "tokenizer_kinds.json"
    out = REPO / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out} ({report['seconds_total']:.0f} s in all)")


if __name__ == "__main__":
    main()
