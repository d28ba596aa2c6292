"""The writing view: write a seed sentence, watch your own model continue it token by token.

`WriteScreen` is the app's default screen (posting's `MainScreen`). It composes the story
(or the token view, F3) over the status line, the prompt and the tokenizer inspector, and a
side panel (F4) with the checkpoint card, the sampling controls and the history, and owns
their keys (`keys.WRITE_KEYS`), which fire only while it is on top. It writes in the app's
session (`SlmApp`: the models, the loaded one, the stories, history, preferences) and
drives it:
- Models: the list is rescanned every 2 s (a server's, once it answered, every
  `SERVER_RESCAN_SECONDS`; F2 and `r` ask at once; never two scans at once) and a model
  loaded (`checkpoint_loader`) in thread workers of this screen, which answer here. A
  failed load keeps the model. When the app closes, this screen closes first and Textual
  drops what its workers post after that.
- Writing: a story streams through a `Streamer` (a thread worker, at most 30 batches a
  second), so the UI keeps its frame rate at any token rate. A sampling change made
  mid-story applies from the next token (`LiveSettings.update`) and the status line says
  from which (`applied_log` keeps the same facts for tests); the note belongs to its story
  (a new story, a preset chosen between stories, a story picked from history clear it).
- The brief row (Ctrl+B, `widgets/brief_row.py`) sits above the seed sentence: while shown,
  its brief goes into the settings of the stories written (`SamplingSettings.brief`; a
  brief alone, with no seed sentence, writes a story too), a wrong one stops a story with
  its one-line error, and what a model says about briefs (trained without them, words its
  tokenizer splits badly) is notified once per model.
- The prompt is inspected once per burst of edits (a 50 KB paste typed in as keys queues
  one inspection) and holds what the model can read (`prompt_area.prompt_limit`).
- Continue (Ctrl+O) goes on from where a story stopped (max tokens, Esc); a story the model
  ended itself is not continued, and the status line says why. Ctrl+S copies the story.
  The story is wrapped again when the side panel is hidden or shown (F4).
- Dialogs get what they need in their constructors; a path or a model's text is never
  markup. While a local run trains, generation uses one thread and the status line says
  so (`check_training`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, TextArea

from slm_tui.errors import GenerationError
from slm_tui.generation import Event, SamplingSettings
from slm_tui.tui import checkpoint_loader as ckpt
from slm_tui.tui.keys import HELP, QUIT_SHOWN, WRITE_KEYS
from slm_tui.tui.screens.help import EDITING_KEYS
from slm_tui.tui.story import Story
from slm_tui.tui.streamer import Streamer
from slm_tui.tui.widgets.brief_row import BriefRow, model_notes
from slm_tui.tui.widgets.checkpoint_card import CheckpointCard
from slm_tui.tui.widgets.empty_state import EmptyState
from slm_tui.tui.widgets.history_list import HistoryList
from slm_tui.tui.widgets.inspector import TokenInspector
from slm_tui.tui.widgets.prompt_area import PromptArea, prompt_limit
from slm_tui.tui.widgets.sampling_panel import LABELS, LIVE_SETTINGS, SamplingPanel, format_value
from slm_tui.tui.widgets.status_bar import StatusBar
from slm_tui.tui.widgets.story_view import StoryView
from slm_tui.tui.widgets.token_view import TokenView

if TYPE_CHECKING:
    from slm_tui.tui.app import SlmApp

RESCAN_SECONDS = 2.0
SERVER_RESCAN_SECONDS = 30.0  # a server that answered: its list is asked for this often


class WriteScreen(Screen[None]):
    # F1 and Ctrl+Q are the App's (every screen answers them); they are listed here too
    # because a footer shows its screen's keys before the App's and at 80 columns only the
    # first ones fit. The App's binding is checked first, so these never run on their own.
    BINDINGS: ClassVar[list[BindingType]] = [HELP, *WRITE_KEYS, QUIT_SHOWN]
    HELP_TITLE = "the writing screen"
    HELP_EXTRA = EDITING_KEYS

    def __init__(self, checkpoints_dir: Path) -> None:
        super().__init__()
        self.checkpoints_dir = checkpoints_dir  # named by the empty state
        self.current: Story | None = None  # the story shown
        self.streamer = Streamer(self, "generate", self._stream_update, self._settings_applied)
        # (story id, settings version, first token index using it, the changes): for tests.
        self.applied_log: list[tuple[str, int, int, dict[str, Any]]] = []
        self._scan_signature: tuple = ()
        self._scanning = False  # a scan is out (a server that drips: never two at once)
        self._scan_again = False  # a rescan was asked for while one was out
        self._scanned_at = -1e9  # time.monotonic() of the last scan that answered
        self._scan_note: str | None = None
        self._after_load: Callable[[], None] | None = None  # see load_checkpoint
        self._inspect_pending = False  # an inspection is queued; edits until then join it
        self._brief_said: set[tuple[object, str]] = set()  # (model, line) notified once

    @property
    def slm(self) -> SlmApp:
        """The app, whose session this screen writes in."""
        return cast("SlmApp", self.app)

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
                yield BriefRow(id="brief")
                yield PromptArea(id="prompt")
                yield TokenInspector(id="inspector")
            with Vertical(id="side"):
                yield CheckpointCard(id="card")
                yield SamplingPanel(id="sampling")
                yield HistoryList(id="history")
        yield Footer(compact=True)

    @property
    def story_view(self) -> StoryView:
        return self.query_one(StoryView)

    @property
    def token_view(self) -> TokenView:
        return self.query_one(TokenView)

    @property
    def status_bar(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def prompt(self) -> PromptArea:
        return self.query_one(PromptArea)

    @property
    def brief_row(self) -> BriefRow:
        return self.query_one(BriefRow)

    @property
    def inspector(self) -> TokenInspector:
        return self.query_one(TokenInspector)

    @property
    def empty_state(self) -> EmptyState:
        return self.query_one(EmptyState)

    @property
    def side_panel(self) -> Vertical:
        return self.query_one("#side", Vertical)

    @property
    def card(self) -> CheckpointCard:
        return self.query_one(CheckpointCard)

    @property
    def sampling_panel(self) -> SamplingPanel:
        return self.query_one(SamplingPanel)

    @property
    def history_list(self) -> HistoryList:
        return self.query_one(HistoryList)

    @property
    def settings(self) -> SamplingSettings:
        """The sampling settings a new story starts with (the brief row's brief too)."""
        return self.sampling_panel.settings.replace(brief=self.brief_row.brief)

    def on_mount(self) -> None:
        prefs = self.slm.prefs
        if prefs.get("side_panel") is False:
            self.side_panel.display = False
        if isinstance(prefs.get("sampling"), dict):
            self.sampling_panel.set_values(prefs.get("sampling"))
        self.refresh_history()
        self.token_view.display = False
        self.story_view.display = False
        self.brief_row.display = False
        self.story_view.border_title = "story"
        self.token_view.border_title = "tokens · ←/→ select · red = unlikely"
        self.prompt.border_title = "seed sentence"
        self.prompt.border_subtitle = "Enter: write · Ctrl+J: new line"
        self.prompt.focus()
        self.rescan()
        if self.slm.rescan_enabled:
            self.set_interval(RESCAN_SECONDS, self._auto_rescan, name="rescan")
        self.set_interval(RESCAN_SECONDS, self.check_training, name="training")
        if self.slm.watch_dir is not None:
            self.slm.action_train()

    # -- models ------------------------------------------------------------------------
    def rescan(self) -> None:
        """Ask the source for its list again (at once, or when the scan that is out answers)."""
        if self._scanning:
            self._scan_again = True
            return
        self._scanning, self._scan_again = True, False
        ckpt.start_scan(self, self.slm.source)

    def _auto_rescan(self) -> None:
        """The timer's rescan: a server that answered is asked again only now and then."""
        recent = time.monotonic() - self._scanned_at < SERVER_RESCAN_SECONDS
        if self.slm.server is None or not recent:
            self.rescan()

    def on_checkpoints_scanned(self, message: ckpt.CheckpointsScanned) -> None:
        slm = self.slm
        self._scanning = False
        if self._scan_again:
            self.call_later(self.rescan)
        first = not slm.scanned
        slm.scanned = True
        self._scanned_at = time.monotonic() if message.error is None else -1e9
        if message.note is not None and message.note != self._scan_note:
            self.notify(message.note, severity="warning", timeout=8, markup=False)
        self._scan_note = message.note
        status = self.status_bar
        if message.error is not None:  # a server that is down: say so, the rescan retries
            status.set_note(f"{message.error} · retrying every {RESCAN_SECONDS:g} s", "$text-error")
            self.empty_state.set_problem(message.error)
        elif slm.server is not None and status.note.startswith("cannot"):
            status.set_note(f"connected to {slm.server}", "$text-success")
        if message.signature != self._scan_signature or first:
            self._scan_signature = message.signature
            slm.checkpoints = message.infos
            slm.checkpoints_changed.publish(slm.checkpoint_list)
        if slm.loaded is None and slm.loading is None:
            target = slm.startup_target(first)
            if target is not None:
                self.load_checkpoint(target)
            else:
                self._show_empty()

    def load_checkpoint(self, target: ckpt.Target, then: Callable[[], None] | None = None) -> None:
        """Load `target` (a checkpoint folder, or a server model's id) in a worker, then call
        `then` (the Train screen's compare opens once side A is loaded); the current model
        stays until the new one is ready, and a newer load replaces this one."""
        target = target if isinstance(target, str) else Path(target)
        self._after_load = then
        self.slm.loading = target
        self.card.loading = True
        self.status_bar.set_note(f"loading {ckpt.target_name(target)}…", "$text-accent")
        ckpt.start_load(self, self.slm.source, target)

    def on_checkpoint_loaded(self, message: ckpt.CheckpointLoaded) -> None:
        slm = self.slm
        slm.loading, slm.loaded = None, message.loaded
        info, device = message.loaded.info, message.loaded.location
        self.card.loading = False
        self.card.show(info, device, remote=slm.server is not None)
        self.brief_row.set_tokenizer(message.loaded.tokenizer)
        self.status_bar.set_checkpoint(info.name, device)
        self.status_bar.set_note(f"loaded {info.name}", "$text-success")
        if self.empty_state.display:
            self.empty_state.display = False
            self.side_panel.display = slm.prefs.get("side_panel", True) is not False
        self._show_story_area()
        self._inspect()
        slm.checkpoints_changed.publish(slm.checkpoint_list)  # the picker marks the loaded one
        slm.cpu.apply()  # torch is imported now: one thread while a local run trains
        then, self._after_load = self._after_load, None
        if then is not None:
            then()

    def on_checkpoint_failed(self, message: ckpt.CheckpointFailed) -> None:
        slm = self.slm
        slm.loading, self._after_load = None, None
        slm.failed.add(message.target)
        self.card.loading = False
        keep = f"; still using {slm.loaded.info.name}" if slm.loaded else ""
        name = ckpt.target_name(message.target)
        self.status_bar.set_note(f"load failed: {name}", "$text-error")
        self.notify(
            f"{message.reason}{keep}",
            title="Cannot load checkpoint",
            severity="error",
            timeout=10,
            markup=False,
        )
        if slm.loaded is None:
            self._show_empty()

    def _show_empty(self) -> None:
        if self.slm.loaded is not None:
            return
        self.empty_state.set_scanning(not self.slm.scanned)
        self.empty_state.display = True
        self.side_panel.display = False  # the commands need the full width at 80 columns
        self.story_view.display = False
        self.token_view.display = False

    def _show_story_area(self) -> None:
        self.story_view.display = not self.token_view.display

    # -- writing -----------------------------------------------------------------------
    @on(PromptArea.Submitted)
    def _submitted(self, event: PromptArea.Submitted) -> None:
        row = self.brief_row
        if not event.text.strip() and row.brief is None and row.problem is None:
            self.app.bell()  # a brief alone writes a story; nothing at all does not
            return
        if self.write(event.text):
            event.prompt_area.clear()

    def write(self, prompt: str, story: Story | None = None) -> bool:
        """Start a new story from `prompt`, or continue `story` (prompt = its whole text)."""
        slm, loaded = self.slm, self.slm.loaded
        if loaded is None:
            self.notify("No checkpoint loaded: press F2 to pick one.", severity="warning")
            return False
        try:
            if self.brief_row.problem is not None:
                raise GenerationError(self.brief_row.problem)
            settings = self.settings.validate(loaded.vocab_size)  # a server checks its own
        except GenerationError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return False
        for line in model_notes(loaded, settings.brief):
            if (loaded.identity, line) not in self._brief_said:
                self._brief_said.add((loaded.identity, line))
                self.notify(line, title="Brief", severity="warning", timeout=8, markup=False)
        if story is None:
            story = Story(prompt=prompt, checkpoint=loaded.info.name, settings=settings.to_dict())
            slm.history.add(story)
            slm.session.append(story)
            text = prompt
        else:
            story.finish_reason = story.error = None
            text = story.prompt + story.text
            before, now = story.settings_at_end(), settings.to_dict()
            changed = {k: v for k, v in now.items() if k != "seed" and before.get(k) != v}
            story.record_change(story.num_tokens + 1, changed)  # the continuation's settings
        self.current = story
        self.story_view.follow()
        self.status_bar.set_note("")
        self.streamer.start(loaded, story, text, settings)
        self._stream_update(story, [])
        self.refresh_history()
        self.refresh_bindings()  # Esc stops it now; continue waits for its end
        return True

    def _stream_update(self, story: Story, events: list[Event]) -> None:
        if story is self.current:
            self._draw(story)
        if any(e.kind == "done" for e in events):
            if story is self.current and self.status_bar.note == "stopping…":
                self.status_bar.set_note("")
            self.slm.history.save(story)
            self.refresh_history()
            self.refresh_bindings()
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
        self.status_bar.set_note(f"{what or 'settings'} from token {index}", "$text-accent")

    def _draw(self, story: Story | None) -> None:
        self.story_view.show(story)
        self.token_view.show(story)
        self.status_bar.set_story(story)

    def refresh_history(self) -> None:
        current = self.current.id if self.current is not None else None
        self.history_list.set_stories(self.slm.history.stories, current)

    @on(HistoryList.Picked)
    def _picked(self, event: HistoryList.Picked) -> None:
        self.show_story(event.story_id)

    def show_story(self, story_id: str | None) -> None:
        """Show a story of the history (one the list or the history browser picked); a
        current story the browser deleted leaves the view."""
        stories = self.slm.history.stories
        current = self.current
        if current is not None and not current.streaming and current not in stories:
            self.current = None
            self._draw(None)
        story = next((s for s in stories if s.id == story_id), None)
        if story is not None:
            self.status_bar.set_note("")  # a note on another story's settings
            self.current = story
            self._draw(story)
            self.story_view.follow()
        self.refresh_history()

    @on(SamplingPanel.Changed)
    def _sampling_changed(self, event: SamplingPanel.Changed) -> None:
        live = {k: v for k, v in event.changes.items() if k in LIVE_SETTINGS}
        if live and self.streamer.running:
            version = self.streamer.update_settings(**live)
            if version is not None:
                what = ", ".join(f"{LABELS[k]} {format_value(v)}" for k, v in live.items())
                self.status_bar.set_note(f"{what}: applies from the next token", "$text-accent")

    @on(TextArea.Changed, "#prompt")
    def _prompt_changed(self) -> None:
        if not self._inspect_pending:  # one inspection for however many edits queue meanwhile
            self._inspect_pending = True
            self.call_later(self._inspect)

    def _inspect(self) -> None:
        self._inspect_pending = False
        loaded, server = self.slm.loaded, self.slm.server
        context = loaded.context_length if loaded is not None else None
        if self.prompt.keep_last(self.prompt_limit):
            reads = f"this model reads only its last {context} tokens" if context else "too long"
            self.notify(
                f"The prompt was cut to its last {self.prompt_limit:,} characters: {reads}.",
                title="Prompt shortened",
                severity="warning",
            )
        where = server if server is not None and loaded is not None else None
        tokenizer = loaded.tokenizer if loaded is not None else None
        self.inspector.inspect(self.prompt.text, tokenizer, server=where)

    @property
    def prompt_limit(self) -> int:
        """The most characters the prompt holds: what the loaded model's context can use."""
        loaded = self.slm.loaded
        return prompt_limit(loaded.context_length if loaded is not None else None)

    # -- actions -----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc stops a story: shown and bound only while one streams; continue is shown
        (and its key the palette's) only while none does."""
        if action == "cancel":
            return self.streamer.running
        if action == "continue_story":
            return not self.streamer.running
        return True

    def action_cancel(self) -> None:
        if self.streamer.cancel():
            self.status_bar.set_note("stopping…", "$text-warning")

    def action_regenerate(self) -> None:
        stories = self.slm.history.stories
        source = self.current or (stories[-1] if stories else None)
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
        if self.current.finish_reason == "eos":
            # The model chose to end it: what it writes when made to go on is a new story,
            # not more of this one (it learned that from the end-of-text token).
            self.status_bar.set_note(
                "the model ended this story: nothing to continue · Ctrl+R writes another",
                "$text-warning",
            )
            return
        self.write(self.current.prompt, story=self.current)

    def action_copy_story(self) -> None:
        """The shown story, seed sentence and continuation, to the clipboard (OSC 52)."""
        story = self.current
        if story is None:
            self.notify("Nothing to copy yet: write a seed sentence first.")
            return
        text = story.prompt + story.text
        self.app.copy_to_clipboard(text)
        self.status_bar.set_note(f"copied the story to the clipboard ({len(text):,} characters)",
                                 "$text-success")  # fmt: skip

    def action_pin_seed(self) -> None:
        panel = self.sampling_panel
        if panel.settings.seed is not None:
            panel.set_values({"seed": None})
            self.notify("Seed unpinned: every story starts from a fresh seed.")
            return
        seed = self.current.seed if self.current and self.current.seed is not None else 0
        panel.set_values({"seed": seed})
        self.notify(f"Seed pinned to {seed}: stories repeat until you change it.")

    def action_preset(self, name: str) -> None:
        if not self.streamer.running:
            self.status_bar.set_note("")  # a note on the last story's settings
        self.sampling_panel.apply_preset(name)
        self.notify(f"Preset: {name}", timeout=2)

    def action_toggle_tokens(self) -> None:
        tokens = self.token_view
        if self.slm.loaded is None and not self.current:
            return
        tokens.display = not tokens.display
        self._show_story_area()
        if tokens.display:
            tokens.show(self.current)
            tokens.focus()
        else:
            self.prompt.focus()

    def action_toggle_brief(self) -> None:
        """Show the brief row (its brief applies to the stories written) or hide it (none
        does; its text is kept)."""
        row = self.brief_row
        row.display = not row.display
        (row.input if row.display else self.prompt).focus()

    def action_toggle_side(self) -> None:
        side = self.side_panel
        side.display = not side.display
        self.slm.prefs.set("side_panel", bool(side.display))
        # Rewrap the story at its new width once the layout has it (not only on a Resize).
        self.call_after_refresh(self.story_view.show, self.current)

    # -- training ----------------------------------------------------------------------
    def check_training(self) -> None:
        """Whether a local run trains now; one thread for generation while it does."""
        slm = self.slm
        if slm.server is None and slm.cpu.set(slm.training.active):
            self.status_bar.set_shared(slm.cpu.label())
