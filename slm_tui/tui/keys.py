"""The app's key bindings and the command-palette entries made from them.

Every binding has an id, so `keys.yaml` can remap it (see `store.load_keymap`).
`APP_KEYS` are the App's: help and quit answer on every screen. `WRITE_KEYS` are the
writing screen's (`screens/write.py`): a screen's bindings fire only while it is on top,
so none of them acts on a screen hidden under a dialog, the compare screen or the Train
screen; those that open the session's dialogs (F2 picker, F8 compare, F9 export, Ctrl+T
Train screen) run actions of the App. The F-keys are priority bindings: they work even
inside the prompt. `KEYS` is every
binding in the order F1 lists them; `binding_commands` turns bindings into palette
entries, labelled with the key the user's key map gives each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from textual.app import SystemCommand
from textual.binding import Binding

HELP = Binding("f1", "app.help", "help", id="help", priority=True)
QUIT = Binding("ctrl+q", "app.quit", "quit", id="quit", show=False, priority=True)
APP_KEYS: tuple[Binding, ...] = (HELP, QUIT)
WRITE_KEYS: tuple[Binding, ...] = (
    Binding("f2", "app.checkpoints", "models", id="checkpoints", priority=True),
    Binding("f3", "toggle_tokens", "tokens", id="token_view", priority=True),
    Binding("f4", "toggle_side", "side panel", id="side_panel", show=False, priority=True),
    Binding("f5", "preset('greedy')", "greedy", id="preset_greedy", show=False, priority=True),
    Binding(
        "f6", "preset('balanced')", "balanced", id="preset_balanced", show=False, priority=True
    ),
    Binding("f7", "preset('wild')", "wild", id="preset_wild", show=False, priority=True),
    Binding("f8", "app.compare", "compare", id="compare", priority=True),
    Binding("f9", "app.export", "export", id="export", priority=True),
    Binding("f10", "focus_history", "history", id="history", show=False, priority=True),
    Binding("ctrl+t", "app.train", "train", id="train", priority=True),
    Binding("ctrl+r", "regenerate", "again", id="regenerate", priority=True),
    Binding("ctrl+o", "continue_story", "continue", id="continue", priority=True),
    # Ctrl+B, or F12 where a terminal multiplexer (tmux) takes Ctrl+B for itself
    Binding("ctrl+b,f12", "toggle_brief", "brief", id="brief", priority=True),
    Binding("ctrl+l", "pin_seed", "pin seed", id="pin_seed", show=False, priority=True),
    Binding("escape", "cancel", "stop", id="cancel"),
)
KEYS: tuple[Binding, ...] = (HELP, *WRITE_KEYS, QUIT)
BINDING_IDS = tuple(b.id for b in KEYS if b.id)


def binding_commands(
    bindings: Iterable[Binding], keymap: dict[str, str], run_action: Callable[[str], Any]
) -> Iterator[SystemCommand]:
    """A palette entry for each of `bindings` but quit (the palette has its own), showing
    the key the user's key map gives it and the binding id."""
    for b in bindings:
        if b.id != "quit":
            key = keymap.get(b.id or "", b.key)
            yield SystemCommand(
                b.description.capitalize(), f"{key} · {b.id}", partial(run_action, b.action)
            )
