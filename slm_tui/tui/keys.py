"""The app's key bindings and the command-palette entries made from them.

`KEYS` is the one list of bindings; each has an id, so `keys.yaml` can remap it (see
`store.load_keymap`). `MAIN_ACTIONS` are the main screen's actions: the app disables them
while a dialog or the compare screen is on top, so a priority key (F-keys work even inside
the prompt) never acts on a hidden screen. `binding_commands` turns every binding into a
palette entry, labelled with the key the user's key map gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from textual.app import SystemCommand
from textual.binding import Binding

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
    Binding("ctrl+t", "train", "train", id="train", priority=True),
    Binding("ctrl+r", "regenerate", "again", id="regenerate", priority=True),
    Binding("ctrl+o", "continue_story", "continue", id="continue", priority=True),
    Binding("ctrl+l", "pin_seed", "pin seed", id="pin_seed", show=False, priority=True),
    Binding("escape", "cancel", "stop", id="cancel"),
    Binding("ctrl+q", "quit", "quit", id="quit", show=False, priority=True),
)
BINDING_IDS = tuple(b.id for b in KEYS if b.id)
MAIN_ACTIONS = {
    "checkpoints", "toggle_tokens", "toggle_side", "preset", "compare", "export",
    "focus_history", "regenerate", "continue_story", "pin_seed", "cancel", "train",
}  # fmt: skip


def binding_commands(
    keymap: dict[str, str], run_action: Callable[[str], Any]
) -> Iterator[SystemCommand]:
    """A palette entry for every binding but quit (the palette has its own), showing the key
    the user's key map gives it and the binding id."""
    for b in KEYS:
        if b.id != "quit":
            key = keymap.get(b.id or "", b.key)
            yield SystemCommand(
                b.description.capitalize(), f"{key} · {b.id}", partial(run_action, b.action)
            )
