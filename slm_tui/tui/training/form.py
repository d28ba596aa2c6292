"""The Train screen's start form (`n`): what `slm-train model` is to be started with.

The form asks for what `slm-train model` takes: a preset, data files and validation files
(globs and quotes allowed; no validation files: a held-out fraction of the data), the
output folder, `--set` overrides and a device. The overrides start as real values, not a
placeholder that looks like one (Start once ran a 1,500-step run on every core while the
field seemed to say 300 steps on one thread): a short first run on all cores but one
(`state.first_run_overrides`), said under the field. The form only checks what it can know
(an empty output folder, unbalanced quotes); everything else is the trainer's to refuse,
and its one-line refusal is shown on the Train screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from slm_tui.tui.training.process import DEVICES, TrainRequest
from slm_tui.tui.training.state import first_run_overrides, split_words

VALIDATION_NOTE = "empty: every 200th story of the data files is held out for validation"
FIRST_RUN_NOTE = "a short first run, one core left for writing while it trains"
LAST_RUN_NOTE = "the last run's overrides"
PRESET_NOTE = "; empty: the preset's own values (tiny: 1,500 steps)"


class StartForm(ModalScreen[TrainRequest | None]):
    """Returns the request to start, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "close", show=False)]

    def __init__(self, initial: TrainRequest, presets: list[str]) -> None:
        super().__init__()
        self.initial = initial
        self.presets = presets

    def compose(self) -> ComposeResult:
        r = self.initial
        preset = r.preset if r.preset in self.presets else self.presets[0]
        with Vertical(id="train-form"):
            yield Label("Start a training run", classes="title")
            with Horizontal(classes="form-row"):
                yield Label("preset", classes="form-label")
                yield Select(
                    [(p, p) for p in self.presets],
                    value=preset,
                    allow_blank=False,
                    id="f-preset",
                    compact=True,
                )
            yield from self._row("data files", "f-data", " ".join(r.data_files), "a.txt b/*.jsonl")
            yield from self._row("validation", "f-val", " ".join(r.val_files), "dev.txt")
            yield Static(VALIDATION_NOTE, classes="form-note", markup=False)
            yield from self._row("output", "f-output", str(r.output), "runs/my-run")
            yield from self._row(
                "--set", "f-set", " ".join(r.overrides), "none: the preset's values"
            )
            first = r.overrides == first_run_overrides()
            note = (FIRST_RUN_NOTE if first else LAST_RUN_NOTE) + PRESET_NOTE
            yield Static(note, classes="form-note", markup=False)
            with Horizontal(classes="form-row"):
                yield Label("device", classes="form-label")
                yield Select(
                    [(d, d) for d in DEVICES],
                    value=r.device,
                    allow_blank=False,
                    id="f-device",
                    compact=True,
                )
            yield Static("", id="form-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Start", id="form-start", variant="primary", compact=True)
                yield Button("Cancel", id="form-cancel", compact=True)

    def _row(self, label: str, id: str, value: str, placeholder: str) -> ComposeResult:
        with Horizontal(classes="form-row"):
            yield Label(label, classes="form-label")
            yield Input(value, placeholder=placeholder, id=id, compact=True)

    def on_mount(self) -> None:
        self.query_one("#f-data", Input).focus()

    def request(self) -> TrainRequest:
        """The request the fields describe (ValueError with a reason when they cannot)."""
        output = self.query_one("#f-output", Input).value.strip()
        if not output:
            raise ValueError("give an output folder")
        try:
            files = split_words(self.query_one("#f-data", Input).value)
            val_files = split_words(self.query_one("#f-val", Input).value)
            overrides = split_words(self.query_one("#f-set", Input).value)
        except ValueError as exc:
            raise ValueError(f"cannot read the fields: {exc}") from None
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"an override is section.key=value, got {bad[0]!r}")
        return TrainRequest(
            output=Path(output).expanduser(),
            preset=str(self.query_one("#f-preset", Select).value),
            data_files=files,
            val_files=val_files,
            overrides=overrides,
            device=str(self.query_one("#f-device", Select).value),
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#form-start")
    def action_submit(self) -> None:
        try:
            request = self.request()
        except ValueError as exc:
            self.query_one("#form-error", Static).update(str(exc))
            return
        self.dismiss(request)

    @on(Button.Pressed, "#form-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
