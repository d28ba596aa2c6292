"""Synthetic TinyStories-like corpora of any size, for the tokenizer and shard benchmarks.

Stories are random sequences of real sentences drawn from ../shared/data/tinystories/train.txt
(or from a small built-in word list when that text is absent), with paragraph breaks, written
in the TinyStories dump format (a line `<|endoftext|>` after each story). Streamed to disk:
generating 500 MB needs a few MB of memory. Deterministic for a given size and seed.
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def tinystories_dir() -> Path | None:
    env = os.environ.get("SLM_TINYSTORIES_DIR")
    for c in [Path(env)] if env else [REPO.parent / "shared" / "data" / "tinystories"]:
        if (c / "train.txt").is_file() and (c / "valid.txt").is_file():
            return c
    return None


def _sentences() -> list[str]:
    d = tinystories_dir()
    if d is not None:
        text = (d / "train.txt").read_text(encoding="utf-8").replace("<|endoftext|>", " ")
        return [s for s in re.split(r"(?<=[.!?])\s+", text) if 10 < len(s) < 300]
    words = [
        "once",
        "upon",
        "a",
        "time",
        "there",
        "was",
        "a",
        "little",
        "girl",
        "named",
        "lily",
        "who",
        "loved",
        "her",
        "big",
        "red",
        "ball",
    ]
    rng = random.Random(1)
    return [" ".join(rng.choices(words, k=9)).capitalize() + "." for _ in range(5000)]


def write_corpus(path: Path, size_bytes: int, seed: int = 0) -> Path:
    """Write at least `size_bytes` of synthetic stories to `path` (reused if already there)."""
    if path.is_file() and path.stat().st_size >= size_bytes:
        return path
    pool = _sentences()
    rng = random.Random(seed)
    written = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        while written < size_bytes:
            chunk = []
            for _ in range(1000):
                paras = [
                    " ".join(rng.choices(pool, k=rng.randint(2, 5)))
                    for _ in range(rng.randint(1, 4))
                ]
                chunk.append("\n\n".join(paras) + "\n<|endoftext|>\n")
            data = "".join(chunk)
            f.write(data)
            written += len(data.encode("utf-8"))
    os.replace(tmp, path)
    return path
