"""Real `slm-train model` runs for the benchmarks: started as subprocesses, watched through
their metrics.jsonl, stopped with SIGTERM once a target is met."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = Path(os.environ.get("SLM_TINYSTORIES_DIR", ROOT.parent / "shared" / "data" / "tinystories"))
SLM_TRAIN = Path(sys.executable).parent / "slm-train"
BEFORE = ["--set", "train.dtype=float32", "--set", "train.compile=false"]  # pre-issue-11 path


@dataclass
class Watched:
    """What a run did: (step, seconds since its start event, val bpb) at every evaluation."""

    name: str
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    reached: tuple[int, float, float] | None = None  # the first evaluation at the target
    speed: str = ""
    tokens_per_s: list[float] = field(default_factory=list)
    returncode: int | None = None
    stopped: bool = False  # stopped at the deadline


def need_text() -> None:
    if not (TEXT / "train.txt").is_file():
        sys.exit(f"real TinyStories text not found in {TEXT} (set SLM_TINYSTORIES_DIR)")


def train(name: str, args: list[str], output: Path, target: float | None = None,
          log: Path | None = None, deadline: float | None = None) -> Watched:  # fmt: skip
    """Run `slm-train model ARGS --output OUTPUT`; with `target`, stop it (SIGTERM) at the
    first evaluation whose bits per byte is at or under it; with `deadline`, once that many
    seconds have passed since its start. Seconds count from the run's start event (after
    tokenizer and shards), so cached shards do not favour a later run."""
    watched = Watched(name)
    metrics = output / "metrics.jsonl"
    err = open(log or output.with_suffix(".log"), "w")  # noqa: SIM115
    proc = subprocess.Popen([str(SLM_TRAIN), "model", *args, "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)  # fmt: skip
    started, seen = None, 0
    try:
        while True:
            done = proc.poll() is not None
            lines = metrics.read_text().splitlines() if metrics.is_file() else []
            for line in lines[seen:]:
                try:
                    rec = json.loads(line)
                except ValueError:
                    break  # a partial last line: read it again next time
                seen += 1
                if rec.get("kind") == "event" and rec.get("event") == "start":
                    started = time.perf_counter()
                elif rec.get("kind") == "train" and rec.get("tokens_per_s"):
                    watched.tokens_per_s.append(rec["tokens_per_s"])
                elif rec.get("kind") == "eval" and started is not None:
                    point = (rec["step"], time.perf_counter() - started, rec["val_bpb"])
                    watched.evals.append(point)
                    if target is not None and watched.reached is None and point[2] <= target:
                        watched.reached = point
                        proc.send_signal(signal.SIGTERM)
            if done:
                break
            late = deadline is not None and started is not None
            if late and time.perf_counter() - started > deadline and not watched.stopped:
                watched.stopped = True
                proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        err.close()
    watched.returncode = proc.returncode
    text = (log or output.with_suffix(".log")).read_text(errors="replace")
    watched.speed = next((ln[6:] for ln in text.splitlines() if ln.startswith("speed ")), "")
    return watched
