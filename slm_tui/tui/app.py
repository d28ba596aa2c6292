"""The slm-tui App: write a seed sentence, watch your own model continue it token by token.

Layout (styles in app.tcss): the story (or the token view, F3) over the prompt and the
tokenizer inspector; a side panel (F4) with the checkpoint, the sampling controls and the
history; a status line. Notable:
- Generation runs in a thread worker and reaches the screen in ≤30 Hz batches (`Streamer`),
  so the UI keeps its frame rate at any token rate and the engine never waits on the UI.
- Sampling changes made mid-story go through `LiveSettings.update`; the engine stamps each
  token with the settings version it used, and the status line says from which token a
  change applied (`applied_log` keeps the same facts for tests).
- Checkpoints are rescanned every 2 s and loaded in a worker (`checkpoint_loader`); a
  failed load keeps the model. Each new list is published on `checkpoints_changed`. A
  server's list is asked for every 2 s only while it cannot be reached; once it answered,
  every `SERVER_RESCAN_SECONDS` (F2 and `r` ask at once), and never while a scan is still
  out. What is loaded is named by a target (`checkpoint_loader.Target`): a folder, or a
  server model's whole id.
- The status line's note about a sampling change belongs to the story it was made in: a
  new story, a preset chosen between stories and a story picked from history clear it.
  Continuing a story with other settings records the change from the next token.
- Dialogs and the compare screen are given what they need in their constructors; none of
  them reaches back into the app.
- The prompt is inspected (tokenized) once per burst of edits, not once per key: a 50 KB
  paste typed in as keys queues one inspection, not 50,000. It holds at most what the
  model can read (`PROMPT_CHARS_PER_TOKEN` x its context; the last characters are kept,
  as generation keeps the last tokens), and says so when it cuts.
- Messages that carry a path or a model's text are shown without markup.
- Every binding has an id (remap in keys.yaml, see `keys`), every action is in the command
  palette.
- Training (Ctrl+T, `--watch`): the Train screen is given the app's `Training` (the run
  folder, the process started here) and two callbacks: write with a checkpoint of the run,
  compare two of them. While a local run trains, generation uses one thread and the
  status line says so (`cpu_share`); quitting while a run started here trains asks first.

Longer than the project's ~400-line guide on purpose: this class is where the widgets, the
workers, persistence and the screens meet, and each method is a few lines of wiring. What
has a seam of its own already lives apart (keys, checkpoint_loader, streamer, store,
screens/, widgets/). The screen-opening actions and palette entries were a mixin once; they
are folded back in because the mixin's contract (a Protocol) would have listed most of
the App: the loaded checkpoint, the list, the session, the settings, the key map, loading,
rescanning, notifying and pushing screens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.signal import Signal
from textual.widgets import Footer, TextArea

from slm_tui.checkpoint.format import CheckpointInfo, bundled_demo_path
from slm_tui.errors import GenerationError
from slm_tui.generation import DEFAULTS as SAMPLING_DEFAULTS
from slm_tui.generation import PRESETS, Event
from slm_tui.handle import ModelHandle
from slm_tui.tui import checkpoint_loader as ckpt
from slm_tui.tui.keys import BINDING_IDS, KEYS, MAIN_ACTIONS, binding_commands
from slm_tui.tui.screens.checkpoint_picker import CheckpointPicker
from slm_tui.tui.screens.compare import CompareScreen
from slm_tui.tui.screens.export import ExportScreen
from slm_tui.tui.screens.help import HelpScreen
from slm_tui.tui.store import History, Preferences, keymap_path, load_keymap
from slm_tui.tui.story import Story
from slm_tui.tui.streamer import Streamer
from slm_tui.tui.training.cpu_share import CpuShare
from slm_tui.tui.training.quit_dialog import QuitWhileTraining
from slm_tui.tui.training.screen import TrainScreen
from slm_tui.tui.training.state import Training
from slm_tui.tui.widgets.checkpoint_card import CheckpointCard
from slm_tui.tui.widgets.empty_state import EmptyState
from slm_tui.tui.widgets.history_list import HistoryList
from slm_tui.tui.widgets.inspector import TokenInspector
from slm_tui.tui.widgets.prompt_area import PromptArea
from slm_tui.tui.widgets.sampling_panel import LABELS, LIVE_SETTINGS, SamplingPanel, format_value
from slm_tui.tui.widgets.status_bar import StatusBar
from slm_tui.tui.widgets.story_view import StoryView
from slm_tui.tui.widgets.token_view import TokenView

RESCAN_SECONDS = 2.0
SERVER_RESCAN_SECONDS = 30.0  # a server that answered: its list is asked for this often
# A token is at most this many characters (SentencePiece pieces: 16), so the last
# context x 32 characters of a prompt hold every token the model can read.
PROMPT_CHARS_PER_TOKEN = 32
PROMPT_CHARS_UNLOADED = 1 << 16  # before any checkpoint is loaded


class SlmApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "slm-tui"
    BINDINGS: ClassVar[list[BindingType]] = list(KEYS)

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
        self.watch_dir = watch  # open the Train screen on this run folder at start
        self.training = Training(watch, self.checkpoints_dir)
        self.cpu = CpuShare()
        self._compare_after_load: list[CheckpointInfo] | None = None
        self.rescan_enabled = rescan
        self.loaded: ModelHandle | None = None
        self.loading: ckpt.Target | None = None
        self.checkpoints: list[CheckpointInfo] = []  # the latest scan
        # Published with each new scan and each load: the picker follows it while open.
        self.checkpoints_changed: Signal[ckpt.CheckpointList] = Signal(self, "checkpoints")
        self.scanned = False
        self.current: Story | None = None
        self.session: list[Story] = []
        self.history = History()
        self.prefs = Preferences()
        self.keymap: dict[str, str] = {}
        self.streamer = Streamer(self, "generate", self._stream_update, self._settings_applied)
        # (story id, settings version, first token index using it, the changes): for tests.
        self.applied_log: list[tuple[str, int, int, dict[str, Any]]] = []
        self._scan_signature: tuple = ()
        self._failed: set[ckpt.Target] = set()  # never auto-load these again this session
        self._scanning = False  # a scan is out (a server that drips: never two at once)
        self._scan_again = False  # a rescan was asked for while one was out
        self._scanned_at = -1e9  # time.monotonic() of the last scan that answered
        self._scan_note: str | None = None
        self._inspect_pending = False  # an inspection is queued; edits until then join it

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="story-column"):
                yield EmptyState(self.checkpoints_dir, id="empty")
                yield StoryView(id="story")
                yield TokenView(id="tokens")
                # The status line sits right under the story: the two change on every flush,
                # and the compositor repaints the rectangle around everything that changed.
                yield StatusBar(id="status")
                yield PromptArea(id="prompt")
                yield TokenInspector(id="inspector")
            with Vertical(id="side"):
                yield CheckpointCard(id="card")
                yield SamplingPanel(id="sampling")
                yield HistoryList(id="history")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        prefs = self.prefs.load()
        if prefs.get("theme") in self.available_themes:
            self.theme = prefs["theme"]
        self.theme_changed_signal.subscribe(self, lambda theme: self.prefs.set("theme", theme.name))
        if prefs.get("side_panel") is False:
            self.query_one("#side").display = False
        if isinstance(prefs.get("sampling"), dict):
            self.query_one(SamplingPanel).set_values(prefs["sampling"])
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
        self._refresh_history()
        self.query_one("#tokens").display = False
        self.query_one("#story").display = False
        self.query_one("#story").border_title = "story"
        self.query_one("#tokens").border_title = "tokens · ←/→ select · red = unlikely"
        self.query_one("#prompt").border_title = "seed sentence"
        self.query_one("#prompt").focus()
        self.action_rescan()
        if self.rescan_enabled:
            self.set_interval(RESCAN_SECONDS, self._auto_rescan, name="rescan")
        self.set_interval(RESCAN_SECONDS, self.check_training, name="training")
        if self.watch_dir is not None:
            self.action_train()

    # -- checkpoints -------------------------------------------------------------------
    def action_rescan(self) -> None:
        if self._scanning:  # one scan at a time; this one starts when it answers
            self._scan_again = True
            return
        self._scanning, self._scan_again = True, False
        ckpt.start_scan(self, self.source)

    def _auto_rescan(self) -> None:
        """The timer's rescan: a server that answered is asked again only now and then."""
        recent = time.monotonic() - self._scanned_at < SERVER_RESCAN_SECONDS
        if self.server is None or not recent:
            self.action_rescan()

    def on_checkpoints_scanned(self, message: ckpt.CheckpointsScanned) -> None:
        self._scanning = False
        if self._torn_down:
            return  # a worker finished while the app was closing
        if self._scan_again:
            self.call_later(self.action_rescan)
        first = not self.scanned
        self.scanned = True
        self._scanned_at = time.monotonic() if message.error is None else -1e9
        if message.note is not None and message.note != self._scan_note:
            self.notify(message.note, severity="warning", timeout=8, markup=False)
        self._scan_note = message.note
        if message.error is not None:  # a server that is down: say so, the rescan retries
            self.query_one(StatusBar).set_note(
                f"{message.error} · retrying every {RESCAN_SECONDS:g} s", "$text-error"
            )
            self.query_one(EmptyState).set_problem(message.error)
        elif self.server is not None and self.query_one(StatusBar).note.startswith("cannot"):
            self.query_one(StatusBar).set_note(f"connected to {self.server}", "$text-success")
        signature = message.signature
        if signature != self._scan_signature or first:
            self._scan_signature = signature
            self.checkpoints = message.infos
            self.checkpoints_changed.publish(self.checkpoint_list)
        if self.loaded is None and self.loading is None:
            target = self._startup_target(first)
            if target is not None:
                self.load_checkpoint(target)
            else:
                self._show_empty()

    def _startup_target(self, first: bool) -> ckpt.Target | None:
        """What to open while nothing is loaded: --checkpoint, else the demo, else the newest."""
        if first and self.initial_checkpoint is not None:
            return self.initial_checkpoint
        demo = bundled_demo_path() if self.demo and self.server is None else None
        if first and demo is not None:
            return demo
        for info in self.checkpoints:
            target = ckpt.target_of(info)
            if not info.error and target not in self._failed:
                return target
        return None

    def load_checkpoint(self, target: ckpt.Target) -> None:
        """Load `target` (a checkpoint folder, or a server model's id) in a worker; the
        current model stays until the new one is ready."""
        target = target if isinstance(target, str) else Path(target)
        self.loading = target
        self.query_one(CheckpointCard).loading = True
        self.query_one(StatusBar).set_note(f"loading {ckpt.target_name(target)}…", "$text-accent")
        ckpt.start_load(self, self.source, target)

    def on_checkpoint_loaded(self, message: ckpt.CheckpointLoaded) -> None:
        if self._torn_down:
            return  # a worker finished while the app was closing
        self.loading = None
        self.loaded = message.loaded
        info, device = self.loaded.info, self.loaded.location
        self.query_one(CheckpointCard).loading = False
        self.query_one(CheckpointCard).show(info, device, remote=self.server is not None)
        status = self.query_one(StatusBar)
        status.set_checkpoint(info.name, device)
        status.set_note(f"loaded {info.name}", "$text-success")
        if self.query_one("#empty").display:
            self.query_one("#empty").display = False
            self.query_one("#side").display = self.prefs.get("side_panel", True) is not False
        self._show_story_area()
        self._inspect()
        self.checkpoints_changed.publish(self.checkpoint_list)  # the picker marks the loaded one
        self.cpu.apply()  # torch is imported now: one thread while a local run trains
        if self._compare_after_load is not None:
            infos, self._compare_after_load = self._compare_after_load, None
            self._push_compare(infos)

    def on_checkpoint_failed(self, message: ckpt.CheckpointFailed) -> None:
        if self._torn_down:
            return  # a worker finished while the app was closing
        self.loading = None
        self._failed.add(message.target)
        self.query_one(CheckpointCard).loading = False
        keep = f"; still using {self.loaded.info.name}" if self.loaded else ""
        name = ckpt.target_name(message.target)
        self.query_one(StatusBar).set_note(f"load failed: {name}", "$text-error")
        self.notify(
            f"{message.reason}{keep}",
            title="Cannot load checkpoint",
            severity="error",
            timeout=10,
            markup=False,
        )
        if self.loaded is None:
            self._show_empty()

    @property
    def _torn_down(self) -> bool:
        return not self.default_screen.query(CheckpointCard)

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

    def _show_empty(self) -> None:
        if self.loaded is not None:
            return
        empty = self.query_one(EmptyState)
        empty.set_scanning(not self.scanned)
        empty.display = True
        self.query_one("#side").display = False  # the commands need the full width at 80 columns
        self.query_one("#story").display = False
        self.query_one("#tokens").display = False

    def _show_story_area(self) -> None:
        tokens = self.query_one(TokenView)
        self.query_one("#story").display = not tokens.display

    # -- writing -----------------------------------------------------------------------
    @on(PromptArea.Submitted)
    def _submitted(self, event: PromptArea.Submitted) -> None:
        if not event.text.strip():
            self.bell()
            return
        if self.write(event.text):
            event.prompt_area.clear()

    def write(self, prompt: str, story: Story | None = None) -> bool:
        """Start a new story from `prompt`, or continue `story` (prompt = its whole text)."""
        if self.loaded is None:
            self.notify("No checkpoint loaded: press F2 to pick one.", severity="warning")
            return False
        settings = self.query_one(SamplingPanel).settings
        try:
            settings = settings.validate(self.loaded.vocab_size)  # a server checks its own
        except GenerationError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return False
        if story is None:
            story = Story(
                prompt=prompt, checkpoint=self.loaded.info.name, settings=settings.to_dict()
            )
            self.history.add(story)
            self.session.append(story)
            text = prompt
        else:
            story.finish_reason = story.error = None
            text = story.prompt + story.text
            before, now = story.settings_at_end(), settings.to_dict()
            changed = {k: v for k, v in now.items() if k != "seed" and before.get(k) != v}
            story.record_change(story.num_tokens + 1, changed)  # the continuation's settings
        self.current = story
        self.query_one(StoryView).follow()
        self.query_one(StatusBar).set_note("")
        self.streamer.start(self.loaded, story, text, settings)
        self._stream_update(story, [])
        self._refresh_history()
        return True

    def _stream_update(self, story: Story, events: list[Event]) -> None:
        if self._torn_down:
            return  # a worker finished while the app was closing
        if story is self.current:
            self._draw(story)
        if any(e.kind == "done" for e in events):
            status = self.query_one(StatusBar)
            if story is self.current and status.note == "stopping…":
                status.set_note("")
            self.history.save(story)
            self._refresh_history()
            if story.finish_reason == "error":
                self.notify(
                    story.error or "generation failed",
                    title="Generation stopped",
                    severity="error",
                    markup=False,
                )

    def _settings_applied(
        self, story: Story, version: int, index: int, changes: dict[str, Any]
    ) -> None:
        self.applied_log.append((story.id, version, index, changes))
        what = ", ".join(f"{LABELS.get(k, k)} {format_value(v)}" for k, v in changes.items())
        self.query_one(StatusBar).set_note(
            f"{what or 'settings'} from token {index}", "$text-accent"
        )

    def _draw(self, story: Story | None) -> None:
        self.query_one(StoryView).show(story)
        self.query_one(TokenView).show(story)
        self.query_one(StatusBar).set_story(story)

    def _refresh_history(self) -> None:
        self.query_one(HistoryList).set_stories(
            self.history.stories, self.current and self.current.id
        )

    @on(HistoryList.Picked)
    def _picked(self, event: HistoryList.Picked) -> None:
        story = next((s for s in self.history.stories if s.id == event.story_id), None)
        if story is not None:
            self.query_one(StatusBar).set_note("")  # a note on another story's settings
            self.current = story
            self._draw(story)
            self.query_one(StoryView).follow()

    @on(SamplingPanel.Changed)
    def _sampling_changed(self, event: SamplingPanel.Changed) -> None:
        live = {k: v for k, v in event.changes.items() if k in LIVE_SETTINGS}
        if live and self.streamer.running:
            version = self.streamer.update_settings(**live)
            if version is not None:
                what = ", ".join(f"{LABELS[k]} {format_value(v)}" for k, v in live.items())
                self.query_one(StatusBar).set_note(
                    f"{what}: applies from the next token", "$text-accent"
                )

    @on(TextArea.Changed, "#prompt")
    def _prompt_changed(self) -> None:
        if not self._inspect_pending:  # one inspection for however many edits queue meanwhile
            self._inspect_pending = True
            self.call_later(self._inspect)

    def _inspect(self) -> None:
        self._inspect_pending = False
        prompt = self.query_one(PromptArea)
        self._cap_prompt(prompt)
        tokenizer = self.loaded.tokenizer if self.loaded else None
        where = self.server if self.server is not None and self.loaded is not None else None
        self.query_one(TokenInspector).inspect(prompt.text, tokenizer, server=where)

    @property
    def prompt_limit(self) -> int:
        """The most characters the prompt holds: what the loaded model's context can use."""
        context = self.loaded.context_length if self.loaded is not None else None
        if not context:  # nothing loaded, or a server's model (its context is not said)
            return PROMPT_CHARS_UNLOADED
        return context * PROMPT_CHARS_PER_TOKEN

    def _cap_prompt(self, prompt: PromptArea) -> None:
        limit, text = self.prompt_limit, prompt.text
        if len(text) <= limit:
            return
        prompt.load_text(text[-limit:])
        prompt.move_cursor(prompt.document.end)
        context = self.loaded.context_length if self.loaded else None
        reads = f"this model reads only its last {context} tokens" if context else "too long"
        self.notify(
            f"The prompt was cut to its last {limit:,} characters: {reads}.",
            title="Prompt shortened",
            severity="warning",
        )

    # -- actions -----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MAIN_ACTIONS and len(self.screen_stack) > 1:
            return False
        if action == "cancel":
            return self.streamer.running
        return True

    def action_cancel(self) -> None:
        if self.streamer.cancel():
            self.query_one(StatusBar).set_note("stopping…", "$text-warning")

    def action_regenerate(self) -> None:
        source = self.current or (self.history.stories[-1] if self.history.stories else None)
        if source is None:
            self.notify("Nothing to regenerate yet: write a seed sentence first.")
            return
        self.write(source.prompt)

    def action_continue_story(self) -> None:
        if self.current is None:
            self.notify("Nothing to continue yet: write a seed sentence first.")
            return
        if self.current.streaming:
            self.notify("The story is still being written.")
            return
        self.write(self.current.prompt, story=self.current)

    def action_pin_seed(self) -> None:
        panel = self.query_one(SamplingPanel)
        if panel.settings.seed is not None:
            panel.set_values({"seed": None})
            self.notify("Seed unpinned: every story starts from a fresh seed.")
            return
        seed = self.current.seed if self.current and self.current.seed is not None else 0
        panel.set_values({"seed": seed})
        self.notify(f"Seed pinned to {seed}: stories repeat until you change it.")

    def action_preset(self, name: str) -> None:
        if not self.streamer.running:
            self.query_one(StatusBar).set_note("")  # a note on the last story's settings
        self.query_one(SamplingPanel).apply_preset(name)
        self.notify(f"Preset: {name}", timeout=2)

    def action_toggle_tokens(self) -> None:
        tokens = self.query_one(TokenView)
        if self.loaded is None and not self.current:
            return
        tokens.display = not tokens.display
        self._show_story_area()
        if tokens.display:
            tokens.show(self.current)
            tokens.focus()
        else:
            self.query_one(PromptArea).focus()

    def action_toggle_side(self) -> None:
        side = self.query_one("#side")
        side.display = not side.display
        self.prefs.set("side_panel", bool(side.display))

    def action_focus_history(self) -> None:
        self.query_one("#side").display = True
        self.query_one(HistoryList).focus()

    def action_clear_history(self) -> None:
        n = len(self.history.stories)
        self.history.clear()
        self.session = [s for s in self.session if s.streaming]
        self.history.stories.extend(self.session)
        self._refresh_history()
        self.notify(f"History cleared ({n} stories).")

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
        self.streamer.cancel()
        # Only what the user changed: a field left at its default follows the defaults of
        # later versions instead of freezing today's.
        current = self.query_one(SamplingPanel).settings
        changed = {
            k: getattr(current, k)
            for k in LIVE_SETTINGS
            if getattr(current, k) != getattr(SAMPLING_DEFAULTS, k)
        }
        self.prefs.set("sampling", changed)
        self.exit()

    # -- dialogs -----------------------------------------------------------------------
    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(list(KEYS), self.keymap, str(keymap_path())))

    def action_checkpoints(self) -> None:
        def chosen(target: ckpt.Target | None) -> None:
            if (target is not None and self.loaded is None) or ckpt.identity(
                target
            ) != self.loaded.identity:
                self.load_checkpoint(target)

        picker = CheckpointPicker(
            self.checkpoint_list, self.checkpoints_changed, self.action_rescan
        )
        self.push_screen(picker, chosen)
        self.action_rescan()

    def action_export(self) -> None:
        def done(path: Path | None) -> None:
            if path is not None:
                self.notify(f"Exported to {path}", title="Export", markup=False)

        self.push_screen(ExportScreen(self.current, list(self.session)), done)

    def action_compare(self) -> None:
        if self.loaded is None:
            self.notify("No checkpoint loaded: press F2 to pick one.", severity="warning")
            return
        self._push_compare(self.checkpoints)

    def _push_compare(self, checkpoints: list[CheckpointInfo]) -> None:
        if self.loaded is None:
            return
        seed_text = self.query_one(PromptArea).text or (self.current.prompt if self.current else "")
        settings = self.query_one(SamplingPanel).settings
        self.push_screen(CompareScreen(self.loaded, settings, checkpoints, self.source, seed_text))

    # -- training ----------------------------------------------------------------------
    def action_train(self) -> None:
        screen = TrainScreen(
            self.training, self.write_with, self.compare_run, on_change=self.check_training
        )
        self.push_screen(screen)

    def write_with(self, path: Path) -> None:
        """Back to the story screen with `path` loading (reloaded even when it is the
        loaded folder: latest/ is replaced in place as the run trains)."""
        while isinstance(self.screen, TrainScreen):
            self.pop_screen()
        self.load_checkpoint(path)
        self.query_one(PromptArea).focus()

    def compare_run(self, folder: Path) -> None:
        """The compare screen on a run's checkpoints: its newest as side A, the others
        (best/, evals/step-*) to choose from for side B."""
        infos = [i for i in ckpt.scan_checkpoints(folder, demo=False) if not i.error]
        if not infos:
            return
        self._compare_after_load = infos
        self.load_checkpoint(Path(infos[0].path))

    def check_training(self) -> None:
        """Whether a local run trains now; one thread for generation while it does."""
        if self.server is None and self.cpu.set(self.training.active):
            self.query_one(StatusBar).set_shared(self.cpu.label())

    def get_system_commands(self, screen: Screen) -> Iterator[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from binding_commands(self.keymap, self.run_action)
        yield SystemCommand("Clear history", "Forget every stored story", self.action_clear_history)
        yield SystemCommand(
            "Rescan checkpoints",
            f"Ask {self.server} again" if self.server else f"Look in {self.checkpoints_dir} again",
            self.action_rescan,
        )
        for info in self.checkpoints:
            if not info.error:
                target = ckpt.target_of(info)
                load = partial(self.load_checkpoint, target)
                where = f"on {self.server}" if isinstance(target, str) else str(target)
                yield SystemCommand(f"Load checkpoint {info.name}", where, load, discover=False)
        for name, values in PRESETS.items():
            preset = partial(self.action_preset, name)
            yield SystemCommand(f"Preset {name}", str(values), preset, discover=False)
