"""The loss chart of the Train screen: train and validation loss (or bits per byte) against
tokens seen, with axes, a legend and an optional log y axis, drawn by plotext through
textual-plotext's `PlotextPlot`; a second run's curves on top when one is overlaid.

- Draw order: every validation series first (a dot at each evaluation), then the train
  curves, the watched run's last: a terminal cell holds one character, and where a dot and
  the train curve meet the curve stays whole.
- The x axis spans the run's planned length (max_steps x tokens per step, from the start
  event) from the first record on, so the curve is seen to fill the run, not to stretch.
- Bits per byte: validation is measured in both units; a train curve is converted with its
  run's latest bytes per token (val_loss / val_bpb), so the two curves stay comparable.

The figure is rebuilt from plain data at every render: plotext's `build()` cannot be called
twice on one figure with a legend (its second call fails), and rebuilding from at most
~800 downsampled points per curve (`watch.Curve`) costs a few milliseconds. `show()` takes
new data and asks for one repaint; nothing is drawn between polls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.app import RenderResult
from textual.content import Content
from textual_plotext import PlotextPlot

from slm_tui.tui.training.watch import RunHistory

# (train, validation) colours of the watched run and of an overlaid one.
COLOURS = (((0, 130, 200), (60, 180, 75)), ((245, 130, 48), (230, 25, 75)))


@dataclass
class Curves:
    """One run's curves, as the chart draws them."""

    label: str = ""  # "" for the watched run; an overlaid run's folder name
    train: tuple[list[float], list[float]] = ([], [])
    val_tokens: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_bpb: list[float] = field(default_factory=list)
    planned: float | None = None  # tokens the run will have seen at max_steps


def curves_of(history: RunHistory, label: str = "") -> Curves:
    evals = history.evals
    return Curves(
        label,
        history.train.points(),
        [float(e.tokens) for e in evals],
        [e.val_loss for e in evals],
        [e.val_bpb for e in evals],
        history.planned_tokens,
    )


def _unit(largest: float) -> tuple[float, str]:
    for scale, name in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if largest >= scale:
            return scale, name
    return 1.0, ""


class LossChart(PlotextPlot):
    """The watched run's curves (and an overlaid run's); `log_y` and `bits` are toggled by
    the Train screen."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.main = Curves()
        self.overlay: Curves | None = None
        self.log_y = False
        self.bits = False
        self.renders = 0  # figures built (the benchmark and tests count them)

    def show(self, curves: Curves, overlay: Curves | None = None) -> None:
        self.main, self.overlay = curves, overlay
        self.refresh()

    def set_view(self, *, log_y: bool | None = None, bits: bool | None = None) -> None:
        if log_y is not None:
            self.log_y = log_y
        if bits is not None:
            self.bits = bits
        self.refresh()

    @property
    def points(self) -> int:
        return len(self.main.train[0]) + len(self.main.val_tokens)

    @property
    def series(self) -> list[Curves]:
        """What is drawn: the watched run, then the overlaid one."""
        return [self.main, *([self.overlay] if self.overlay is not None else [])]

    def render(self) -> RenderResult:
        series = [c for c in self.series if c.train[0] or c.val_tokens]
        if not series:
            return Content("no loss logged yet: the curve appears with the first train record")
        plt = self.plt
        plt.clear_figure()
        bits = self.bits and all(c.val_bpb for c in series)
        xmax = max(max([*c.train[0][-1:], *c.val_tokens[-1:], c.planned or 0.0]) for c in series)
        scale, unit = _unit(xmax)
        drawn = [(c, COLOURS[min(n, 1)], *self._ys(c, bits)) for n, c in enumerate(self.series)]
        for c, (_, colour), _, vy in reversed(drawn):  # validation dots first, under
            if c.val_tokens:
                name = f"{c.label} val" if c.label else "validation"
                xs = [x / scale for x in c.val_tokens]
                plt.scatter(xs, vy, label=name, marker="dot", color=colour)
        for c, (colour, _), ys, _ in reversed(drawn):  # then the train curves, ours on top
            if c.train[0]:
                name = f"{c.label} train" if c.label else "train"
                xs = [x / scale for x in c.train[0]]
                plt.plot(xs, ys, label=name, marker="braille", color=colour)
        plt.xlim(0, xmax / scale)
        plt.xlabel(f"tokens{f' ({unit})' if unit else ''}")
        plt.ylabel("bits per byte" if bits else "loss (nats/token)")
        plt.yscale("log" if self.log_y else "linear")
        self.renders += 1
        return super().render()

    @staticmethod
    def _ys(c: Curves, bits: bool) -> tuple[list[float], list[float]]:
        """(train y, validation y) in the unit shown."""
        ys, vy = c.train[1], c.val_loss
        if bits and c.val_bpb and vy:  # bytes per token of the run's latest evaluation
            ratio = c.val_bpb[-1] / vy[-1] if vy[-1] else 1.0
            return [y * ratio for y in ys], c.val_bpb
        return ys, vy
