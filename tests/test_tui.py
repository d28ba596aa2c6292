"""The Textual app driven through its Pilot with a real tiny checkpoint: writing, cancelling,
live settings, an engine failure, checkpoint swaps, the picker following rescans (and
closed with nothing chosen), token view, inspector, export, history, key maps (the writing
view's acting only while it is on top), the prompt's keys, compare; damaged checkpoints
(and one named with rich markup) beside a good one, a 50 KB paste, a burst of keys; plus the
story view's word wrap and a check that listing checkpoints never imports torch.

Waits poll the app's state (never fixed sleeps), and the settings-change test asserts
through the settings version the engine stamped on each token, not through timing. Only
public Textual API: notifications are read through a spy on `App.notify`.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slm_tui.cli.tui import app as cli_app
from slm_tui.generation import PRESETS
from slm_tui.generation.settings import SamplingSettings
from slm_tui.tui.app import SlmApp
from slm_tui.tui.screens.checkpoint_picker import CheckpointPicker
from slm_tui.tui.screens.compare import CompareScreen
from slm_tui.tui.screens.export import ExportScreen
from slm_tui.tui.screens.help import HelpScreen
from slm_tui.tui.widgets.history_list import HistoryList
from slm_tui.tui.widgets.inspector import TokenInspector
from slm_tui.tui.widgets.prompt_area import PromptArea
from slm_tui.tui.widgets.sampling_panel import SamplingPanel, SettingInput
from slm_tui.tui.widgets.status_bar import StatusBar
from slm_tui.tui.widgets.story_view import StoryView, visible, wrap_offsets
from slm_tui.tui.widgets.token_view import TokenView

SIZE = (100, 30)


async def until(pilot, condition, timeout: float = 20.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def make_app(root: Path, name: str = "alpha", **kwargs) -> SlmApp:
    kwargs.setdefault("rescan", False)
    return SlmApp(checkpoint=root / name, checkpoints_dir=root, demo=False, **kwargs)


def notifications(app: SlmApp) -> list[str]:
    """Record every message the app notifies from now on (the real notify still runs)."""
    seen: list[str] = []
    notify = app.notify

    def spy(message, *args, **kwargs):
        seen.append(str(message))
        return notify(message, *args, **kwargs)

    app.notify = spy  # type: ignore[method-assign]
    return seen


async def ready(pilot, app: SlmApp) -> None:
    await until(pilot, lambda: app.loaded is not None and app.scanned)


def no_eos(app: SlmApp) -> None:
    """Stories go on past EOS (`ignore_eos`), so a story only ends by length or by the user:
    these tests are about cancelling and live changes, and a random model may otherwise end
    every story before a key lands on a loaded machine."""
    panel = app.query_one(SamplingPanel)
    panel.settings = panel.settings.replace(ignore_eos=True)


async def type_setting(pilot, field: str, text: str) -> None:
    """Focus a sampling input, clear it and type `text`, as a user would."""
    inp = pilot.app.query_one(f"#set-{field}", SettingInput)
    inp.focus()
    await pilot.press("end", *["backspace"] * (len(inp.value) + 1), *text)


async def write(pilot, app: SlmApp, prompt: str = "Once upon a time") -> None:
    app.query_one("#prompt").focus()
    await pilot.press(*prompt, "enter")
    await until(pilot, lambda: app.current is not None and app.current.prompt == prompt)


def status(app) -> str:
    return app.query_one("#status", StatusBar).plain_text


async def test_write_a_story(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await write(pilot, app)
        await until(pilot, lambda: not app.current.streaming)
        story = app.current
        assert story.num_tokens > 0 and story.finish_reason in ("eos", "length")
        shown = app.query_one(StoryView).plain_text
        squeeze = lambda text: "".join(text.split())  # noqa: E731 — the view wraps lines
        assert shown.startswith("Once upon a time")
        assert squeeze(visible(story.text)) in squeeze(shown)
        assert f"{story.num_tokens} tok" in status(app) and "alpha" in status(app)
        assert app.query_one(HistoryList).option_count == 1
        assert app.query_one("#prompt").text == ""  # the seed moved into the story


async def test_the_card_shows_recorded_held_out_figures_before_the_in_run_one(
    tui_checkpoints, tui_env, tmp_path
):
    import shutil

    from slm_tui.checkpoint.format import record_evaluation
    from slm_tui.checkpoint.records import RecordedEval

    root = tmp_path / "ckpts"
    shutil.copytree(tui_checkpoints / "alpha", root / "alpha")
    async with make_app(root).run_test(size=SIZE) as pilot:
        app = pilot.app
        await ready(pilot, app)
        card = str(app.query_one("#card").render())
        assert "in-run validation" in card or "bpb" not in card
    entry = RecordedEval("dev.txt", "/data/dev.txt", "f" * 64, 1.234, 3.2, 999, "float32",
                         "2026-12-03")  # fmt: skip
    record_evaluation(root / "alpha", entry)
    async with make_app(root).run_test(size=SIZE) as pilot:
        app = pilot.app
        await ready(pilot, app)
        card = str(app.query_one("#card").render())
        assert "1.234 bpb on dev.txt" in card and "in-run" not in card


async def test_escape_cancels_mid_stream(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        no_eos(app)
        await type_setting(pilot, "max_new_tokens", "100000")
        for attempt in range(5):  # a random tiny model may end a story (EOS) before Esc lands
            await write(pilot, app, f"Once upon a time {attempt}")
            await until(pilot, lambda: app.current.num_tokens >= 2 or not app.current.streaming)
            await pilot.press("escape")
            await until(pilot, lambda: not app.current.streaming)
            if app.current.finish_reason == "cancelled":
                break
        assert app.current.finish_reason == "cancelled"
        assert app.current.num_tokens < 100000
        assert "cancelled" in status(app)
        assert "[cancelled]" in app.query_one(StoryView).plain_text


async def test_story_view_follows_the_end_until_the_reader_scrolls_up(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        no_eos(app)
        await type_setting(pilot, "max_new_tokens", "100000")
        await write(pilot, app)
        view, bar = app.query_one(StoryView), app.query_one(StoryView).vertical_scrollbar
        await until(pilot, lambda: view.max_scroll_y >= 3)  # taller than the view now
        assert view.scroll_y == view.max_scroll_y  # following the end
        view.scroll_to(y=0, animate=False)  # the reader scrolls up ...
        await pilot.pause()
        height = view.virtual_size.height
        await until(pilot, lambda: view.virtual_size.height >= height + 3)
        assert view.scroll_y == 0  # ... and stays where they are while the story grows
        view.scroll_end(animate=False)  # back at the end: following again
        await until(pilot, lambda: view.virtual_size.height >= height + 6)
        assert view.scroll_y == view.max_scroll_y > 0
        # The scrollbar knows the grown height (it is updated without a layout pass).
        assert bar.window_virtual_size == view.virtual_size.height
        assert bar.position == view.scroll_y
        await pilot.press("escape")
        await until(pilot, lambda: not app.current.streaming)


async def test_story_view_catches_up_after_the_token_view(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        no_eos(app)
        await type_setting(pilot, "max_new_tokens", "120")
        await write(pilot, app)
        await pilot.press("f3")  # the token view replaces the story while it streams
        await until(pilot, lambda: not app.current.streaming)
        assert app.current.num_tokens == 120
        await pilot.press("f3")
        squeeze = lambda text: "".join(text.split())  # noqa: E731 — the view wraps lines
        view = app.query_one(StoryView)
        await until(pilot, lambda: squeeze(visible(app.current.text)) in squeeze(view.plain_text))
        assert view.plain_text.startswith("Once upon a time")


async def test_settings_change_applies_mid_stream(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        no_eos(app)
        await type_setting(pilot, "max_new_tokens", "100000")
        for attempt in range(5):  # a random tiny model may end a story (EOS) before the change
            await write(pilot, app, f"Once upon a time {attempt}")
            await until(pilot, lambda: app.current.num_tokens >= 2 or not app.current.streaming)
            app.query_one("#set-temperature").focus()
            await pilot.press(("up", "down")[attempt % 2])  # one step: one settings version
            await until(pilot, lambda: app.applied_log or not app.current.streaming)
            if app.applied_log:
                break
        story_id, version, index, changes = app.applied_log[-1]
        assert story_id == app.current.id and version >= 1 and index > 1
        assert changes == {"temperature": app.query_one(SamplingPanel).settings.temperature}
        assert f"from token {index}" in status(app)
        await pilot.press("escape")
        await until(pilot, lambda: not app.current.streaming)
        tokens = app.current.tokens
        # The engine sampled every token before `index` with the old settings, the rest with the new.
        assert all(t.settings_version < version for t in tokens[: index - 1])
        assert all(t.settings_version >= version for t in tokens[index - 1 :])


async def test_sampling_controls_validate_step_and_presets(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        panel = app.query_one(SamplingPanel)
        before = panel.settings
        await type_setting(pilot, "top_p", "2")
        assert app.query_one("#set-top_p").has_class("-invalid")
        assert panel.settings.top_p <= 1.0  # an invalid value never reaches the engine
        assert "top_p" in str(app.query_one("#sampling-error").render())
        await type_setting(pilot, "top_p", "0.9")
        assert panel.settings.top_p == 0.9
        app.query_one("#set-temperature").focus()
        await pilot.press("up", "up")
        assert panel.settings.temperature == pytest.approx(before.temperature + 0.2)
        await pilot.click("#inc-top_k")
        assert panel.settings.top_k == before.top_k + 5
        await pilot.press("f5")
        for field, value in PRESETS["greedy"].items():
            assert getattr(panel.settings, field) == value
        await pilot.press("f7")
        for field, value in PRESETS["wild"].items():
            assert getattr(panel.settings, field) == value


async def test_regenerate_continue_and_pinned_seed(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_setting(pilot, "max_new_tokens", "20")
        await write(pilot, app)
        await until(pilot, lambda: not app.current.streaming)
        first = app.current
        await pilot.press("ctrl+l")  # pin this story's seed
        assert app.query_one(SamplingPanel).settings.seed == first.seed
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.current is not first and not app.current.streaming)
        again = app.current
        assert again.prompt == first.prompt and again.seed == first.seed
        assert again.text == first.text  # same seed sentence, seed and settings: same story
        n = again.num_tokens
        if again.finish_reason == "length":
            await pilot.press("ctrl+o")
            await until(pilot, lambda: not app.current.streaming)
            assert app.current is again and again.num_tokens > n
        await pilot.press("ctrl+l")  # unpin: fresh seeds again
        assert app.query_one(SamplingPanel).settings.seed is None
        assert len(app.history.stories) == 2


async def test_checkpoint_swap_and_corrupt_checkpoint(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, CheckpointPicker))
        picker = app.screen
        names = [i.name for i in picker.infos]
        assert {"alpha", "beta", "corrupt"} <= set(names)
        table = picker.query_one("DataTable")
        table.move_cursor(row=names.index("beta"))
        await pilot.press("enter")
        await until(pilot, lambda: app.loaded.info.name == "beta")
        assert "beta" in status(app)
        # A corrupt checkpoint: the picker says why, loading it fails, the current one stays.
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, CheckpointPicker))
        picker = app.screen
        names = [i.name for i in picker.infos]
        picker.query_one("DataTable").move_cursor(row=names.index("corrupt"))
        await pilot.pause()
        assert "corrupt" in str(picker.query_one("#picker-detail").render())
        await pilot.press("enter")
        await until(pilot, lambda: app.loading is None and "load failed" in status(app))
        assert app.loaded.info.name == "beta"
        await write(pilot, app, "The dog")
        await until(pilot, lambda: not app.current.streaming)
        assert app.current.checkpoint == "beta" and app.current.num_tokens > 0


async def test_new_checkpoint_appears_without_restart(tiny_checkpoint, tmp_path, tui_env):
    import shutil

    root = tmp_path / "checkpoints"
    app = SlmApp(checkpoints_dir=root, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.scanned)
        empty = app.query_one("#empty")
        assert empty.display and "slm-train model --config tiny" in str(empty.render())
        shutil.copytree(
            tiny_checkpoint, root / "fresh"
        )  # a training run saves its first checkpoint
        await until(pilot, lambda: app.loaded is not None, timeout=15)
        assert app.loaded.info.name == "fresh" and not app.query_one("#empty").display


async def test_token_view_and_inspector(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"Once upon a time")
        inspector = app.query_one(TokenInspector)
        expected = app.loaded.tokenizer.encode("Once upon a time")
        assert inspector.ids == expected
        shown = str(inspector.render())
        assert shown.startswith(f"{len(expected)} tokens")
        assert app.loaded.tokenizer.token_text(expected[1]) in shown and str(expected[1]) in shown
        await pilot.press("enter")
        await until(pilot, lambda: app.current is not None and not app.current.streaming)
        await pilot.press("f3")
        view = app.query_one(TokenView)
        assert view.display and not app.query_one("#story").display
        await pilot.press("home")
        detail = str(view.query_one("#token-detail").render())
        first = app.current.tokens[0]
        assert f"id {first.token_id}" in detail and "alternatives:" in detail
        assert first.top and first.top[0].text in detail
        await pilot.press("right")
        assert view.selected == 1
        strip = str(view.query_one("#token-strip").render())
        assert strip.startswith("Once upon a time")
        await pilot.press("f3")
        assert app.query_one("#story").display


async def test_export_writes_markdown_and_jsonl(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await write(pilot, app)
        await until(pilot, lambda: not app.current.streaming)
        for name in ("story.md", "session.jsonl"):
            await pilot.press("f9")
            await until(pilot, lambda: isinstance(app.screen, ExportScreen))
            if name.endswith("jsonl"):
                await pilot.click("#scope-session")
            path_input = app.screen.query_one("#export-path")
            path_input.value = str(tui_env / name)
            path_input.focus()
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, ExportScreen))
        md = (tui_env / "story.md").read_bytes().decode()  # no newline translation: a random
        # model may write "\r", which read_text() would turn into "\n"
        assert "Once upon a time" in md and app.current.text[:10] in md
        rows = [json.loads(line) for line in (tui_env / "session.jsonl").read_text().splitlines()]
        assert rows[0]["prompt"] == "Once upon a time" and rows[0]["text"] == app.current.text


async def test_history_survives_restart_and_clears(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await write(pilot, app, "A little girl")
        await until(pilot, lambda: not app.current.streaming)
        text = app.current.text
    again = make_app(tui_checkpoints)
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot, again)
        history = again.query_one(HistoryList)
        assert history.option_count == 1
        history.focus()
        history.highlighted = 0
        await pilot.press("enter")
        assert again.current is not None and again.current.text == text
        assert again.query_one(StoryView).plain_text.startswith("A little girl")
        again.action_clear_history()
        assert history.option_count == 0
    third = make_app(tui_checkpoints)
    async with third.run_test(size=SIZE) as pilot:
        await ready(pilot, third)
        assert third.query_one(HistoryList).option_count == 0


async def test_bindings_remappable_from_keys_file(tui_checkpoints, tui_env):
    keys = tui_env / "config" / "keys.yaml"
    keys.parent.mkdir(parents=True)
    keys.write_text("token_view: f12\nregenerate: ctrl+g\nno_such_action: f11\n")
    app = make_app(tui_checkpoints)
    notes = notifications(app)  # before run_test: the key map is read on mount
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert any("no_such_action" in note for note in notes)
        await write(pilot, app)
        await until(pilot, lambda: not app.current.streaming)
        await pilot.press("f3")  # no longer bound
        assert not app.query_one(TokenView).display
        await pilot.press("f12")
        assert app.query_one(TokenView).display
        first = app.current
        await pilot.press("ctrl+g")
        await until(pilot, lambda: app.current is not first)
        assert app.current.prompt == first.prompt
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        assert "Ctrl+G  write the same seed sentence again" in app.screen.text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_action_is_in_the_command_palette(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for title in (
            "Help",
            "Models",
            "Tokens",
            "Compare",
            "Export",
            "Again",
            "Continue",
            "Stop",
            "Clear history",
            "Rescan checkpoints",
            "Load checkpoint beta",
        ):
            assert title in titles


async def test_theme_is_remembered(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        app.theme = "nord"
        await pilot.pause()
    again = make_app(tui_checkpoints)
    async with again.run_test(size=SIZE) as pilot:
        assert again.theme == "nord"


async def test_only_changed_sampling_settings_are_remembered(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_setting(pilot, "top_p", "0.9")
        await app.action_quit()
    saved = json.loads((tui_env / "data" / "settings.json").read_text())["sampling"]
    # The user's changes (and the fixture's 24 tokens) are kept; a field left at its default
    # is not written, so it follows the defaults of later versions.
    assert saved == {"top_p": 0.9, "max_new_tokens": 24}
    again = make_app(tui_checkpoints)
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot, again)
        settings = again.query_one(SamplingPanel).settings
        assert settings.top_p == 0.9 and settings.max_new_tokens == 24
        assert settings.temperature == SamplingSettings().temperature


async def test_compare_two_checkpoints_side_by_side(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"Once upon a time", "f8")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await until(pilot, lambda: screen.b_loaded is not None)
        await pilot.press("enter")
        await until(pilot, lambda: len(screen.stories) == 2 and not screen.running)
        a, b = screen.stories["a"], screen.stories["b"]
        assert a.checkpoint == "alpha" and b.checkpoint != "alpha"
        assert a.seed == b.seed and a.num_tokens > 0 and b.num_tokens > 0
        assert a.text == b.text  # alpha and beta are copies of one model: the same seed agrees
        await pilot.press("escape")
        assert not isinstance(app.screen, CompareScreen)


def test_cli_rejects_a_missing_checkpoint(tmp_path):
    result = CliRunner().invoke(cli_app, ["--checkpoint", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such checkpoint" in result.output
    assert "--checkpoints-dir" in CliRunner().invoke(cli_app, ["--help"]).output


async def test_prompt_keys_newline_and_submit(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        prompt = app.query_one(PromptArea)
        prompt.focus()
        await pilot.press(*"Once", "shift+enter", *"upon", "ctrl+j", *"a time")
        assert prompt.text == "Once\nupon\na time"  # Shift+Enter and Ctrl+J: new lines
        assert app.current is None  # ... and neither wrote a story
        await pilot.press("enter")
        await until(pilot, lambda: app.current is not None)
        assert app.current.prompt == "Once\nupon\na time" and prompt.text == ""
        await until(pilot, lambda: not app.current.streaming)
        assert app.query_one(StoryView).plain_text.startswith("Once\nupon\na time")


async def test_a_burst_of_keys_ending_in_enter_writes_the_whole_prompt(tui_checkpoints, tui_env):
    """Keys that arrive together (a paste without bracketed paste, tmux send-keys, a fast
    typist) are handled in order: Enter submits the text typed before it, not an empty one."""
    from textual import events

    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        app.query_one(PromptArea).focus()
        await pilot.pause()
        for key in [*"Once", "ctrl+j", *"upon", "enter"]:  # posted at once, as a driver does
            char = {"enter": "\r", "ctrl+j": "\n"}.get(key, key)
            app.post_message(events.Key(key, char))
        await until(pilot, lambda: app.current is not None)
        assert app.current.prompt == "Once\nupon"
        await until(pilot, lambda: not app.current.streaming)


async def test_engine_failure_is_shown_and_the_app_goes_on(tui_checkpoints, tui_env):
    class FailsOnThirdToken:
        """The real tokenizer (EOS off), until the engine asks for a third token's bytes."""

        def __init__(self, tok) -> None:
            self.tok, self.eos_id, self.calls = tok, -1, 0

        def token_bytes(self, token_id):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("disk on fire\nsecond line")
            return self.tok.token_bytes(token_id)

        def __getattr__(self, name):
            return getattr(self.tok, name)

    app = make_app(tui_checkpoints)
    notes = notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        real = app.loaded.tokenizer
        app.loaded.checkpoint.tokenizer = FailsOnThirdToken(real)
        await write(pilot, app)
        await until(pilot, lambda: not app.current.streaming)
        story = app.current
        # The engine's exception became the story's "done" event (Event.failed), one line.
        assert story.finish_reason == "error" and story.error == "RuntimeError: disk on fire"
        assert story.num_tokens == 2
        assert "[error: RuntimeError: disk on fire]" in app.query_one(StoryView).plain_text
        assert status(app).startswith("error")
        assert "RuntimeError: disk on fire" in notes
        app.loaded.checkpoint.tokenizer = real  # the app keeps working
        await write(pilot, app, "The dog")
        await until(pilot, lambda: not app.current.streaming)
        assert app.current.finish_reason in ("eos", "length") and app.current.error is None


