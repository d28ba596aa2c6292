"""The loss chart of the Train screen: train and validation loss (or bits per byte) against
tokens seen, with axes, a legend and an optional log y axis, drawn by plotext through
textual-plotext's `PlotextPlot`.

The figure is rebuilt from plain data at every render: plotext's `build()` cannot be called
twice on one figure with a legend (its second call fails), and rebuilding from at most
~800 downsampled points (`watch.Curve`) costs a few milliseconds. `show()` takes new
data and asks for one repaint; nothing is drawn between polls.

Bits per byte: validation is measured in both units; the train curve is converted with the
latest evaluation's bytes per token (val_loss / val_bpb), so the two curves stay comparable.
"""

from __future__ import annotations

from textual.app import RenderResult
from textual.content import Content
from textual_plotext import PlotextPlot


def _unit(largest: float) -> tuple[float, str]:
    for scale, name in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if largest >= scale:
            return scale, name
    return 1.0, ""


class LossChart(PlotextPlot):
    """Two curves against tokens; `log_y` and `bits` are toggled by the Train screen."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train: tuple[list[float], list[float]] = ([], [])
        self.val: tuple[list[float], list[float]] = ([], [])
        self.val_bpb: list[float] = []
        self.log_y = False
        self.bits = False
        self.renders = 0  # figures built (the benchmark and tests count them)

    def show(
        self,
        train: tuple[list[float], list[float]],
        val_tokens: list[float],
        val_loss: list[float],
        val_bpb: list[float],
    ) -> None:
        self.train = train
        self.val = (val_tokens, val_loss)
        self.val_bpb = val_bpb
        self.refresh()

    def set_view(self, *, log_y: bool | None = None, bits: bool | None = None) -> None:
        if log_y is not None:
            self.log_y = log_y
        if bits is not None:
            self.bits = bits
        self.refresh()

    @property
    def points(self) -> int:
        return len(self.train[0]) + len(self.val[0])

    def render(self) -> RenderResult:
        if not self.train[0] and not self.val[0]:
            return Content("no loss logged yet: the curve appears with the first train record")
        plt = self.plt
        plt.clear_figure()
        xs, ys = self.train
        vx, vy = self.val
        if self.bits and self.val_bpb:  # bytes per token of the latest evaluation
            ratio = self.val_bpb[-1] / vy[-1] if vy[-1] else 1.0
            ys, vy = [y * ratio for y in ys], self.val_bpb
        scale, unit = _unit(max(xs[-1:] + vx[-1:]))
        if xs:
            plt.plot([x / scale for x in xs], ys, label="train", marker="braille")
        if vx:
            plt.plot([x / scale for x in vx], vy, label="validation", marker="dot")
        plt.xlabel(f"tokens{f' ({unit})' if unit else ''}")
        plt.ylabel("bits per byte" if self.bits and self.val_bpb else "loss (nats/token)")
        plt.yscale("log" if self.log_y else "linear")
        self.renders += 1
        return super().render()
