"""Snapshot tests of the TUI at 80x24: main layout with a finished story, the token view,
and the empty state; the Train screen on a recorded finished run (100x32). Deterministic: pinned seed, fixed size, timing figures in the status
line replaced by constants, no cursor blink, relative checkpoints folder.

Regenerate after an intended change: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from slm_tui.tui.app import SlmApp
from slm_tui.tui.training.screen import TrainScreen
from slm_tui.tui.widgets.prompt_area import PromptArea
from slm_tui.tui.widgets.status_bar import StatusBar

SIZE = (80, 24)


async def until(pilot, condition, timeout: float = 20.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def pinned(tui_env) -> None:
    prefs = {"sampling": {"max_new_tokens": 24, "seed": 14}}  # a full 24-token story
    (tui_env / "data" / "settings.json").write_text(json.dumps(prefs))


async def write_story(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.loaded is not None and app.scanned)
    app.query_one(PromptArea).cursor_blink = False
    await pilot.press(*"Once upon a time", "enter")
    await until(pilot, lambda: app.current is not None and not app.current.streaming)
    app.current.tokens_per_s, app.current.ttft = 1234.0, 0.012  # timing varies run to run
    app.query_one(StatusBar).set_story(app.current)
    app.query_one(StatusBar).set_note("")
    await pilot.pause()


def test_main_layout(snap_compare, tui_checkpoints, tui_env, monkeypatch):
    pinned(tui_env)
    monkeypatch.chdir(tui_checkpoints.parent)
    app = SlmApp(
        checkpoint=tui_checkpoints / "alpha",
        checkpoints_dir=tui_checkpoints.relative_to(tui_checkpoints.parent),
        rescan=False,
        demo=False,
        device="cpu",
    )
    assert snap_compare(app, terminal_size=SIZE, run_before=write_story)


def test_token_view(snap_compare, tui_checkpoints, tui_env, monkeypatch):
    pinned(tui_env)
    monkeypatch.chdir(tui_checkpoints.parent)

    async def run_before(pilot) -> None:
        await write_story(pilot)
        await pilot.press("f3", "home", "right", "right")
        await pilot.pause()

    app = SlmApp(
        checkpoint=tui_checkpoints / "alpha",
        checkpoints_dir=tui_checkpoints.relative_to(tui_checkpoints.parent),
        rescan=False,
        demo=False,
        device="cpu",
    )
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_empty_state(snap_compare, tmp_path, tui_env, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def run_before(pilot) -> None:
        await until(pilot, lambda: pilot.app.scanned)
        pilot.app.query_one(PromptArea).cursor_blink = False
        await pilot.pause()

    app = SlmApp(rescan=False, demo=False, device="cpu")
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_train_screen_on_a_finished_run(snap_compare, tmp_path, tui_env, monkeypatch):
    """A recorded metrics.jsonl (tests/data/tiny-run: a real 1,200-step run on the shared
    TinyStories text, keep_every_eval on) opened with --watch: the whole history at once."""
    run = tmp_path / "tiny-run"
    run.mkdir()
    shutil.copyfile(
        Path(__file__).parent / "data" / "tiny-run" / "metrics.jsonl", run / "metrics.jsonl"
    )
    monkeypatch.chdir(tmp_path)

    async def run_before(pilot) -> None:
        await until(pilot, lambda: pilot.app.scanned and isinstance(pilot.app.screen, TrainScreen))
        await pilot.pause()

    app = SlmApp(rescan=False, demo=False, device="cpu", watch=Path("tiny-run"))
    assert snap_compare(app, terminal_size=(100, 32), run_before=run_before)