async def test_picker_follows_rescans_and_marks_the_loaded_one(tiny_checkpoint, tmp_path, tui_env):
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoint, root / "first")
    app = SlmApp(checkpoints_dir=root, demo=False, rescan=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, CheckpointPicker))
        picker = app.screen
        table = picker.query_one("DataTable")
        await until(pilot, lambda: [i.name for i in picker.infos] == ["first"])
        assert table.get_row_at(0)[:2] == ["●", "first"]  # the loaded checkpoint is marked
        shutil.copytree(tiny_checkpoint, root / "second")  # a training run saves another one
        await pilot.press("r")  # the picker asks the app to rescan; the app publishes the list
        await until(pilot, lambda: len(picker.infos) == 2)
        rows = {table.get_row_at(i)[1]: table.get_row_at(i)[0] for i in range(2)}
        assert rows == {"first": "●", "second": " "}


async def test_closing_the_picker_keeps_the_model(tui_checkpoints, tmp_path, tui_env):
    """Esc or F2 closes the picker with nothing chosen: the model stays loaded (or none stays
    none), and the app goes on. (Both crashed the app: the answer None was read as a target.)"""
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        for key in ("escape", "f2"):
            await pilot.press("f2")
            await until(pilot, lambda: isinstance(app.screen, CheckpointPicker))
            await pilot.press(key)
            await until(pilot, lambda: not isinstance(app.screen, CheckpointPicker))
            await pilot.pause()
            assert app.is_running and app.loading is None and app.loaded.info.name == "alpha"
    empty = SlmApp(checkpoints_dir=tmp_path / "none", demo=False, rescan=False)
    async with empty.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: empty.scanned)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(empty.screen, CheckpointPicker))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(empty.screen, CheckpointPicker))
        await pilot.pause()
        assert empty.is_running and empty.loaded is None


