"""Snapshot tests of the TUI at 80x24 (and 120x40 for the screens a wide terminal changes):
the writing screen with a finished story, the token view, the empty state, F1 help on the
writing and the Train screens, the checkpoint picker, the history browser, the Train screen
on a recorded finished run (and with a second run overlaid), and compare opened from the
Train screen. Deterministic: pinned seed, fixed size, timing figures in the status line and
story times replaced by constants, fixed checkpoint dates, no cursor blink, relative
folders.

Regenerate after an intended change: pytest tests/test_tui_snapshots.py --snapshot-update
(then look at the SVG report before accepting it)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from slm_tui.tui.app import SlmApp
from slm_tui.tui.screens.compare import CompareScreen
from slm_tui.tui.screens.help import HelpScreen
from slm_tui.tui.screens.history import HistoryScreen
from slm_tui.tui.story import Story
from slm_tui.tui.training.chart import LossChart
from slm_tui.tui.training.screen import TrainScreen
from slm_tui.tui.widgets.prompt_area import PromptArea
from slm_tui.tui.widgets.status_bar import StatusBar

SIZE = (80, 24)
SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
WHEN = "2025-03-14T09:30:00+00:00"  # a story's or a checkpoint's time, fixed
RUN = Path(__file__).parent / "data" / "tiny-run" / "metrics.jsonl"


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
    app.current.created = WHEN  # the history list shows its time
    app.write_screen.refresh_history()
    app.query_one(StatusBar).set_story(app.current)
    app.query_one(StatusBar).set_note("")
    await pilot.pause()


def fixed_checkpoints(tui_checkpoints: Path, here: Path) -> Path:
    """A relative copy of the TUI's checkpoints with fixed dates (the picker shows them)."""
    root = here / "checkpoints"
    shutil.copytree(tui_checkpoints, root)
    for meta_path in root.glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps(meta | {"created": WHEN}))
    return Path("checkpoints")


def writing_app(root: Path) -> SlmApp:
    return SlmApp(checkpoint=root / "alpha", checkpoints_dir=root, rescan=False, demo=False,
                  device="cpu")  # fmt: skip


@SIZES
def test_main_layout(snap_compare, tui_checkpoints, tui_env, monkeypatch, size):
    pinned(tui_env)
    monkeypatch.chdir(tui_checkpoints.parent)
    app = writing_app(tui_checkpoints.relative_to(tui_checkpoints.parent))
    assert snap_compare(app, terminal_size=size, run_before=write_story)


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


def recorded_run(tmp_path: Path, name: str = "tiny-run", worse: float = 1.0) -> Path:
    """A recorded metrics.jsonl (tests/data/tiny-run: a real 1,200-step run on the shared
    TinyStories text, keep_every_eval on) in a run folder; `worse`: its losses scaled, as
    a second run's."""
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    records = [json.loads(line) for line in RUN.read_text().splitlines()]
    for r in records:
        for key in ("loss", "val_loss", "val_bpb"):
            if isinstance(r.get(key), float):
                r[key] *= worse
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return Path("runs") / name


def train_app(run: Path) -> SlmApp:
    return SlmApp(checkpoints_dir=Path("runs"), rescan=False, demo=False, device="cpu",
                  watch=run)  # fmt: skip


async def on_train_screen(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.scanned and isinstance(app.screen, TrainScreen))
    chart = app.screen.query_one(LossChart)
    await until(pilot, lambda: chart.main.train[0])
    await pilot.pause()


@SIZES
def test_train_screen_on_a_finished_run(snap_compare, tmp_path, tui_env, monkeypatch, size):
    """Opened with --watch: the whole history at once, the x axis the planned run."""
    monkeypatch.chdir(tmp_path)
    app = train_app(recorded_run(tmp_path))
    assert snap_compare(app, terminal_size=size, run_before=on_train_screen)


