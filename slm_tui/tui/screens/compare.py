"""F8: one seed sentence written twice, side by side, streaming together.

The screen is given what it compares: the loaded checkpoint and the panel's settings
(side A), the listed checkpoints and the source to load another one from (side B). Side B
is either the same checkpoint under a preset (greedy / balanced / wild) or another
checkpoint with the same settings, loaded here in a worker. Both sides share one seed (the
pinned one, else a fresh one drawn here), so the only difference between them is the thing
being compared. Each side has its own `Streamer` (thread worker + 30 Hz flush); Esc stops
both, a second Esc closes the screen (back to the screen it was opened from: the writing
screen, or the Train screen). Each side's header names its checkpoint with its step.

Opened on one run's checkpoints (the Train screen's `c`: `same_run`), a checkpoint at the
step of side A holds A's weights (latest/ and best/ are one checkpoint when the last
evaluation was the best): side B then starts on the newest one at another step, the same
ones are marked "same weights as A", and when every one is, B starts on a preset and its
status line says why.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select

from slm_tui.checkpoint.format import CheckpointInfo
from slm_tui.errors import GenerationError
from slm_tui.generation import PRESETS, Event, SamplingSettings
from slm_tui.handle import ModelHandle, ServerModelInfo
from slm_tui.tui import checkpoint_loader as ckpt
from slm_tui.tui.keys import COMPARE_KEYS
from slm_tui.tui.story import Story
from slm_tui.tui.streamer import Streamer
from slm_tui.tui.widgets.status_bar import StatusBar
from slm_tui.tui.widgets.story_view import StoryView


def step_of(info: CheckpointInfo) -> str:
    """ "step 1,200" for a checkpoint ("" for a server's model: a server does not say)."""
    return "" if isinstance(info, ServerModelInfo) else f"step {info.step:,}"


class CompareScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = list(COMPARE_KEYS)
    HELP_TITLE = "the compare screen"
    HELP_EXTRA = (("Enter", "write the seed sentence on both sides"),)

    def __init__(
        self,
        loaded: ModelHandle,
        settings: SamplingSettings,
        checkpoints: list[CheckpointInfo],
        source: ckpt.Source,
        seed_text: str = "",
        same_run: bool = False,
    ) -> None:
        super().__init__()
        self.loaded = loaded  # side A's checkpoint (side B's too, under a preset)
        self.settings = settings  # side A's settings (side B's too, with another checkpoint)
        self.checkpoints = checkpoints  # side B's other choices
        self.source = source  # where another checkpoint is loaded from (folders or a server)
        self.seed_text = seed_text
        self.sides = {
            "a": Streamer(self, "compare-a", self._streamed("a")),
            "b": Streamer(self, "compare-b", self._streamed("b")),
        }
        self.b_loaded: ModelHandle | None = None  # side B's, when it is another one
        self.stories: dict[str, Story] = {}
        # Side B's other models by position ("ckpt:N"): a server's ids are no paths.
        current = loaded.identity
        self.others = [
            info
            for info in checkpoints
            if not info.error and ckpt.identity(ckpt.target_of(info)) != current
        ]
        # One run: a checkpoint at A's step holds A's weights (so would a matching hash).
        a = loaded.info
        self.same_as_a = [
            (same_run and info.step == a.step)
            or (info.weights_sha256 is not None and info.weights_sha256 == a.weights_sha256)
            for info in self.others
        ] if same_run else [False] * len(self.others)  # fmt: skip

    def compose(self) -> ComposeResult:
        others = [  # Content: a checkpoint's name is text, never markup
            (Content(self._choice_label(info, same)), f"ckpt:{n}")
            for n, (info, same) in enumerate(zip(self.others, self.same_as_a, strict=True))
        ]
        choices = [(f"same model · {name}", f"preset:{name}") for name in PRESETS] + others
        # Another checkpoint when there is one (the usual question; on one run, one at
        # another step), else the wildest preset.
        differ = [value for (_, value), same in zip(others, self.same_as_a, strict=True)
                  if not same]  # fmt: skip
        default = differ[0] if differ else f"preset:{list(PRESETS)[-1]}"
        with Horizontal(id="compare-top"):
            yield Input(
                self.seed_text, placeholder="seed sentence, Enter writes both", id="compare-seed"
            )
            yield Select(choices, value=default, allow_blank=False, id="compare-b-choice")
        with Horizontal(id="compare-panes"):
            for side in ("a", "b"):
                with Vertical(classes="compare-pane", id=f"pane-{side}"):
                    yield Label("", classes="compare-title", id=f"title-{side}")
                    yield StoryView(id=f"story-{side}")
                    yield StatusBar(id=f"status-{side}")
        yield Footer(compact=True)

    @staticmethod
    def _choice_label(info: CheckpointInfo, same: bool) -> str:
        step = step_of(info)
        return f"{info.name}{f' · {step}' if step else ''} · " + (
            "same weights as A" if same else "same settings"
        )

    def on_mount(self) -> None:
        self._titles()
        self.query_one("#compare-seed", Input).focus()
        self._choose_b(self.query_one(Select).value)
        if self.others and all(self.same_as_a):
            self.query_one("#status-b", StatusBar).set_note(
                f"every other checkpoint of this run is at {step_of(self.loaded.info)}, as A: "
                "the same weights · comparing settings instead",
                "$text-warning",
            )

    # -- side B ------------------------------------------------------------------------
    @on(Select.Changed, "#compare-b-choice")
    def _b_changed(self, event: Select.Changed) -> None:
        self._choose_b(event.value)

    def _choose_b(self, value: Any) -> None:
        self.b_loaded = None
        if isinstance(value, str) and value.startswith("ckpt:"):
            target = ckpt.target_of(self.others[int(value.removeprefix("ckpt:"))])
            self.query_one("#pane-b").loading = True
            ckpt.start_load(self, self.source, target, group="compare-load")
        self._titles()

    def on_checkpoint_loaded(self, message: ckpt.CheckpointLoaded) -> None:
        message.stop()
        self.b_loaded = message.loaded
        self.query_one("#pane-b").loading = False
        self._titles()

    def on_checkpoint_failed(self, message: ckpt.CheckpointFailed) -> None:
        message.stop()
        self.query_one("#pane-b").loading = False
        self.query_one("#status-b", StatusBar).set_note(message.reason, "$text-error")

    def _b_choice(self) -> str:
        return str(self.query_one(Select).value)

    def _side_setup(self, side: str) -> tuple[ModelHandle, SamplingSettings] | None:
        """(loaded checkpoint, settings) for a side; None while side B is still loading."""
        if side == "a":
            return self.loaded, self.settings
        choice = self._b_choice()
        if choice.startswith("preset:"):
            preset = PRESETS[choice.removeprefix("preset:")]
            return self.loaded, self.settings.replace(**preset)
        return (self.b_loaded, self.settings) if self.b_loaded is not None else None

    def _titles(self) -> None:
        for side in ("a", "b"):
            setup = self._side_setup(side)
            label = self.query_one(f"#title-{side}", Label)
            if setup is None:
                label.update(Content(f"{side.upper()} · loading…"))
                continue
            loaded, s = setup
            step = step_of(loaded.info)
            label.update(  # Content: a checkpoint's name is text, never markup
                Content(
                    f"{side.upper()} · {loaded.info.name}{f' · {step}' if step else ''} · "
                    f"T {s.temperature:g} top-k {s.top_k} top-p {s.top_p:g} min-p {s.min_p:g}"
                )
            )
            self.query_one(f"#status-{side}", StatusBar).set_checkpoint(
                loaded.info.name, loaded.location
            )

    # -- running -----------------------------------------------------------------------
    @on(Input.Submitted, "#compare-seed")
    def action_run(self) -> None:
        prompt = self.query_one("#compare-seed", Input).value
        if not prompt.strip():
            self.app.bell()
            return
        setups = {side: self._side_setup(side) for side in ("a", "b")}
        if setups["b"] is None:
            self.notify("Side B is still loading.", severity="warning")
            return
        seed = setups["a"][1].seed  # type: ignore[index]
        if seed is None:
            seed = random.randrange(2**31)  # one fresh seed shared by both sides
        for side, (loaded, settings) in setups.items():  # type: ignore[misc]
            try:
                settings = settings.replace(seed=seed).validate(loaded.vocab_size)
            except GenerationError as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
            story = Story(prompt=prompt, checkpoint=loaded.info.name, settings=settings.to_dict())
            self.stories[side] = story
            self.query_one(f"#story-{side}", StoryView).follow()
            self.sides[side].start(loaded, story, prompt, settings)
            self._update(side, story)

    def _streamed(self, side: str) -> Callable[[Story, list[Event]], None]:
        """The streamer callback of one side: redraw it while its story is the shown one."""

        def update(story: Story, events: list[Event]) -> None:
            if self.stories.get(side) is story:
                self._update(side, story)

        return update

    def _update(self, side: str, story: Story) -> None:
        self.query_one(f"#story-{side}", StoryView).show(story)
        self.query_one(f"#status-{side}", StatusBar).set_story(story)

    @property
    def running(self) -> bool:
        return any(s.running for s in self.sides.values())

    def action_stop_or_close(self) -> None:
        if self.running:
            for streamer in self.sides.values():
                streamer.cancel()
        else:
            self.action_close()

    def action_close(self) -> None:
        """Back to the screen this one was opened from."""
        if self.app.screen is self:
            self.app.pop_screen()

    def on_unmount(self) -> None:
        for streamer in self.sides.values():
            streamer.cancel()
