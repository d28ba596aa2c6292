"""The slm-tui App: the session, and the keys every screen answers to.

Its default screen is the writing view, `screens/write.py: WriteScreen` (posting's
`MainScreen`): story, prompt, inspector and side panel, with their keys. The App keeps what
outlives any one screen:
- The session: where models come from (`source`: checkpoint folders, or the models of an
  OpenAI-compatible server with `--server`), the latest list (`checkpoints`, published on
  `checkpoints_changed` with each new scan and each load: the picker follows it while
  open), the loaded `ModelHandle` (`slm_tui.handle`: a local checkpoint or a server's
  model, the same calls) and the one loading, the targets that failed to load (never
  opened by themselves again), the stories written this session and the history,
  preferences (theme, side panel, sampling), the key map, and training
  (`training.state.Training`: the watched run folder, the process started here) with the
  CPU share. What is loaded is named by a target (`checkpoint_loader.Target`): a folder, or
  a server model's whole id.
- The app-wide keys: F1 (or `?`) help for the screen on top (`HelpScreen.over`: its own
  keys, in words), Ctrl+Q quit (it asks first while a run started here trains; the
  sampling settings the user changed are remembered), Ctrl+P the palette (the bindings of
  the screen it is opened on, every checkpoint, every preset), and the Train screen
  (Ctrl+T on the writing view, or `--watch` at start), which is given the training state
  and two callbacks: write with a checkpoint of the run, compare two of them (from the
  Train screen: on one run, where one step is one set of weights).
- The session's dialogs, opened by the writing view's keys: the picker (F2), compare (F8),
  export (F9) and the history browser (F10) are given what they need in their
  constructors; none reaches back here.
Every binding has an id (remap in keys.yaml, see `keys`). Tests and benchmarks reach the
writing view through `write_screen`, or the thin forwards `write`, `current` and
`applied_log`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.signal import Signal

from slm_tui.checkpoint.format import CheckpointInfo, bundled_demo_path
from slm_tui.generation import DEFAULTS as SAMPLING_DEFAULTS
from slm_tui.generation import PRESETS
from slm_tui.handle import ModelHandle
from slm_tui.tui import checkpoint_loader as ckpt
from slm_tui.tui.keys import APP_KEYS, BINDING_IDS, binding_commands
from slm_tui.tui.screens.checkpoint_picker import CheckpointPicker
from slm_tui.tui.screens.compare import CompareScreen
from slm_tui.tui.screens.export import ExportScreen
from slm_tui.tui.screens.help import HelpScreen
from slm_tui.tui.screens.history import HistoryScreen
from slm_tui.tui.screens.write import WriteScreen
from slm_tui.tui.store import History, Preferences, keymap_path, load_keymap
from slm_tui.tui.story import Story
from slm_tui.tui.training.cpu_share import CpuShare
from slm_tui.tui.training.quit_dialog import QuitWhileTraining
from slm_tui.tui.training.screen import TrainScreen
from slm_tui.tui.training.state import Training
from slm_tui.tui.widgets.sampling_panel import LIVE_SETTINGS


class SlmApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "slm-tui"
    BINDINGS: ClassVar[list[BindingType]] = list(APP_KEYS)

    def __init__(
        self,
        checkpoint: Path | None = None,
        checkpoints_dir: Path = Path("checkpoints"),
        device: str = "auto",
        rescan: bool = True,
        demo: bool = True,
        server: str | None = None,
        api_key: str | None = None,
        watch: Path | None = None,
    ) -> None:
        super().__init__()
        self.demo = demo  # list and open the bundled demo (tests turn it off)
        self.initial_checkpoint = checkpoint
        self.checkpoints_dir = Path(checkpoints_dir)
        self.device = device
        self.server = server  # stories come from this OpenAI-compatible server, when set
        self.source: ckpt.Source = (
            ckpt.ServerModels(server, api_key)
            if server is not None
            else ckpt.LocalCheckpoints(
                self.checkpoints_dir,
                tuple(p for p in (checkpoint, watch) if p is not None),
                demo,
                device,
            )
        )
        self.rescan_enabled = rescan
        self.checkpoints: list[CheckpointInfo] = []  # the latest scan
        # Published with each new scan and each load: the picker follows it while open.
        self.checkpoints_changed: Signal[ckpt.CheckpointList] = Signal(self, "checkpoints")
        self.scanned = False  # the first scan answered
        self.loaded: ModelHandle | None = None
        self.loading: ckpt.Target | None = None
        self.failed: set[ckpt.Target] = set()  # never auto-load these again this session
        self.session: list[Story] = []  # the stories written since the app started
        self.history = History()
        self.prefs = Preferences()
        self.keymap: dict[str, str] = {}
        self.watch_dir = watch  # open the Train screen on this run folder at start
        self.training = Training(watch, self.checkpoints_dir)
        self.cpu = CpuShare()
        self.write_screen = WriteScreen(self.checkpoints_dir)

    def get_default_screen(self) -> WriteScreen:
        return self.write_screen

    def on_mount(self) -> None:
        """Before the writing view mounts: preferences, theme, key map and history."""
        prefs = self.prefs.load()
        if prefs.get("theme") in self.available_themes:
            self.theme = prefs["theme"]
        self.theme_changed_signal.subscribe(self, lambda theme: self.prefs.set("theme", theme.name))
        self.keymap, problems = load_keymap(keymap_path(), BINDING_IDS)
        if self.keymap:
            self.set_keymap(self.keymap)
        for problem in problems:
            self.notify(problem, severity="warning", timeout=8, markup=False)
        self.history.load()
        if self.history.skipped:
            self.notify(
                f"{self.history.skipped} unreadable history lines skipped", severity="warning"
            )

    # -- the session ---------------------------------------------------------------------
    @property
    def loaded_path(self) -> Path | None:
        """The loaded checkpoint's folder (None for a server's model)."""
        loaded = self.loaded.identity if self.loaded is not None else None
        return loaded if isinstance(loaded, Path) else None

    @property
    def checkpoint_list(self) -> ckpt.CheckpointList:
        return ckpt.CheckpointList(
            list(self.checkpoints), self.loaded.identity if self.loaded is not None else None
        )

    @property
    def current(self) -> Story | None:
        """The story the writing view shows."""
        return self.write_screen.current

    @property
    def applied_log(self) -> list[tuple[str, int, int, dict[str, Any]]]:
        """(story id, settings version, first token using it, the changes), for tests."""
        return self.write_screen.applied_log

    def write(self, prompt: str, story: Story | None = None) -> bool:
        """Write a story from `prompt` in the writing view (or continue `story`)."""
        return self.write_screen.write(prompt, story)

    def startup_target(self, first: bool) -> ckpt.Target | None:
        """What to open while nothing is loaded: --checkpoint, else the demo, else the newest
        that never failed."""
        if first and self.initial_checkpoint is not None:
            return self.initial_checkpoint
        demo = bundled_demo_path() if self.demo and self.server is None else None
        if first and demo is not None:
            return demo
        for info in self.checkpoints:
            target = ckpt.target_of(info)
            if not info.error and target not in self.failed:
                return target
        return None

    def action_clear_history(self) -> None:
        n = len(self.history.stories)
        self.history.clear()
        self.session = [s for s in self.session if s.streaming]
        self.history.stories.extend(self.session)
        self.write_screen.refresh_history()
        self.notify(f"History cleared ({n} stories).")

    # -- app-wide keys -------------------------------------------------------------------
    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen.over(self.screen, self.keymap, str(keymap_path())))

    async def action_quit(self) -> None:
        process = self.training.process
        if isinstance(self.screen, QuitWhileTraining):
            return  # the question is already asked
        if process is not None and process.running:

            def answer(choice: str | None) -> None:
                if choice == "stop":
                    self.training.stop()
                if choice is not None:
                    self._quit()

            self.push_screen(QuitWhileTraining(process.request.output, process.pid), answer)
            return
        self._quit()

    def _quit(self) -> None:
        self.write_screen.streamer.cancel()
        # Only what the user changed: a field left at its default follows the defaults of
        # later versions instead of freezing today's.
        current = self.write_screen.settings
        changed = {
            k: getattr(current, k)
            for k in LIVE_SETTINGS
            if getattr(current, k) != getattr(SAMPLING_DEFAULTS, k)
        }
        self.prefs.set("sampling", changed)
        self.exit()

    # -- the session's dialogs (their keys are the writing view's) ------------------------
    def action_checkpoints(self) -> None:
        writer = self.write_screen

        def chosen(target: ckpt.Target | None) -> None:
            loaded = self.loaded.identity if self.loaded is not None else None
            if target is not None and ckpt.identity(target) != loaded:
                writer.load_checkpoint(target)

        picker = CheckpointPicker(self.checkpoint_list, self.checkpoints_changed, writer.rescan)
        self.push_screen(picker, chosen)
        writer.rescan()

    def action_export(self) -> None:
        def done(path: Path | None) -> None:
            if path is not None:
                self.notify(f"Exported to {path}", title="Export", markup=False)

        self.push_screen(ExportScreen(self.current, list(self.session)), done)

    def action_history(self) -> None:
        """The history browser (F10): search, open, rename, delete, copy."""
        current = self.current.id if self.current is not None else None
        browser = HistoryScreen(self.history, self.session, current)
        self.push_screen(browser, self.write_screen.show_story)

    def action_compare(
        self, checkpoints: list[CheckpointInfo] | None = None, same_run: bool = False
    ) -> None:
        """Compare the loaded model with another of `checkpoints` (the list by default;
        `same_run`: all of one run, where one step means the same weights)."""
        if self.loaded is None:
            self.notify("No checkpoint loaded: press F2 to pick one.", severity="warning")
            return
        writer = self.write_screen
        seed_text = writer.prompt.text or (self.current.prompt if self.current else "")
        others = self.checkpoints if checkpoints is None else checkpoints
        self.push_screen(
            CompareScreen(
                self.loaded, writer.settings, others, self.source, seed_text, same_run=same_run
            )
        )

    # -- training --------------------------------------------------------------------------
    def action_train(self) -> None:
        screen = TrainScreen(
            self.training, self.write_with, self.compare_run, self.write_screen.check_training
        )
        self.push_screen(screen)

    def write_with(self, path: Path) -> None:
        """Back to the writing view with `path` loading (reloaded even when it is the loaded
        folder: latest/ is replaced in place as the run trains)."""
        while isinstance(self.screen, TrainScreen):
            self.pop_screen()
        self.write_screen.load_checkpoint(path)
        self.write_screen.prompt.focus()

    def compare_run(self, folder: Path) -> None:
        """The compare screen on a run's checkpoints: its newest as side A (loaded first), the
        others (best/, evals/step-*) to choose from for side B."""
        infos = [i for i in ckpt.scan_checkpoints(folder, demo=False) if not i.error]
        if infos:
            then = partial(self.action_compare, infos, same_run=True)
            self.write_screen.load_checkpoint(Path(infos[0].path), then=then)

    def get_system_commands(self, screen: Screen) -> Iterator[SystemCommand]:
        """The palette: Textual's commands, the bindings of the screen it was opened on
        (they act on it) and the App's, and the session's commands."""
        yield from super().get_system_commands(screen)
        writer = self.write_screen
        own = [b for b in type(screen).BINDINGS if isinstance(b, Binding)]
        bindings = list({b.id: b for b in (*APP_KEYS, *own) if b.id}.values())
        yield from binding_commands(
            bindings, self.keymap, partial(self.run_action, default_namespace=screen)
        )
        yield SystemCommand("Clear history", "Forget every stored story", self.action_clear_history)
        yield SystemCommand(
            "Rescan checkpoints",
            f"Ask {self.server} again" if self.server else f"Look in {self.checkpoints_dir} again",
            writer.rescan,
        )
        for info in self.checkpoints:
            if not info.error:
                target = ckpt.target_of(info)
                load = partial(writer.load_checkpoint, target)
                where = f"on {self.server}" if isinstance(target, str) else str(target)
                yield SystemCommand(f"Load checkpoint {info.name}", where, load, discover=False)
        for name, values in PRESETS.items():
            preset = partial(writer.action_preset, name)
            yield SystemCommand(f"Preset {name}", str(values), preset, discover=False)
