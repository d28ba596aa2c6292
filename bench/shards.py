"""Benchmark: token shard writing, against raw SentencePiece encoding and across worker counts.

Section `pipeline` (one process), each case in its own child process (so peak memory is per
case, from getrusage):
  raw-encode   the corpus already in memory as a list of stories, `SentencePieceProcessor
               .encode(stories, num_threads=cores)`, nothing else (the floor).
  shards       `prepare_shards` on the same file: read + split + encode_batch + write
               uint16 shards + fingerprint; overhead over raw must stay under 25%.
  shards-big   the same pipeline on a 10x larger corpus: peak memory must stay flat.
Section `workers` (`slm-train data --workers N` against `--workers 1`): a corpus of real
TinyStories text (../shared/data/tinystories train.txt + train-extra.txt, repeated, each pass
in a new shuffled story order, in a temp folder) written to shards by `--workers 1` and
`--workers N` (default: the CPU count) in alternating child processes (ABBA order), fastest
run of each kept; the shards must be byte-identical; peak memory is the largest sum of RSS
over the child and its workers (sampled every 20 ms), also on a corpus 10x smaller (flat).
MB/s counts UTF-8 bytes of story text. Writes bench/results/shards.json (a section run on its
own keeps the other's last results).

    .venv/bin/python bench/shards.py              # both: 50/500 MB; 1 GB (~10 min, 2 cores)
    .venv/bin/python bench/shards.py --quick             # 5/50 MB; 100 MB
    .venv/bin/python bench/shards.py workers --size-mb 100 --workers 2 --reps 2
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _machine import cpu_name
from _synth import REPO, tinystories_dir, write_corpus


def _hwm(pid: int) -> int:
    """A process's own peak RSS (VmHWM; unlike getrusage, not inherited across fork+exec)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_mb() -> float:
    # VmHWM, this process's own peak: getrusage's ru_maxrss starts a child at its parent's
    # peak (Linux carries it across fork/vfork + exec), so it read this driver's ~80-90 MB.
    hwm = _hwm(os.getpid())
    return hwm / 2**20 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


# ---- section `workers`: --workers 1 vs --workers N on real text ------------------------------


def real_corpus(path: Path, size_bytes: int, seed: int = 0) -> tuple[Path, str]:
    """TinyStories train.txt + train-extra.txt, repeated in shuffled story order until
    `size_bytes`; synthetic stories (bench/_synth.py) when that text is absent."""
    d = tinystories_dir()
    if d is None or not (d / "train-extra.txt").is_file():
        return write_corpus(path, size_bytes, seed), "synthetic (TinyStories text not found)"
    from slm_tui.corpus import corpus_source, iter_stories

    files = [str(d / "train.txt"), str(d / "train-extra.txt")]
    stories = list(iter_stories(corpus_source(data_files=files)))
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            rng.shuffle(stories)  # each pass in a new order
            for story in stories:
                text = story + "\n<|endoftext|>\n"
                f.write(text)
                written += len(text.encode("utf-8"))
                if written >= size_bytes:
                    break
    return path, f"TinyStories train.txt + train-extra.txt ({len(stories):,} stories), shuffled"


class RssSampler:
    """Peak of (this process + its children) resident memory, sampled on a thread: the
    largest sum seen at one moment, and the sum of each process's own peak (a bound)."""

    def __init__(self, every: float = 0.02) -> None:
        import psutil

        self.me, self.every, self.peak = psutil.Process(), every, 0
        self.hwm: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self.stop.is_set():
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that just ended
                    total += p.memory_info().rss
                    self.hwm[p.pid] = max(self.hwm.get(p.pid, 0), _hwm(p.pid))
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    @property
    def bound(self) -> int:
        return sum(self.hwm.values())

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def child_workers(workers: str, corpus: str, tok_dir: str, out: str, variant: str = "") -> dict:
    from slm_tui.corpus import corpus_source
    from slm_tui.shards import prepare_shards
    from slm_tui.tokenizers import load_tokenizer

    tok = load_tokenizer(tok_dir)
    if variant == "before":  # the encoder before the word cache: SentencePiece on whole
        tok._words = None  # stories, on its own threads (what --workers 1 did before)
    src = corpus_source(data_files=[corpus])
    c0, t0 = _cpu(), time.perf_counter()
    with RssSampler() as rss:
        shards = prepare_shards(src, tok, out, force=True, workers=int(workers))
    seconds = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined by now
    return {
        "seconds": seconds,
        "cpu_seconds": _cpu() - c0 + kids.ru_utime + kids.ru_stime,
        "bytes": shards.train.num_bytes + shards.val.num_bytes,
        "tokens": shards.train.num_tokens + shards.val.num_tokens,
        "peak_rss_sum_mb": rss.peak / 2**20,  # parent + workers at the same moment
        "peak_rss_bound_mb": rss.bound / 2**20,  # each process at its own peak, summed
        "peak_parent_mb": _peak_mb(),
    }


