"""Keys, dialogs and the command palette: the app's bindings (each with a remappable id),
the actions that open a screen, and the palette entries for every action.

`KEYS` is the one list of bindings; `keys.yaml` remaps them by id (see store.load_keymap).
Main-screen actions are disabled while a dialog or the compare screen is on top, so a
priority key (F-keys work even inside the prompt) never acts on a hidden screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from slm_tui.generation import PRESETS
from slm_tui.tui.store import keymap_path
from slm_tui.tui.widgets.prompt_area import PromptArea

KEYS: tuple[Binding, ...] = (
    Binding("f1", "help", "help", id="help", priority=True),
    Binding("f2", "checkpoints", "models", id="checkpoints", priority=True),
    Binding("f3", "toggle_tokens", "tokens", id="token_view", priority=True),
    Binding("f4", "toggle_side", "side panel", id="side_panel", show=False, priority=True),
    Binding("f5", "preset('greedy')", "greedy", id="preset_greedy", show=False, priority=True),
    Binding(
        "f6", "preset('balanced')", "balanced", id="preset_balanced", show=False, priority=True
    ),
    Binding("f7", "preset('wild')", "wild", id="preset_wild", show=False, priority=True),
    Binding("f8", "compare", "compare", id="compare", priority=True),
    Binding("f9", "export", "export", id="export", priority=True),
    Binding("f10", "focus_history", "history", id="history", show=False, priority=True),
    Binding("ctrl+r", "regenerate", "again", id="regenerate", priority=True),
    Binding("ctrl+o", "continue_story", "continue", id="continue", priority=True),
    Binding("ctrl+l", "pin_seed", "pin seed", id="pin_seed", show=False, priority=True),
    Binding("escape", "cancel", "stop", id="cancel"),
    Binding("ctrl+q", "quit", "quit", id="quit", show=False, priority=True),
)
BINDING_IDS = tuple(b.id for b in KEYS if b.id)
MAIN_ACTIONS = {
    "checkpoints", "toggle_tokens", "toggle_side", "preset", "compare", "export",
    "focus_history", "regenerate", "continue_story", "pin_seed", "cancel",
}  # fmt: skip


class DialogsMixin:
    """Screen-opening actions and palette commands, mixed into SlmApp."""

    keymap: dict[str, str]
    checkpoints: list[Any]
    checkpoints_dir: Path

    def action_help(self) -> None:
        from slm_tui.tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(list(KEYS), self.keymap, str(keymap_path())))

    def action_checkpoints(self) -> None:
        from slm_tui.tui.screens.checkpoint_picker import CheckpointPicker

        def chosen(path: Path | None) -> None:
            if path is not None and path.resolve() != self.loaded_path:
                self.load_checkpoint(path)

        self.push_screen(CheckpointPicker(), chosen)
        self.action_rescan()

    def action_export(self) -> None:
        from slm_tui.tui.screens.export import ExportScreen

        def done(path: Path | None) -> None:
            if path is not None:
                self.notify(f"Exported to {path}", title="Export")

        self.push_screen(ExportScreen(self.current, list(self.session)), done)

    def action_compare(self) -> None:
        from slm_tui.tui.screens.compare import CompareScreen

        if self.loaded is None:
            self.notify("No checkpoint loaded: press F2 to pick one.", severity="warning")
            return
        seed_text = self.query_one(PromptArea).text or (self.current.prompt if self.current else "")
        self.push_screen(CompareScreen(seed_text))

    def get_system_commands(self, screen: Screen) -> Iterator[SystemCommand]:
        yield from super().get_system_commands(screen)  # type: ignore[misc]
        for b in KEYS:
            if b.id != "quit":
                key = self.keymap.get(b.id or "", b.key)
                yield SystemCommand(
                    b.description.capitalize(),
                    f"{key} · {b.id}",
                    partial(self.run_action, b.action),
                )
        yield SystemCommand("Clear history", "Forget every stored story", self.action_clear_history)
        yield SystemCommand(
            "Rescan checkpoints", f"Look in {self.checkpoints_dir} again", self.action_rescan
        )
        for info in self.checkpoints:
            if not info.error:
                yield SystemCommand(
                    f"Load checkpoint {info.name}",
                    str(info.path),
                    partial(self.load_checkpoint, Path(info.path)),
                    discover=False,
                )
        for name in PRESETS:
            yield SystemCommand(
                f"Preset {name}",
                str(PRESETS[name]),
                partial(self.action_preset, name),
                discover=False,
            )
