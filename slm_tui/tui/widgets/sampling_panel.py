"""Sampling controls: one row per setting, typed or stepped, validated as you type.

Each value is checked by the engine's own rules (`SamplingSettings.replace`, which raises
`GenerationError`), so the panel can never hold a setting the engine would refuse. Up/Down
(PageUp/PageDown for ten steps) step the focused value, the `−`/`+` buttons do the same
with the mouse (they are no Tab stops: Tab goes from field to field), and the preset
buttons (also F5/F6/F7) set several values at once. The border title names the preset the
values are (`active_preset`), or says "custom". Every accepted change is posted as
`SamplingPanel.Changed`; the app forwards it to a running story through
`LiveSettings.update`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, Static

from slm_tui.errors import GenerationError
from slm_tui.generation import PRESETS, SamplingSettings


class Control(NamedTuple):
    """One row of the panel: the setting it edits, its label, its type, one Up/Down step."""

    setting: str  # a SamplingSettings field name
    label: str
    kind: type
    step: float


# The panel's rows, top to bottom. A blank seed means "a fresh seed for every story".
CONTROLS: tuple[Control, ...] = (
    Control("temperature", "temp", float, 0.1),
    Control("top_k", "top-k", int, 5),
    Control("top_p", "top-p", float, 0.05),
    Control("min_p", "min-p", float, 0.01),
    Control("repetition_penalty", "rep pen", float, 0.05),
    Control("max_new_tokens", "max tok", int, 32),
    Control("seed", "seed", int, 1),
)
BY_SETTING = {c.setting: c for c in CONTROLS}
LABELS = {c.setting: c.label for c in CONTROLS}
# The settings a running story picks up from its next token (the seed only matters at start).
LIVE_SETTINGS = tuple(c.setting for c in CONTROLS if c.setting != "seed")


def parse_value(name: str, text: str) -> Any:
    """Text from an input → the field's value; ValueError when it is not a number."""
    text = text.strip()
    if name == "seed" and text == "":
        return None
    if BY_SETTING[name].kind is int:
        return int(text)
    return float(text)


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class SettingValidator(Validator):
    def __init__(self, panel: SamplingPanel, name: str) -> None:
        super().__init__()
        self.panel, self.field = panel, name

    def validate(self, value: str) -> ValidationResult:
        try:
            self.panel.settings.replace(**{self.field: parse_value(self.field, value)})
        except ValueError:
            return self.failure(f"{self.field}: not a number")
        except GenerationError as exc:
            return self.failure(str(exc))
        return self.success()


