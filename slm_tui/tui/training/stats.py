"""The Train screen's figures: step / max steps, tokens seen, tokens/s, ETA, learning rate,
the latest train loss, the best validation figure, MFU (on a GPU with a known peak) and
time trained, from the run's latest records. Plain values in, one `Content` out (a run
folder's text is never parsed as markup)."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from slm_tui.tui.training.watch import RunHistory

KEY_WIDTH = 12  # fixed: the values do not move as rows appear


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


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
        t = history.last_train or {}
        total = f" / {history.max_steps:,}" if history.max_steps else ""
        rows = [("step", f"{history.step:,}{total}"), ("tokens", count(history.tokens))]
        if t:
            rows.append(("tok/s", f"{t.get('tokens_per_s') or 0:,.0f}"))
            rows.append(("ETA", duration(t.get("eta_s")) if live else "-"))
            rows.append(("lr", f"{t['lr']:.2e}" if isinstance(t.get("lr"), float) else "-"))
            loss = t.get("loss")
            rows.append(("loss", f"{loss:.4f}" if isinstance(loss, float) else "-"))
        best = history.best
        if best is not None:
            rows.append(("best val", f"{best['val_loss']:.4f} @ {best['step']:,}"))
            if isinstance(best.get("val_bpb"), float):
                rows.append(("  bits/byte", f"{best['val_bpb']:.3f}"))
        if isinstance(t.get("mfu"), float):
            rows.append(("MFU", f"{t['mfu'] * 100:.1f}%"))
        if t:
            rows.append(("trained", duration(t.get("elapsed_s"))))
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
