"""Held-out evaluations recorded in a checkpoint's meta.json (`slm-train eval --record`).

`meta.json` may carry `"evaluations": [...]`, one object per corpus (a corpus re-scored
replaces its old entry): the corpus's short name and description, the sha256 fingerprint of
its contents, bits per byte, loss, tokens, the dtype it was computed in and the date. These
are the figures the TUI card, the picker, `slm-generate --format jsonl` and the model card
show as the model's quality, each with its corpus; the in-run validation figure
(`val_bpb`) is labelled as such and shown only where no recorded one exists.

Torch-free; read from files anyone may have written, so a malformed entry is skipped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from slm_tui.untrusted import finite_or_none


@dataclass(frozen=True)
class RecordedEval:
    name: str  # short: "valid.txt", "roneneldan/TinyStories:validation"
    corpus: str  # what `slm-train eval` scored, in full
    fingerprint: str  # sha256 of the corpus's contents (or the dataset id and split)
    bpb: float
    loss: float
    tokens: int
    dtype: str
    date: str  # YYYY-MM-DD

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """'0.920 bpb on valid.txt'."""
        return f"{self.bpb:.3f} bpb on {self.name}"


def recorded_evals(meta: dict[str, Any]) -> tuple[RecordedEval, ...]:
    """The well-formed entries of meta.json's `evaluations` (others are skipped)."""
    out = []
    entries = meta.get("evaluations")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        bpb, loss = finite_or_none(entry.get("bpb")), finite_or_none(entry.get("loss"))
        tokens = entry.get("tokens")
        texts = [entry.get(k) for k in ("name", "corpus", "fingerprint", "dtype", "date")]
        if bpb is None or loss is None or not all(isinstance(t, str) for t in texts):
            continue
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            continue
        name, corpus, fingerprint, dtype, date = (t[:200] for t in texts)  # type: ignore[index]
        out.append(RecordedEval(name, corpus, fingerprint, bpb, loss, tokens, dtype, date))
    return tuple(out)


def with_recorded(meta: dict[str, Any], entry: RecordedEval) -> dict[str, Any]:
    """A copy of `meta` with `entry` recorded (replacing any entry for the same corpus)."""
    kept = [
        e
        for e in meta.get("evaluations") or []
        if isinstance(e, dict) and e.get("fingerprint") != entry.fingerprint
    ]
    return {**meta, "evaluations": [*kept, entry.as_json()]}


def quality_line(evals: tuple[RecordedEval, ...], in_run_bpb: float | None) -> str:
    """How good the model is, honestly: its recorded held-out figures, else the in-run
    validation figure said to be one; '' when there is neither."""
    if evals:
        return " · ".join(e.label() for e in evals)
    if in_run_bpb is not None and math.isfinite(in_run_bpb):
        return f"{in_run_bpb:.3f} bpb in-run validation"
    return ""