class SettingInput(Input):
    """An input for one sampling field that steps its value with Up/Down."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "step(1)", "increase", show=False),
        Binding("down", "step(-1)", "decrease", show=False),
        Binding("pageup", "step(10)", show=False),
        Binding("pagedown", "step(-10)", show=False),
    ]

    def __init__(self, panel: SamplingPanel, name: str, value: str) -> None:
        super().__init__(
            value,
            id=f"set-{name}",
            validators=[SettingValidator(panel, name)],
            validate_on=["changed", "submitted"],
            placeholder="fresh" if name == "seed" else "",
            compact=True,
        )
        self.field = name
        self.panel = panel

    def action_step(self, times: int) -> None:
        self.panel.step(self.field, times)


class StepButton(Button, can_focus=False):
    """`−` or `+` for the mouse; the keyboard steps the focused field with Up/Down."""


def active_preset(settings: SamplingSettings) -> str | None:
    """The preset whose every value `settings` holds, if any."""
    for name, values in PRESETS.items():
        if all(getattr(settings, k) == v for k, v in values.items()):
            return name
    return None


class SamplingPanel(Vertical):
    """The sampling settings, always valid; `settings` is the current SamplingSettings."""

    @dataclass
    class Changed(Message):
        panel: SamplingPanel
        changes: dict[str, Any]  # the fields that changed, with their new values
        settings: SamplingSettings

        @property
        def control(self) -> SamplingPanel:
            return self.panel

    def __init__(self, settings: SamplingSettings | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings or SamplingSettings()
        self._show_preset()

    def compose(self) -> ComposeResult:
        for name, label, _, _ in CONTROLS:
            with Horizontal(classes="setting-row"):
                yield Label(label, classes="setting-label")
                yield SettingInput(self, name, format_value(getattr(self.settings, name)))
                yield StepButton("−", id=f"dec-{name}", classes="step", compact=True)
                yield StepButton("+", id=f"inc-{name}", classes="step", compact=True)
        with Horizontal(id="presets"):
            for i, preset in enumerate(PRESETS):
                yield Button(
                    preset,
                    id=f"preset-{preset}",
                    classes="preset",
                    compact=True,
                    tooltip=f"F{5 + i}",
                )
        yield Static("", id="sampling-error", markup=False)

    # -- changes from the user ---------------------------------------------------------
    @on(Input.Changed, "SettingInput")
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        field = event.input.field  # type: ignore[attr-defined]
        if event.validation_result is not None and not event.validation_result.is_valid:
            self._error(event.validation_result.failure_descriptions[0])
            return
        self._error("")
        value = parse_value(field, event.value)
        if value != getattr(self.settings, field):
            self._accept({field: value})

    @on(Input.Submitted, "SettingInput")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()  # Enter in a setting must not write a story

    @on(Button.Pressed, ".step")
    def _clicked_step(self, event: Button.Pressed) -> None:
        event.stop()
        direction, field = (event.button.id or "").split("-", 1)
        self.step(field, 1 if direction == "inc" else -1)

    @on(Button.Pressed, ".preset")
    def _clicked_preset(self, event: Button.Pressed) -> None:
        event.stop()
        self.apply_preset((event.button.id or "").removeprefix("preset-"))

    def step(self, field: str, times: int) -> None:
        """Move `field` by `times` steps; a step that would be invalid rings the bell."""
        _, _, kind, step = BY_SETTING[field]
        current = getattr(self.settings, field)
        if field == "seed" and current is None:
            current = 0
        new = current + times * step
        new = round(new) if kind is int else round(new, 4)
        try:
            self.settings.replace(**{field: new})
        except GenerationError as exc:
            self._error(str(exc))
            self.app.bell()
            return
        self._accept({field: new}, refresh_inputs=True)

    def apply_preset(self, name: str) -> None:
        self.set_values(dict(PRESETS[name]))

    def set_values(self, changes: dict[str, Any]) -> None:
        """Set several fields at once (a preset, remembered settings); invalid ones are skipped."""
        changes = {k: v for k, v in changes.items() if k in BY_SETTING}
        try:
            self.settings.replace(**changes)
        except GenerationError as exc:
            self._error(str(exc))
            return
        self._accept(changes, refresh_inputs=True)

    def _error(self, message: str) -> None:
        error = self.query_one("#sampling-error", Static)
        error.update(message)
        error.set_class(bool(message), "-shown")

    def _show_preset(self) -> None:
        active = active_preset(self.settings)
        self.border_title = f"sampling · {active or 'custom'}"
        if self.is_mounted:
            for name in PRESETS:
                self.query_one(f"#preset-{name}", Button).set_class(name == active, "-active")

    def on_mount(self) -> None:
        self._show_preset()

    def _accept(self, changes: dict[str, Any], refresh_inputs: bool = False) -> None:
        self.settings = self.settings.replace(**changes)
        self._error("")
        self._show_preset()
        if refresh_inputs:
            with self.prevent(Input.Changed):
                for field in changes:
                    inp = self.query_one(f"#set-{field}", SettingInput)
                    inp.value = format_value(getattr(self.settings, field))
                    inp.cursor_position = len(inp.value)
        self.post_message(self.Changed(self, changes, self.settings))