async def test_the_writing_views_keys_act_only_while_it_is_on_top(tui_checkpoints, tui_env):
    """Its keys are the writing screen's bindings: under a dialog or the compare screen they
    do nothing (F1 and Ctrl+Q are the app's, and answer everywhere)."""
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await write(pilot, app)
        await until(pilot, lambda: not app.current.streaming)
        story, tokens, side = app.current, app.query_one(TokenView), app.query_one("#side")
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f3", "f4", "ctrl+r", "ctrl+t", "f9")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("f1")  # the app's key closes what it opened
        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        await pilot.press("f2", "f3", "f4", "ctrl+o", "ctrl+t", "f10")
        assert isinstance(app.screen, CompareScreen) and len(app.screen_stack) == 2
        await pilot.press("escape")
        assert app.screen is app.write_screen
        assert app.current is story and not story.streaming and len(app.history.stories) == 1
        assert not tokens.display and side.display


def test_listing_checkpoints_does_not_import_torch(tui_checkpoints):
    code = (
        "import sys; from pathlib import Path\n"
        "import slm_tui.tui.app\n"
        "from slm_tui.tui.checkpoint_loader import scan_checkpoints\n"
        f"infos = scan_checkpoints(Path({str(tui_checkpoints)!r}), demo=True)\n"
        "assert {'alpha', 'beta', 'corrupt'} <= {i.name for i in infos}, infos\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- the story view's word wrap ----------------------------------------------------------
def lines(text: str, width: int) -> list[str]:
    ends = [*wrap_offsets(text, width), len(text)]
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def test_wrap_offsets_greedy_word_wrap():
    assert wrap_offsets("", 10) == []
    assert lines("once upon a time", 10) == ["once upon ", "a time"]
    # A word and the space after it must fit (Textual's rule): "bbb " moves down.
    assert lines("aa bbb ccc", 6) == ["aa ", "bbb ", "ccc"]
    # Trailing spaces stay with their word and count toward its width.
    assert lines("one two  ", 8) == ["one ", "two  "]
    assert lines("one two  ", 9) == ["one two  "]
    assert wrap_offsets("      ", 3) == []  # spaces alone make no lines


def test_wrap_offsets_folds_a_word_longer_than_the_line():
    assert lines("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert lines("ab abcdefghij cd", 4) == ["ab ", "abcd", "efgh", "ij ", "cd"]
    # A word exactly as wide as the line keeps the space after it (no line of blanks).
    assert lines("abcd efgh", 4) == ["abcd ", "efgh"]


def test_wrap_offsets_counts_terminal_cells():
    # CJK characters and this emoji take two cells each.
    assert lines("漢字漢字", 4) == ["漢字", "漢字"]
    assert lines("a 漢字 b", 6) == ["a ", "漢字 b"]
    assert lines("😀😀😀", 5) == ["😀😀", "😀"]
    assert lines("é" * 5, 5) == ["é" * 5]  # one cell each
    assert lines("漢", 1) == ["漢"]  # wider than the line: alone on it, never an empty line


def test_wrap_offsets_appending_never_changes_a_finished_line():
    """The property the story view relies on: only the last line is re-wrapped per flush."""
    rng = random.Random(0)
    alphabet = ["a", "bc", " ", "  ", "漢", "😀", "xyzxyzxyzxyz", ".", "\u200b"]
    for _ in range(3000):
        width = rng.randint(1, 12)
        pieces = ["".join(rng.choices(alphabet, k=rng.randint(0, 4))) for _ in range(8)]
        finished: list[int] = []
        done, partial = 0, ""
        for piece in pieces:  # what StoryView does on each flush
            partial += piece
            offsets = wrap_offsets(partial, width)
            if offsets:
                finished += [done + o for o in offsets]
                done += offsets[-1]
                partial = partial[offsets[-1] :]
        at_once = wrap_offsets("".join(pieces), width)
        assert finished + [done + o for o in wrap_offsets(partial, width)] == at_once


# ---- hostile checkpoints and prompts (issue 16) ------------------------------------------------
def _damaged_root(tiny_checkpoint, root: Path) -> Path:
    """A good checkpoint beside one with string data_offsets, one whose meta.json says
    "step": "abc", one with a YAML alias bomb for a config, and one named with rich markup."""
    import struct

    for name in ("good", "offsets", "step", "bomb", "[/]x[bold red]y"):
        shutil.copytree(tiny_checkpoint, root / name)
    f = root / "offsets" / "model.safetensors"
    data = f.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header[next(k for k in header if k != "__metadata__")]["data_offsets"] = "0,12"
    raw = json.dumps(header).encode()
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    meta = json.loads((root / "step" / "meta.json").read_text())
    (root / "step" / "meta.json").write_text(json.dumps({**meta, "step": "abc"}))
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"b{i}: &b{i} [{', '.join([f'*b{i - 1}' if i > 1 else '*a'] * 9)}]\n" for i in range(1, 10)
    )
    (root / "bomb" / "config.yaml").write_text(bomb)
    return root


async def test_bad_checkpoints_beside_a_good_one_never_hang_the_app(
    tiny_checkpoint, tmp_path, tui_env
):
    root = _damaged_root(tiny_checkpoint, tmp_path / "checkpoints")
    app = make_app(root, "good")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)  # the scan finished and --checkpoint loaded
        assert app.loaded.info.name == "good"
        errors = {i.name: i.error for i in app.checkpoints}
        assert errors["good"] is None and errors["[/]x[bold red]y"] is None
        assert "data_offsets" in errors["offsets"] and "step" in errors["step"]
        assert "alias" in errors["bomb"]
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, CheckpointPicker))
        picker = app.screen
        names = [i.name for i in picker.infos]
        picker.query_one("DataTable").move_cursor(row=names.index("[/]x[bold red]y"))
        await pilot.press("enter")
        marked = (root / "[/]x[bold red]y").resolve()  # a folder "]x[bold red]y" inside "["
        await until(pilot, lambda: app.loaded_path == marked)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, CheckpointPicker))
        names = [i.name for i in app.screen.infos]
        app.screen.query_one("DataTable").move_cursor(row=names.index("step"))
        seen = notifications(app)
        await pilot.press("enter")
        await until(pilot, lambda: app.loading is None and seen)
        assert "step" in seen[-1] and app.loaded_path == marked
        await write(pilot, app, "The dog")
        await until(pilot, lambda: not app.current.streaming)
        assert app.current.num_tokens > 0
        await pilot.press("f8")  # compare: names in titles and in side B's choices
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        await pilot.pause()
        assert "A · ]x[bold red]y · step 0 · T" in str(app.screen.query_one("#title-a").render())