def same_shards(a: Path, b: Path) -> bool:
    """Byte-identical .bin files and equal sidecars but for the timing fields."""
    from slm_tui.shards import SIDECAR_CONTENT_FIELDS

    for split in ("train", "val"):
        if not filecmp.cmp(a / f"{split}.bin", b / f"{split}.bin", shallow=False):
            return False
        ma, mb = (json.loads((d / f"{split}.json").read_text()) for d in (a, b))
        if any(ma[k] != mb[k] for k in SIDECAR_CONTENT_FIELDS):
            return False
    return True


def workers_section(args: argparse.Namespace, console) -> dict:
    from slm_tui.shard_encoder import cpu_count
    from slm_tui.tokenizers import train_tokenizer

    n = args.workers or max(2, cpu_count())
    size = int((args.size_mb or (100 if args.quick else 1000)) * 1e6)
    reps = args.reps or (3 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="slm-bench-workers-", dir=args.workdir) as work:
        w = Path(work)
        console.print(f"writing a {size / 1e6:.0f} MB corpus (and one 10x smaller)...")
        corpus, what = real_corpus(w / "corpus.txt", size)
        small, _ = real_corpus(w / "small.txt", size // 10, seed=1)
        d = tinystories_dir()
        text = (d / "train.txt").read_text(encoding="utf-8") if d else small.read_text()
        stories = [t.strip() for t in text.split("<|endoftext|>")[:20000] if t.strip()]
        tok = train_tokenizer("sentencepiece-bpe", stories, 4096, w / "tok")
        load = [os.getloadavg()[0]]
        # ABBA: drift on a shared machine (others' jobs starting, stopping) hits both alike.
        order = [m for r in range(reps) for m in ((1, n) if r % 2 == 0 else (n, 1))]
        runs: dict[int, list[dict]] = {1: [], n: []}
        before = None
        if not args.no_before:
            console.print(f"--workers 1 without the word cache (before) on {size / 1e6:.0f} MB")
            before = run_child("workers", "1", str(corpus), str(tok.path), str(w / "w0"), "before")
            load.append(os.getloadavg()[0])
        for k in order:
            console.print(
                f"--workers {k} on {size / 1e6:.0f} MB (load {os.getloadavg()[0]:.2f})..."
            )
            r = run_child("workers", str(k), str(corpus), str(tok.path), str(w / f"w{k}"))
            runs[k].append(r)
            load.append(os.getloadavg()[0])
        identical = same_shards(w / "w1", w / f"w{n}")
        if before is not None:
            identical = identical and same_shards(w / "w1", w / "w0")
        console.print(f"--workers {n} on {size / 10e6:.0f} MB (memory flat?)...")
        flat = run_child("workers", str(n), str(small), str(tok.path), str(w / "small"))
    cases = {}
    for k, rs in runs.items():
        best = min(rs, key=lambda r: r["seconds"])
        cases[f"workers={k}"] = {
            **best,
            "workers": k,
            "corpus_mb": size / 1e6,
            "mb_per_s": best["bytes"] / 1e6 / best["seconds"],
            "runs": [round(r["seconds"], 2) for r in rs],
            "peak_rss_sum_mb": max(r["peak_rss_sum_mb"] for r in rs),
            "peak_rss_bound_mb": max(r["peak_rss_bound_mb"] for r in rs),
        }
    flat["mb_per_s"] = flat["bytes"] / 1e6 / flat["seconds"]
    if before is not None:
        before["mb_per_s"] = before["bytes"] / 1e6 / before["seconds"]
    one, many = cases["workers=1"], cases[f"workers={n}"]
    return {
        "corpus": what,
        "corpus_mb": size / 1e6,
        "cpu": cpu_name(),
        "cores": cpu_count(),
        "workers": n,
        "reps": reps,
        "load_average": [round(x, 2) for x in load],
        "cases": cases,
        "small_corpus": {**flat, "corpus_mb": size / 10e6},
        "before": {**before, "corpus_mb": size / 1e6} if before else None,
        "speedup": one["seconds"] / many["seconds"],
        "speedup_vs_before": before["seconds"] / many["seconds"] if before else None,
        "identical": identical,
        "peak_memory_ratio_vs_small": many["peak_rss_sum_mb"] / flat["peak_rss_sum_mb"],
    }


def print_workers(section: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"slm-train data --workers 1 vs --workers {section['workers']}: "
        f"{section['corpus_mb']:.0f} MB, {section['cpu']}, {section['cores']} cores "
        f"(best of {section['reps']}, ABBA)"
    )
    table = Table(title=title)
    cols = ("case", "runs s", "best s", "MB/s", "CPU s", "peak RSS MB, all procs", "bound")
    for col in cols:
        table.add_column(col, justify="right" if col != "case" else "left")
    rows = [
        *([("workers=1, before (no word cache)", section["before"])] if section["before"] else []),
        *section["cases"].items(),
        (f"workers={section['workers']}, {section['small_corpus']['corpus_mb']:.0f} MB",
         section["small_corpus"]),
    ]  # fmt: skip
    for name, r in rows:
        table.add_row(
            name,
            ", ".join(f"{x:.1f}" for x in r.get("runs", [r["seconds"]])),
            f"{r['seconds']:.1f}",
            f"{r['mb_per_s']:.2f}",
            f"{r['cpu_seconds']:.1f}",
            f"{r['peak_rss_sum_mb']:.0f}",
            f"{r['peak_rss_bound_mb']:.0f}",
        )
    Console(width=120).print(table)
    Console().print(
        "peak RSS: the largest sum over the child and its workers seen at once (sampled every "
        "20 ms); bound: the sum of each process's own peak (VmHWM)"
    )
    vs_before = section["speedup_vs_before"]
    Console().print(
        f"speedup x{section['speedup']:.2f} (target >= 1.7 on 2 cores)"
        + (f", x{vs_before:.2f} over --workers 1 before the word cache" if vs_before else "")
        + "; shards "
        f"{'byte-identical' if section['identical'] else 'DIFFERENT'}; peak memory vs a 10x "
        f"smaller corpus x{section['peak_memory_ratio_vs_small']:.2f}; load average during "
        f"the runs {section['load_average']}"
    )


# ---- the report ----------------------------------------------------------------------------


def headline(report: dict) -> list[dict]:
    """The rows `bench/run_all.py` prints, from this script's report."""
    rows = []
    if "cases" in report:
        rows += pipeline_headline(report)
    if "workers" in report:
        wk = report["workers"]
        n, cores = wk["workers"], wk["cores"]
        rows += [
            {
                "what": f"slm-train data --workers {n} vs 1, {wk['corpus_mb']:.0f} MB, "
                f"{cores} cores",
                "value": f"x{wk['speedup']:.2f} "
                f"({wk['cases'][f'workers={n}']['mb_per_s']:.1f} vs "
                f"{wk['cases']['workers=1']['mb_per_s']:.1f} MB/s)",
                "target": ">= 1.7x on 2 cores",
                "ok": wk["speedup"] >= 1.7 if cores == 2 else None,
            },
            *(
                [
                    {
                        "what": f"slm-train data --workers {n} vs --workers 1 before the word "
                        "cache",
                        "value": f"x{wk['speedup_vs_before']:.2f} "
                        f"({wk['before']['mb_per_s']:.1f} MB/s before)",
                        "target": "-",
                        "ok": None,
                    }
                ]
                if wk.get("before")
                else []
            ),
            {
                "what": f"--workers {n} shards byte-identical to --workers 1"
                + (" (and to before)" if wk.get("before") else ""),
                "value": "yes" if wk["identical"] else "no",
                "target": "yes",
                "ok": wk["identical"],
            },
            {
                "what": f"--workers {n} peak RSS (all processes), "
                f"{wk['small_corpus']['corpus_mb']:.0f} vs {wk['corpus_mb']:.0f} MB",
                "value": f"{wk['small_corpus']['peak_rss_sum_mb']:.0f} MB vs "
                f"{wk['cases'][f'workers={n}']['peak_rss_sum_mb']:.0f} MB "
                f"(x{wk['peak_memory_ratio_vs_small']:.2f})",
                "target": "flat (x <= 1.25)",
                "ok": wk["peak_memory_ratio_vs_small"] <= 1.25,
            },
        ]
    return rows


def pipeline_headline(report: dict) -> list[dict]:
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


def pipeline_section(args: argparse.Namespace, console) -> dict:
    from rich.console import Console
    from rich.table import Table

    from slm_tui.tokenizers import train_tokenizer

    small, big = (5_000_000, 50_000_000) if args.quick else (50_000_000, 500_000_000)
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
    return {
        "cases": results,
        "overhead_vs_raw_encode": overhead,
        "cpu_overhead_vs_raw_encode": cpu_overhead,
        "peak_memory_ratio_big_vs_small": mem_ratio,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "section", nargs="?", choices=("all", "pipeline", "workers"), default="all",
        help="what to run (default: both sections)",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="5/50 MB and 100 MB, not 50/500 and 1000")
    ap.add_argument("--size-mb", type=float, help="workers: corpus size (default 1000; quick 100)")
    ap.add_argument("--workers", type=int, help="workers: N to set against 1 (default: CPUs)")
    ap.add_argument("--reps", type=int, help="workers: runs of each (default 2; quick 3)")
    ap.add_argument(
        "--no-before", action="store_true", help="workers: skip the run without the word cache"
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help="where to put the corpora (default: a temp dir)")
    args = ap.parse_args()
    if args.child:
        if args.child[0] == "workers":
            print(json.dumps(child_workers(*args.child[1:])))
        else:
            print(json.dumps(child(*args.child)))
        return

    from rich.console import Console

    console = Console(stderr=True)
    out = REPO / "bench" / "results" / ("shards-quick.json" if args.quick else "shards.json")
    # A section run on its own keeps the other's last results (each says when it ran).
    report: dict = json.loads(out.read_text()) if out.is_file() else {}
    report.update(bench="shards", quick=args.quick, cores=os.cpu_count(), cpu=cpu_name())
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if args.section in ("all", "pipeline"):
        report.update(pipeline_section(args, console), created=now)
    if args.section in ("all", "workers"):
        report["workers"] = {**workers_section(args, console), "created": now}
        print_workers(report["workers"])
    report["headline"] = headline(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
