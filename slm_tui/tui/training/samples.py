"""The fixed-prompt samples of every evaluation, newest first: the same prompt read going
from noise to a story. Rebuilt only when a new evaluation's samples arrive; the text is the
model's, shown as it is (never markup)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from slm_tui.tui.training.stats import count

SHOWN = 50  # evaluations shown (the newest); older ones stay in metrics.jsonl


class TrainSamples(VerticalScroll):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shown = 0  # samples records drawn

    def compose(self) -> ComposeResult:
        yield Static(
            Content.styled("no samples yet: they come with each evaluation", "$text-muted")
        )

    def show(self, records: list[dict[str, Any]]) -> None:
        if len(records) == self.shown:
            return
        self.shown = len(records)
        parts: list = []
        for r in reversed(records[-SHOWN:]):
            step = r.get("step")
            step_text = f"{step:,}" if isinstance(step, int) else "?"
            head = f"step {step_text} · {count(r.get('tokens') or 0)} tokens"
            parts += ["\n" if parts else "", (head, "$text-accent bold")]
            for s in r.get("samples") or []:
                if not isinstance(s, dict):
                    continue
                text = " ".join(str(s.get("text", "")).split())  # one paragraph a sample
                space = " " if str(s.get("text", ""))[:1].isspace() else ""
                parts += ["\n", (str(s.get("prompt", "")), "bold"), space, text]
        self.query_one(Static).update(Content.assemble(*parts))