async def test_a_50kb_paste_is_cut_to_what_the_context_can_use(tui_checkpoints, tui_env):
    from textual import events

    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        seen = notifications(app)
        prompt = app.query_one(PromptArea)
        prompt.focus()
        pasted = "".join(f"Line {i}: Tom saw a red ball. " for i in range(1700))  # ~50 KB
        assert len(pasted) > 50_000
        prompt.post_message(events.Paste(pasted))
        limit = app.write_screen.prompt_limit
        assert limit == 64 * 32  # the fixture's context (64 tokens) x 32 characters a token
        await until(pilot, lambda: prompt.text == pasted[-limit:])
        await until(pilot, lambda: any("cut to its last 2,048 characters" in m for m in seen))
        assert "reads only its last 64 tokens" in seen[-1]
        inspector = app.query_one(TokenInspector)
        await until(pilot, lambda: inspector.ids == app.loaded.tokenizer.encode(prompt.text))
        await pilot.press("enter")
        await until(pilot, lambda: app.current is not None and not app.current.streaming)
        assert app.current.prompt == pasted[-limit:] and app.current.num_tokens > 0


async def test_a_burst_of_keys_is_inspected_once_not_per_key(tui_checkpoints, tui_env):
    """Keys posted at once (a paste without bracketed paste) queue one inspection of the
    prompt, not one per key."""
    from textual import events

    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        calls = []
        tokenizer = app.loaded.tokenizer
        real = tokenizer.encode
        tokenizer.encode = lambda text: calls.append(len(text)) or real(text)
        prompt = app.query_one(PromptArea)
        prompt.focus()
        await pilot.pause()
        text = "Tom saw a dog. " * 40  # 600 keys
        for char in text:
            app.post_message(events.Key(char if char != " " else "space", char))
        inspector = app.query_one(TokenInspector)
        await until(pilot, lambda: prompt.text == text and inspector.ids == real(text))
        assert len(calls) < len(text) // 10, len(calls)
