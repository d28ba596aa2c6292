"""What a run tells the outside world: the reporter hooks, metrics.jsonl and loss.png.

The library never prints. `train()` calls a `Reporter` (all hooks optional, default no-ops);
the CLI implements one with a rich live display. Every logged figure also goes, one JSON
object per line, to `<output>/metrics.jsonl` (`kind`: "train", "eval", "samples", "event").
`loss.png` (matplotlib, headless Agg backend) plots train and validation loss against
tokens seen; it is redrawn at each evaluation and at the end.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from slm_tui.fileio import atomic_write_bytes


class Reporter:
    """Hooks a training run calls on rank 0. Subclass and override what you need."""

    def on_message(self, text: str) -> None:
        """A one-line status: 'training tokenizer', 'resuming from step 200', ..."""

    def on_prepare(self, progress: dict[str, Any]) -> None:
        """Progress of tokenizer training / shard writing (the data layer's dicts)."""

    def on_start(self, info: dict[str, Any]) -> None:
        """The run begins: step, max_steps, params, device, tokens_per_step, config, ..."""

    def on_log(self, record: dict[str, Any]) -> None:
        """Every train.log_every steps: step, tokens, loss, lr, tokens_per_s, mfu, eta_s."""

    def on_eval(self, record: dict[str, Any]) -> None:
        """After each evaluation: step, tokens, val_loss, val_bpb."""

    def on_samples(self, step: int, samples: list[dict[str, str]]) -> None:
        """Sample continuations of train.sample_prompts: [{prompt, text}]."""

    def on_save(self, path: Path, kind: str) -> None:
        """A checkpoint was written (kind: 'latest' or 'best')."""


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; write them as null so every line parses everywhere.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Append-only metrics.jsonl, kept in memory too (for the plot and checkpoint copies)."""

    def __init__(self, path: Path, records: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = list(records or [])

    @classmethod
    def read(cls, path: Path) -> list[dict[str, Any]]:
        records = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line after kill -9: drop it
        return records

    def rewrite(self) -> None:
        """Write every record held in memory (used when resuming: drop steps after the save)."""
        atomic_write_bytes(self.path, self.to_bytes(), make_parents=True)

    def to_bytes(self) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in self.records).encode("utf-8")

    def append(self, record: dict[str, Any]) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def plot_loss(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Train and validation loss (nats/token) against tokens seen, written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    train = [
        (r["tokens"], r["loss"])
        for r in records
        if r.get("kind") == "train" and r.get("loss") is not None
    ]
    val = [
        (r["tokens"], r["val_loss"])
        for r in records
        if r.get("kind") == "eval" and r.get("val_loss") is not None
    ]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if train:
            ax.plot(*zip(*train, strict=True), label="train", linewidth=1.2)
        if val:
            ax.plot(*zip(*val, strict=True), label="validation", marker="o", linewidth=1.5)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats per token)")
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if train or val:
            ax.legend()
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        plt.close(fig)
