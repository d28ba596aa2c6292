"""The Train screen's figures: step / max steps, tokens seen, tokens/s, ETA, learning rate,
the latest train loss, the best validation figure, MFU (on a GPU with a known peak) and
time trained, from the run's latest records (typed: `trainer.report`'s dataclasses). The
ETA is the watcher's own moving rate (`trainer.pace`, as the trainer computes it): "…"
until it settles after the warm-up, "-" while nothing trains. Plain values in, one
`Content` out (a run folder's text is never parsed as markup)."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from slm_tui.trainer.pace import format_duration
from slm_tui.tui.training.watch import RunHistory

KEY_WIDTH = 12  # fixed: the values do not move as rows appear


def count(n: float) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


class TrainStats(Widget):
    """Redrawn from a `RunHistory` whenever the screen polls something new."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: list[tuple[str, str]] = []

    def show(self, history: RunHistory, live: bool) -> None:
        t = history.last_train
        total = f" / {history.max_steps:,}" if history.max_steps else ""
        rows = [("step", f"{history.step:,}{total}"), ("tokens", count(history.tokens))]
        if t is not None:
            rows.append(("tok/s", f"{t.tokens_per_s:,.0f}"))
            rows.append(("ETA", format_duration(history.eta_s()) if live else "-"))
            rows.append(("lr", f"{t.lr:.2e}"))
            rows.append(("loss", "-" if t.loss is None else f"{t.loss:.4f}"))
        best = history.best
        if best is not None:
            rows.append(("best val", f"{best.val_loss:.4f} @ {best.step:,}"))
            rows.append(("  bits/byte", f"{best.val_bpb:.3f}"))
        if t is not None and t.mfu is not None:
            rows.append(("MFU", f"{t.mfu * 100:.1f}%"))
        if t is not None:
            rows.append(("trained", format_duration(t.elapsed_s, unknown="-")))
        self.rows = rows
        self.refresh()

    @property
    def plain_text(self) -> str:
        return str(self.render())

    def render(self) -> Content:
        if not self.rows:
            return Content.styled("waiting for the first record…", "$text-muted")
        parts: list = []
        for i, (key, value) in enumerate(self.rows):
            parts += ["\n" if i else "", (key.ljust(KEY_WIDTH), "$text-muted"), (value, "bold")]
        return Content.assemble(*parts)
