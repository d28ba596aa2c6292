"""A newcomer's first hour in the TUI (issue 25), driven through the Pilot with a real tiny
checkpoint and recorded runs: the start form's short first run, the picker's columns, help
for the screen you are on, the side panel's toggle and the reading width, continue after
the end of a story, compare from the Train screen, the history (titles, search, rename,
delete, copy), the sampling panel's Tab stops and active preset, and the Train chart
(validation under the train curve, the planned x axis, a second run overlaid). The layouts
are in test_tui_snapshots.py."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widgets import TextArea

from slm_tui.tui.app import SlmApp
from slm_tui.tui.screens.compare import CompareScreen
from slm_tui.tui.screens.dialogs import AskText, Confirm
from slm_tui.tui.screens.help import HelpScreen
from slm_tui.tui.screens.history import HistoryScreen
from slm_tui.tui.story import Story
from slm_tui.tui.training.chart import LossChart
from slm_tui.tui.training.form import StartForm
from slm_tui.tui.training.run_picker import RunPicker
from slm_tui.tui.training.screen import TrainScreen
from slm_tui.tui.training.state import first_run_overrides
from slm_tui.tui.widgets.history_list import HistoryList, opening
from slm_tui.tui.widgets.sampling_panel import SamplingPanel
from slm_tui.tui.widgets.status_bar import StatusBar
from slm_tui.tui.widgets.story_view import READING_WIDTH, StoryView

TINY_RUN = Path(__file__).parent / "data" / "tiny-run" / "metrics.jsonl"


async def until(pilot, condition, timeout: float = 20.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def make_app(root: Path, **kwargs) -> SlmApp:
    kwargs.setdefault("rescan", False)
    return SlmApp(checkpoint=root / "alpha", checkpoints_dir=root, demo=False, **kwargs)


async def ready(pilot) -> None:
    await until(pilot, lambda: pilot.app.loaded is not None and pilot.app.scanned)


async def write(pilot, prompt: str = "Once upon a time", *, typed: bool = True) -> Story:
    """Write a story from `prompt`: typed key by key, or (`typed=False`, for long prompts
    whose typing is not what a test is about: ~80 ms a key) put in the box whole."""
    app = pilot.app
    box = app.query_one("#prompt", TextArea)
    box.focus()
    before = app.current
    if not typed:
        box.load_text(prompt)
        box.move_cursor(box.document.end)
        prompt = ""
    await pilot.press(*prompt, "enter")
    await until(pilot, lambda: app.current is not before and not app.current.streaming)
    return app.current


def status(app: SlmApp) -> str:
    return app.write_screen.query_one("#status", StatusBar).plain_text


def stored(story_id: str, text: str, prompt: str = "Once upon a time", **fields) -> dict:
    """A history line as the app writes it (a finished story)."""
    story = Story(prompt=prompt, checkpoint="alpha", text=text, seed=7, finish_reason="eos")
    story.id, story.created = story_id, "2025-03-14T09:30:00+00:00"
    return story.to_dict() | fields


def seed_history(tui_env: Path, *lines: dict) -> Path:
    path = tui_env / "data" / "history.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return path


# -- 3. the start form ---------------------------------------------------------------------
def test_a_first_run_is_short_and_leaves_a_core_for_writing():
    assert first_run_overrides(2) == ["train.max_steps=300", "train.threads=1"]
    assert first_run_overrides(1) == ["train.max_steps=300", "train.threads=1"]
    assert first_run_overrides(8)[1] == "train.threads=7"


async def test_the_start_form_holds_real_overrides_that_start_sends(
    tui_checkpoints, tui_env, tmp_path
):
    app = make_app(tui_checkpoints, watch=None)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+t", "n")
        form = app.screen
        assert isinstance(form, StartForm)
        field = form.query_one("#f-set")
        assert field.value == " ".join(first_run_overrides())  # a value, not a placeholder
        assert field.placeholder == "none: the preset's values"
        form.query_one("#f-output").value = str(tmp_path / "run")
        assert form.request().overrides == first_run_overrides()  # what Start runs


# -- 4. the checkpoint picker ----------------------------------------------------------------
@pytest.mark.parametrize("size", [(80, 24), (160, 40)])
async def test_picker_columns_fit_their_content(tiny_checkpoint, tmp_path, tui_env, size):
    root = tmp_path / "checkpoints"
    name = "a-rather-long-run-name/latest"
    shutil.copytree(tiny_checkpoint, root / name)
    app = SlmApp(checkpoint=root / name, checkpoints_dir=root, demo=False)
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await until(pilot, lambda: app.screen.query("DataTable"))
        await pilot.pause(0.1)
        table = app.screen.query_one("DataTable")
        info = app.screen.infos[0]
        widest = {  # what each column must show whole
            "steps": "steps",
            "bits/byte": "— in-run",
            "tokenizer": f"bpe·{info.vocab_size}",
            "date": (info.created or "")[:10],
        }
        columns = {str(c.label): c.width for c in table.ordered_columns}
        for label, text in widest.items():
            assert label not in columns or columns[label] >= len(text), (label, columns)
        assert sum(w + 2 for w in columns.values()) <= table.scrollable_content_region.width
        if size[0] >= 120:  # room for all of it: every column, the whole name
            assert set(widest) <= set(columns) and columns["checkpoint"] >= len(name)
        else:  # the name gives way, then the date (the detail line below says it)
            assert 12 <= columns["checkpoint"] < len(name) and "date" not in columns


# -- 5. help ---------------------------------------------------------------------------------
async def test_help_is_the_screens_own_in_words(tui_checkpoints, tui_env, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(TINY_RUN, run / "metrics.jsonl")
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(100, 32)) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        help_ = app.screen
        assert isinstance(help_, HelpScreen) and "Help · the writing screen" in help_.text
        text = help_.text
        assert "Ctrl+R  write the same seed sentence again" in text
        assert "F6  balanced preset: the default sampling settings" in text
        assert "again  regenerate" not in text and "pin_seed" not in text.split("Remap")[0]
        assert "n  start a training run" not in text
        await pilot.press("escape")
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TrainScreen))
        await pilot.press("question_mark")  # `?` too, where no text field takes it
        help_ = app.screen
        assert isinstance(help_, HelpScreen) and "Help · the Train screen" in help_.text
        for key in ("n  start a training run", "x  stop the run", "r  resume", "w  write",
                    "c  compare", "o  draw a second run", "l  the chart's y axis",
                    "b  the chart in bits per byte"):  # fmt: skip
            assert key in help_.text
        assert "F3  token view" not in help_.text
        await pilot.press("question_mark")
        assert isinstance(app.screen, TrainScreen)
        await pilot.press("escape")
        app.write_screen.prompt.focus()
        await pilot.press("question_mark")  # in the prompt, `?` is a character
        assert app.screen is app.write_screen and app.write_screen.prompt.text == "?"


async def test_help_scrolls_at_80x24_and_says_so(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await pilot.pause(0.1)
        box, scroll = app.screen.query_one("#help-box"), app.screen.query_one("#help-scroll")
        assert scroll.max_scroll_y > 0 and "scroll" in str(box.border_subtitle)
        for what in app.screen.query(".help-what"):  # the text wraps within its column
            assert what.region.right <= scroll.region.right
        await pilot.press("pagedown")
        assert scroll.scroll_y > 0


async def test_the_palette_and_the_footer_say_what_keys_do(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        assert commands["Balanced"] == "F6 · balanced preset: the default sampling settings"
        assert "regenerate" not in commands["Again"]
        footer = app.write_screen.query_one("Footer")
        keys = lambda: list(footer.query("FooterKey"))  # noqa: E731 (recomposed on changes)
        await until(pilot, lambda: keys() and all(k.region.width for k in keys()))
        labels = [k.description for k in keys()]
        assert "quit" in labels and "palette" in labels
        assert all(k.region.right <= 80 for k in keys())  # nothing cut at 80 columns


# -- 6 and 10. the story's width ---------------------------------------------------------------
def longest_line(view: StoryView) -> int:
    return max(len(line) for line in view.plain_text.splitlines())


async def test_the_story_rewraps_when_the_side_panel_comes_back(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await write(
            pilot, "A little girl named Sue went to the park with her dog " * 3, typed=False
        )
        view = app.query_one(StoryView)
        narrow = view.scrollable_content_region.width
        await pilot.press("f4")
        await pilot.pause(0.1)
        assert longest_line(view) > narrow  # wider without the panel
        await pilot.press("f4")
        await pilot.pause(0.1)
        assert view.scrollable_content_region.width == narrow
        assert longest_line(view) <= narrow


async def test_a_wide_terminal_keeps_a_reading_width(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(200, 40)) as pilot:
        await ready(pilot)
        await write(
            pilot, "A little girl named Sue went to the park with her dog " * 4, typed=False
        )
        view = app.query_one(StoryView)
        region = view.scrollable_content_region.width
        assert region > READING_WIDTH + 20
        assert READING_WIDTH - 15 < longest_line(view) <= READING_WIDTH
        assert view._margin == (region - READING_WIDTH) // 2  # centred


# -- 7. continue after the end ------------------------------------------------------------------
async def test_continue_after_the_end_of_a_story_says_why_not(tui_checkpoints, tui_env):
    history = seed_history(tui_env, stored("ended", ", there was a dog. The end."))
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        app.write_screen.show_story("ended")
        story = app.current
        assert story.finish_reason == "eos"
        await pilot.press("ctrl+o")
        await pilot.pause(0.2)
        assert "the model ended this story" in status(app)
        assert not story.streaming and story.text == ", there was a dog. The end."
        assert len(history.read_text().splitlines()) == 1  # nothing was written


# -- 8. compare from the Train screen ----------------------------------------------------------
def run_folder(tui_checkpoints: Path, run: Path, steps: dict[str, int]) -> Path:
    """A run folder of copies of the tiny checkpoint at the given steps, newest first."""
    for n, (name, step) in enumerate(steps.items()):
        shutil.copytree(tui_checkpoints / "alpha", run / name)
        meta_path = run / name / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta |= {"step": step, "created": f"2026-01-01T00:00:{59 - n:02d}+00:00"}
        meta.pop("weights_sha256", None)  # copies of one file: only the steps tell them apart
        meta_path.write_text(json.dumps(meta))
    (run / "metrics.jsonl").write_text(
        '{"kind": "event", "event": "start", "step": 0, "tokens": 0, "max_steps": 10}\n'
    )
    return run


async def test_compare_from_the_train_screen_puts_two_steps_side_by_side(
    tui_checkpoints, tui_env, tmp_path
):
    run = run_folder(
        tui_checkpoints, tmp_path / "run", {"latest": 10, "best": 10, "evals/step-000005": 5}
    )
    app = SlmApp(checkpoints_dir=tmp_path, demo=False, rescan=False, watch=run, device="cpu")
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TrainScreen))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await until(pilot, lambda: screen.b_loaded is not None)
        await pilot.pause()
        title = lambda side: str(screen.query_one(f"#title-{side}").render())  # noqa: E731
        assert "A · run/latest · step 10 ·" in title("a")
        assert "B · step-000005 · step 5 ·" in title("b")  # not best/, A's own weights
        labels = [str(label) for label, _ in screen.query_one("Select")._options]
        assert "best · step 10 · same weights as A" in labels
        await pilot.press("escape")
        assert isinstance(app.screen, TrainScreen)  # back where compare was opened


async def test_compare_says_so_when_every_checkpoint_is_at_as_step(
    tui_checkpoints, tui_env, tmp_path
):
    run = run_folder(tui_checkpoints, tmp_path / "run", {"latest": 10, "best": 10})
    app = SlmApp(checkpoints_dir=tmp_path, demo=False, rescan=False, watch=run, device="cpu")
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TrainScreen))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await pilot.pause()
        assert str(screen.query_one("Select").value).startswith("preset:")
        note = screen.query_one("#status-b", StatusBar).plain_text
        assert "at step 10, as A: the same weights" in note


# -- 9. history, copy, the sampling panel ---------------------------------------------------
async def test_history_entries_differ_by_time_checkpoint_and_opening(tui_checkpoints, tui_env):
    seed_history(
        tui_env,
        stored("one", ", there was a red kite in the sky."),
        stored("two", ", a dog found a ball.") | {"created": "2025-03-15T18:05:00+00:00"},
    )
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        history = app.query_one(HistoryList)
        entries = [str(history.get_option_at_index(i).prompt) for i in range(2)]
        assert entries[0] != entries[1]
        assert "Once upon a time, a dog found a ball" in entries[0] and "2025-03-15" in entries[0]
        assert "alpha" in entries[0] and "tok" in entries[0]


async def test_history_search_rename_and_delete_persist(tui_checkpoints, tui_env):
    path = seed_history(
        tui_env,
        stored("kite", ", there was a red kite in the sky."),
        stored("ball", ", a dog found a ball."),
        stored("cake", ", Lily made a cake."),
    )
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f10")
        browser = app.screen
        assert isinstance(browser, HistoryScreen) and len(browser.shown) == 3
        await pilot.press(*"dog ball")  # filter as you type
        assert [s.id for s in browser.shown] == ["ball"]
        await pilot.press(*["backspace"] * 8, *"kite")
        assert [s.id for s in browser.shown] == ["kite"]
        await pilot.press("f2")
        assert isinstance(app.screen, AskText)
        app.screen.query_one("#ask-text").value = ""
        await pilot.press(*"The kite", "enter")
        assert app.screen is browser and browser.shown[0].name == "The kite"
        await pilot.press(*["backspace"] * 4, *"cake", "f8")
        assert isinstance(app.screen, Confirm)
        await pilot.press("n")  # no: nothing happens
        assert [s.id for s in app.history.stories] == ["kite", "ball", "cake"]
        await pilot.press("f8", "y")
        assert app.screen is browser and [s.id for s in app.history.stories] == ["kite", "ball"]
        await pilot.press("escape")
    assert "cake" not in path.read_text()  # gone from disk, not only hidden
    again = make_app(tui_checkpoints)
    async with again.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        stories = {s.id: s for s in again.history.stories}
        assert set(stories) == {"kite", "ball"} and stories["kite"].name == "The kite"
        await pilot.press("f10", *"The kite", "enter")  # a name is searched too
        assert again.current is stories["kite"]


async def test_copy_the_story_to_the_clipboard(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        story = await write(pilot)
        await pilot.press("ctrl+s")
        assert app.clipboard == story.prompt + story.text
        assert "copied the story to the clipboard" in status(app)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert "Copy story" in commands  # and from the palette
        app.copy_to_clipboard("")
        await commands["Copy story"].callback()
        await pilot.pause()
        assert app.clipboard == story.prompt + story.text
        await pilot.press("f10", "ctrl+s")  # from the history browser too
        assert app.clipboard == story.prompt + story.text


async def test_the_sampling_panel_tabs_between_fields_and_names_its_preset(
    tui_checkpoints, tui_env
):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        panel = app.query_one(SamplingPanel)
        stops = [w for w in app.screen.focus_chain if panel in w.ancestors]
        assert len(stops) == 10  # 7 fields and 3 presets; the − and + buttons are no stops
        assert not any(w.has_class("step") for w in stops)
        assert panel.border_title == "sampling · balanced"
        panel.query_one("#set-temperature").focus()
        await pilot.press("up")
        assert panel.border_title == "sampling · custom"
        await pilot.press("f5")
        assert panel.border_title == "sampling · greedy"
        assert panel.query_one("#preset-greedy").has_class("-active")


# -- 11. the Train chart -------------------------------------------------------------------------
def chart_text(chart: LossChart) -> list[str]:
    return chart.render().plain.splitlines()


def is_braille(ch: str) -> bool:
    return "\u2800" < ch <= "\u28ff"


async def test_validation_dots_never_hide_the_train_curve(tmp_path, tui_env):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(TINY_RUN, run / "metrics.jsonl")
    app = SlmApp(demo=False, rescan=False, watch=run, device="cpu")
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TrainScreen))
        chart = app.screen.query_one(LossChart)
        await until(pilot, lambda: chart.main.val_tokens)
        full = chart_text(chart)
        chart.main = replace(chart.main, val_tokens=[], val_loss=[], val_bpb=[])
        train_only = chart_text(chart)
    legend = {y for y, line in enumerate(full) if "train" in line or "validation" in line}
    legend |= {y for y, line in enumerate(train_only) if "train" in line}
    covered = [
        (y, x)
        for y, line in enumerate(train_only)
        for x, ch in enumerate(line)
        if is_braille(ch) and y not in legend and not is_braille(full[y][x])
    ]
    assert not covered, f"validation drawn over the train curve at {covered}"
    assert sum(line.count("•") for y, line in enumerate(full) if y not in legend) >= 1


async def test_the_x_axis_spans_the_planned_run(tmp_path, tui_env):
    run = tmp_path / "run"
    run.mkdir()
    lines = [
        {"kind": "event", "event": "start", "step": 0, "tokens": 0, "max_steps": 100,
         "tokens_per_step": 1024},
        *({"kind": "train", "step": s, "tokens": s * 1024, "loss": 5.0 - s / 10, "lr": 1e-3,
           "tokens_per_s": 1000.0, "elapsed_s": float(s)} for s in (10, 20)),
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    app = SlmApp(demo=False, rescan=False, watch=run, device="cpu")
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TrainScreen))
        chart = app.screen.query_one(LossChart)
        await until(pilot, lambda: chart.main.train[0])
        assert chart.main.planned == 102400
        text = "\n".join(chart_text(chart))
        assert "102.4" in text and "tokens (k)" in text  # 20k trained of 102k planned


async def test_a_second_run_is_overlaid_with_a_legend(tmp_path, tui_env):
    runs = tmp_path / "runs"
    for name, lines in (("main", None), ("other", 60)):
        (runs / name).mkdir(parents=True)
        text = TINY_RUN.read_text().splitlines(keepends=True)
        (runs / name / "metrics.jsonl").write_text("".join(text[:lines]))
    app = SlmApp(checkpoints_dir=runs, demo=False, rescan=False, watch=runs / "main")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TrainScreen))
        screen = app.screen
        await pilot.press("o")
        picker = app.screen
        assert isinstance(picker, RunPicker)
        assert [r.name for r in picker.runs] == ["other"]  # the watched run is not offered
        await pilot.press("enter")
        chart = screen.query_one(LossChart)
        await until(pilot, lambda: chart.overlay is not None and chart.overlay.train[0])
        assert chart.overlay.label == "other"
        text = "\n".join(chart_text(chart))
        assert "other train" in text and "other val" in text and "validation" in text
        await pilot.press("o")  # again: taken away
        assert chart.overlay is None and app.training.overlay is None


def test_opening_words_cut_at_a_word():
    story = Story(prompt="Once upon a time", text=", there was a little dog named Max.")
    assert opening(story, 80) == "Once upon a time, there was a little dog named Max."
    assert opening(story, 30) == "Once upon a time, there was a…"