def test_train_screen_with_a_second_run_overlaid(snap_compare, tmp_path, tui_env, monkeypatch):
    """`o`, Enter: a second run (the same, its losses 15% higher) drawn under the watched
    one, with a legend."""
    monkeypatch.chdir(tmp_path)
    recorded_run(tmp_path, "other", worse=1.15)
    app = train_app(recorded_run(tmp_path))

    async def run_before(pilot) -> None:
        await on_train_screen(pilot)
        await pilot.press("o", "enter")
        chart = pilot.app.screen.query_one(LossChart)
        await until(pilot, lambda: chart.overlay is not None and chart.overlay.train[0])
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


@pytest.mark.parametrize(
    "screen, size",
    [("write", (80, 24)), ("write", (120, 40)), ("train", (80, 24))],
    ids=["write-80x24", "write-120x40", "train-80x24"],
)
def test_help(snap_compare, tui_checkpoints, tmp_path, tui_env, monkeypatch, screen, size):
    """F1 on the writing screen and on the Train screen: each its own keys, in words."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLM_TUI_CONFIG_DIR", "config")  # help names the key map file
    root = fixed_checkpoints(tui_checkpoints, tmp_path)

    async def run_before(pilot) -> None:
        app = pilot.app
        if screen == "write":
            await until(pilot, lambda: app.loaded is not None and app.scanned)
        else:
            await on_train_screen(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause(0.1)

    app = writing_app(root) if screen == "write" else train_app(recorded_run(tmp_path))
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_checkpoint_picker(snap_compare, tui_checkpoints, tmp_path, tui_env, monkeypatch, size):
    """F2: every column as wide as its content (the names give way at 80 columns)."""
    monkeypatch.chdir(tmp_path)
    app = writing_app(fixed_checkpoints(tui_checkpoints, tmp_path))

    async def run_before(pilot) -> None:
        await until(pilot, lambda: app.loaded is not None and app.scanned)
        await pilot.press("f2")
        await until(pilot, lambda: app.screen.query("DataTable"))
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_history_browser(snap_compare, tui_checkpoints, tmp_path, tui_env, monkeypatch, size):
    """F10: stories from one seed sentence told apart by title, time and checkpoint; one
    renamed."""
    monkeypatch.chdir(tmp_path)
    lines = []
    for n, (text, name) in enumerate(
        [(", there was a red kite in the sky. It flew high.", ""),
         (", a dog found a ball in the park. He was happy.", "The dog and the ball"),
         (", Lily made a cake for her mom. They ate it together.", "")]
    ):  # fmt: skip
        story = Story(prompt="Once upon a time", checkpoint="alpha", text=text, seed=10 + n,
                      finish_reason="eos", name=name)  # fmt: skip
        story.id, story.created = f"story{n}", f"2025-03-1{4 + n}T09:3{n}:00+00:00"
        lines.append(json.dumps(story.to_dict()) + "\n")
    (tui_env / "data" / "history.jsonl").write_text("".join(lines))
    app = writing_app(fixed_checkpoints(tui_checkpoints, tmp_path))

    async def run_before(pilot) -> None:
        await until(pilot, lambda: app.loaded is not None and app.scanned)
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        app.screen.query_one("#history-search").cursor_blink = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@SIZES
def test_compare_from_the_train_screen(
    snap_compare, tui_checkpoints, tmp_path, tui_env, monkeypatch, size
):
    """`c` on a run whose latest/ and best/ are one step: side B starts on another step,
    each header says its step."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "run"
    for n, (name, step) in enumerate({"latest": 10, "best": 10, "evals/step-000005": 5}.items()):
        shutil.copytree(tui_checkpoints / "alpha", run / name)
        meta = json.loads((run / name / "meta.json").read_text())
        meta |= {"step": step, "created": f"2026-01-01T00:00:{59 - n:02d}+00:00"}
        meta.pop("weights_sha256", None)  # copies of one file: the steps tell them apart
        (run / name / "meta.json").write_text(json.dumps(meta))
    shutil.copyfile(RUN, run / "metrics.jsonl")
    app = train_app(Path("runs") / "run")

    async def run_before(pilot) -> None:
        await on_train_screen(pilot)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen))
        screen = pilot.app.screen
        await until(pilot, lambda: screen.b_loaded is not None)
        screen.query_one("#compare-seed").cursor_blink = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
