"""The fixed-prompt samples of every evaluation, newest first: the same prompt read going
from noise to a story. Rebuilt only when a new evaluation's samples arrive; the text is the
model's, shown as it is (never markup)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from slm_tui.trainer.report import SamplesRecord
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

    def show(self, records: list[SamplesRecord]) -> None:
        if len(records) == self.shown:
            return
        self.shown = len(records)
        parts: list = []
        for r in reversed(records[-SHOWN:]):
            head = f"step {r.step:,} · {count(r.tokens)} tokens"
            parts += ["\n" if parts else "", (head, "$text-accent bold")]
            for s in r.samples:
                text = " ".join(s.text.split())  # one paragraph a sample
                space = " " if s.text[:1].isspace() else ""
                parts += ["\n", (s.prompt, "bold"), space, text]
        self.query_one(Static).update(Content.assemble(*parts))
