"""The app's key bindings and the command-palette entries made from them.

Every binding has an id, so `keys.yaml` can remap it (see `store.load_keymap`), a short
`description` (the footer's label) and a `tooltip`: what it does in words, which F1 help and
the palette show. `APP_KEYS` are the App's: help (F1, or `?` where no text field takes the
key) and quit answer on every screen. `WRITE_KEYS` are the writing screen's
(`screens/write.py`), `TRAIN_KEYS` the Train screen's, `COMPARE_KEYS` the compare screen's,
`HISTORY_KEYS` the history browser's: a screen's bindings fire only while it is on top, so
none of them acts on a screen hidden under a dialog, the compare screen or the Train
screen; those of the writing screen that open the session's dialogs (F2 picker, F8 compare,
F9 export, F10 history, Ctrl+T Train screen) run actions of the App. The writing screen's
F-keys and Ctrl keys are priority bindings: they work even inside the prompt. `KEYS` is the
writing screen's and the App's bindings in the order F1 lists them; `binding_commands`
turns bindings into palette entries, labelled with the key the user's key map gives each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from textual.app import SystemCommand
from textual.binding import Binding

HELP = Binding(
    "f1", "app.help", "help", id="help", priority=True, tooltip="help for the screen you are on"
)
# `?` as well, but not as a priority binding: in the prompt (or any text field) it is a
# character to type, so it opens help only where no field takes it.
HELP_QUESTION = Binding("question_mark", "app.help", "help", show=False)
QUIT = Binding(
    "ctrl+q",
    "app.quit",
    "quit",
    id="quit",
    show=False,
    priority=True,
    tooltip="quit (asks first while a run started here trains)",
)
# The same binding shown in a footer (the writing screen's: it lists it before the App's).
QUIT_SHOWN = Binding(
    QUIT.key, QUIT.action, QUIT.description, id="quit", priority=True, tooltip=QUIT.tooltip
)
APP_KEYS: tuple[Binding, ...] = (HELP, HELP_QUESTION, QUIT)


def _key(key: str, action: str, label: str, what: str, id: str, show: bool = True) -> Binding:
    """A writing-screen binding: a priority binding (it works inside the prompt)."""
    return Binding(key, action, label, id=id, show=show, priority=True, tooltip=what)


WRITE_KEYS: tuple[Binding, ...] = (
    _key("f2", "app.checkpoints", "models", "pick the checkpoint (or model) to write with",
         "checkpoints"),
    _key("f3", "toggle_tokens", "tokens",
         "token view: each token coloured by how likely the model found it, with the "
         "alternatives it had", "token_view"),
    _key("ctrl+r", "regenerate", "again",
         "write the same seed sentence again (a fresh seed unless one is pinned)", "regenerate"),
    _key("ctrl+o", "continue_story", "continue",
         "continue the story where it stopped (at max tokens, or where Esc stopped it)",
         "continue"),
    # Ctrl+B, or F12 where a terminal multiplexer (tmux) takes Ctrl+B for itself
    _key("ctrl+b,f12", "toggle_brief", "brief",
         "the brief row: words, a name and features the story is to have", "brief"),
    # Not in the footer: at 80 columns it holds the keys above, stop (or continue), quit and
    # the palette, no more (F1 and the palette list it).
    _key("ctrl+t", "app.train", "train", "the Train screen: start, watch, stop, resume runs",
         "train", False),
    _key("f4", "toggle_side", "side panel",
         "hide or show the side panel (checkpoint, sampling, history)", "side_panel", False),
    _key("f5", "preset('greedy')", "greedy",
         "greedy preset: always the most likely token", "preset_greedy", False),
    _key("f6", "preset('balanced')", "balanced",
         "balanced preset: the default sampling settings", "preset_balanced", False),
    _key("f7", "preset('wild')", "wild",
         "wild preset: a hotter temperature, more surprising words", "preset_wild", False),
    _key("f8", "app.compare", "compare",
         "write one seed sentence with two checkpoints or two settings, side by side",
         "compare", False),
    _key("f9", "app.export", "export",
         "export the story or the session to Markdown or JSON lines", "export", False),
    _key("f10", "app.history", "history",
         "browse the history: search, open, rename, delete, copy", "history", False),
    _key("ctrl+s", "copy_story", "copy story",
         "copy the story (seed sentence and what the model wrote) to the clipboard",
         "copy_story", False),
    _key("ctrl+l", "pin_seed", "pin seed",
         "pin this story's seed, so stories repeat; again to unpin", "pin_seed", False),
    Binding("escape", "cancel", "stop", id="cancel", tooltip="stop the story being written"),
)  # fmt: skip
KEYS: tuple[Binding, ...] = (HELP, *WRITE_KEYS, QUIT)

TRAIN_KEYS: tuple[Binding, ...] = (
    Binding("n", "start", "new", id="train_start",
            tooltip="start a training run (a form: preset, data, output, overrides)"),
    Binding("x", "stop", "stop", id="train_stop",
            tooltip="stop the run: it saves latest/ and exits"),
    Binding("r", "resume", "resume", id="train_resume", tooltip="resume the run (--resume)"),
    Binding("w", "write_newest", "write", id="train_write",
            tooltip="write stories with the run's newest checkpoint"),
    Binding("c", "compare", "compare", id="train_compare",
            tooltip="compare two checkpoints of this run, side by side"),
    Binding("o", "overlay", "overlay", id="train_overlay",
            tooltip="draw a second run's curves on the chart (pick its folder; again to remove)"),
    Binding("l", "toggle_log", "log y", id="train_log_y", show=False,
            tooltip="the chart's y axis on a log scale, or back"),
    Binding("b", "toggle_bits", "bits/byte", id="train_bits", show=False,
            tooltip="the chart in bits per byte, or back to nats per token"),
    Binding("escape,ctrl+t", "app.pop_screen", "back", id="train_close",
            tooltip="back to the writing screen"),
)  # fmt: skip

COMPARE_KEYS: tuple[Binding, ...] = (
    Binding("escape", "stop_or_close", "stop / close", id="compare_close",
            tooltip="stop both stories; when none is being written, close"),
    Binding("ctrl+r", "run", "again", id="compare_again", priority=True,
            tooltip="write the seed sentence on both sides again"),
    Binding("f8", "close", "close", show=False, tooltip="close the compare screen"),
)  # fmt: skip

HISTORY_KEYS: tuple[Binding, ...] = (
    Binding("f2", "rename", "rename", id="history_rename", tooltip="rename the story"),
    Binding("f8,delete", "delete", "delete", id="history_delete",
            tooltip="delete the story from the history (asks first)"),
    Binding("ctrl+s", "copy", "copy", id="history_copy",
            tooltip="copy the story to the clipboard"),
    Binding("escape,f10", "close", "close", id="history_close", tooltip="close the history"),
)  # fmt: skip

BINDING_IDS = tuple(b.id for b in (*KEYS, *TRAIN_KEYS, *COMPARE_KEYS, *HISTORY_KEYS) if b.id)


def key_display(keys: str) -> str:
    """Textual key names as a user reads them: "ctrl+r,f12" -> "Ctrl+R, F12"."""
    names = {"escape": "Esc", "question_mark": "?", "delete": "Del", "pageup": "PgUp"}
    names |= {"pagedown": "PgDn"}

    def one(key: str) -> str:
        *mods, last = key.split("+")
        if last in names:
            last = names[last]
        elif len(last) > 1 and not (last[0] == "f" and last[1:].isdigit()):
            last = last.capitalize()  # enter, tab, home
        elif mods or last[0] == "f":
            last = last.upper()  # Ctrl+R, F2 (a plain letter key stays as typed: n, x)
        return "+".join([*(m.capitalize() for m in mods), last])

    return ", ".join(one(k.strip()) for k in keys.split(",") if k.strip())


def binding_commands(
    bindings: Iterable[Binding], keymap: dict[str, str], run_action: Callable[[str], Any]
) -> Iterator[SystemCommand]:
    """A palette entry for each of `bindings` but quit (the palette has its own) and those
    without an id: titled by its label, explained by what it does and the key the user's
    key map gives it."""
    for b in bindings:
        if b.id and b.id != "quit":
            key = key_display(keymap.get(b.id, b.key))
            yield SystemCommand(
                b.description.capitalize(),
                f"{key} · {b.tooltip or b.description}",
                partial(run_action, b.action),
            )
