"""Story briefs in the TUI (issue 22 item 3): the brief row above the seed sentence (its
syntax, its one-line errors in place, its key), the brief carried in the settings of the
story it writes (local and on a server), the note a model trained without briefs gets,
the requested words and name marked in the story as it streams (inflected forms count),
the brief kept in history and said by the export; snapshots of the row at 80x24 and
120x40.

A real app under `run_test` on the tiny random checkpoint of conftest.py (and a copy whose
config says it trained with briefs), a real server on a loopback port for `--server`. The
model is random: what a brief does is judged by what reaches it (the same story as the
handle writes with that brief, another than without it), not by what it writes. Stories
with known text for the marks are built by hand and drawn by the real story view.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
from textual.content import Content

from slm_tui.briefs import Brief
from slm_tui.errors import GenerationError
from slm_tui.generation import SamplingSettings
from slm_tui.handle import ServerModel
from slm_tui.tui.app import SlmApp
from slm_tui.tui.brief import BriefMarks, brief_text, parse_brief_text
from slm_tui.tui.screens.export import ExportScreen
from slm_tui.tui.story import Story
from slm_tui.tui.widgets.brief_row import MAX_CHARS, BriefRow
from slm_tui.tui.widgets.history_list import HistoryList
from slm_tui.tui.widgets.prompt_area import PromptArea
from slm_tui.tui.widgets.sampling_panel import SamplingPanel
from slm_tui.tui.widgets.status_bar import StatusBar
from slm_tui.tui.widgets.story_view import StoryView

SIZE = (100, 30)
DOG = Brief(("dog", "cake"), "Max", ("dialogue",))


async def until(pilot, condition, timeout: float = 20.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def make_app(root, name: str = "alpha", **kwargs) -> SlmApp:
    kwargs.setdefault("rescan", False)
    return SlmApp(checkpoint=root / name, checkpoints_dir=root, demo=False, device="cpu", **kwargs)


def notifications(app: SlmApp) -> list[str]:
    seen: list[str] = []
    notify = app.notify

    def spy(message, *args, **kwargs):
        seen.append(str(message))
        return notify(message, *args, **kwargs)

    app.notify = spy  # type: ignore[method-assign]
    return seen


async def ready(pilot, app: SlmApp) -> None:
    await until(pilot, lambda: app.loaded is not None and app.scanned)


async def brief_typed(pilot, text: str) -> BriefRow:
    """Ctrl+B, then `text` typed into the row, as a user would."""
    row = pilot.app.query_one(BriefRow)
    if not row.display:
        await pilot.press("ctrl+b")
    assert row.display and row.input.has_focus
    await pilot.press("ctrl+u", *text)
    return row


async def written(pilot, app: SlmApp, seed: str = "Once upon a time") -> Story:
    app.query_one(PromptArea).focus()
    before = app.current
    await pilot.press(*seed, "enter")
    await until(pilot, lambda: app.current is not before and not app.current.streaming)
    return app.current


def handle_text(handle, story: Story, brief: Brief | None) -> str:
    """What the model writes for the story's seed, seed and settings under `brief`."""
    settings = SamplingSettings(**{**story.settings, "seed": story.seed, "brief": brief})
    return "".join(e.text for e in handle.stream(story.prompt, settings))


def subtitle(widget) -> str:
    """A widget's bottom-border line as the user reads it (the getter gives markup)."""
    return Content.from_markup(widget.border_subtitle or "").plain


def marked(view: StoryView) -> list[str]:
    """The words the story view draws marked (underlined), top to bottom."""
    out: list[str] = []
    for y in range(view.size.height):
        run = ""
        for segment in view.render_line(y):
            if segment.style is not None and segment.style.underline:
                run += segment.text
            elif run:
                out.append(run)
                run = ""
        if run:
            out.append(run)
    return out


# ---- the row's syntax ------------------------------------------------------------------------
def test_the_row_reads_words_a_name_and_features_in_one_line():
    for text in (
        "dog, cake · name: Max · features: dialogue",
        "dog cake name: max features: dialogue",
        "words: Dog, cake; features: Dialogue | name: Max",
        "  dog,cake name:Max features:dialogue  ",
    ):
        assert parse_brief_text(text) == DOG, text
    assert parse_brief_text("") is None and parse_brief_text(" · ") is None
    assert parse_brief_text("name: Lily") == Brief(name="Lily")
    assert parse_brief_text("features: moral, dialogue") == Brief(features=("moral", "dialogue"))
    for brief in (DOG, Brief(("ball",)), Brief(name="Sue"), Brief(features=("moral",))):
        assert parse_brief_text(brief_text(brief)) == brief
    assert brief_text(DOG) == "dog, cake · name: Max · features: dialogue"
    assert brief_text(None) == ""


@pytest.mark.parametrize(
    "text, needle",
    [
        ("dog colour: red", "unknown label 'colour:'"),
        ("dog, : cake", "a stray ':'"),
        ("name: Max name: Tom", "'name:' is given twice"),
        ("a b c d e f g", "at most 6 words"),
        ("dog1", "brief word 'dog1' must be one word of letters only"),
        ("name: Max Smith", "brief name 'Max Smith' must be one capitalised word"),
        ("features: funny", "unknown brief feature 'funny'; known: dialogue, moral"),
    ],
)
def test_a_row_that_is_not_a_brief_is_a_one_line_error(text, needle):
    with pytest.raises(GenerationError, match=needle) as info:
        parse_brief_text(text)
    assert "\n" not in str(info.value)


def test_marks_find_inflected_words_and_the_name_as_written():
    marks = BriefMarks(Brief(("dog", "run", "happy", "cat"), "Max"))
    text = "The dogs ran to Max's house; max was happier. A catch, Maxi!"
    found = [text[a:b] for a, b in marks.spans(text)]
    assert found == ["dogs", "ran", "Max", "happier"]  # not "max", "catch", "Maxi"
    assert marks.found == {"dog", "run", "Max", "happy"}
    marks = BriefMarks(Brief(("cake",)))
    assert marks.spans("a ca", complete=False) == []  # a word still being written
    assert marks.spans("a cake", complete=False) == []  # "cakes"? not judged yet
    assert marks.spans("a cake.", complete=False) == [(2, 6)]
    assert marks.tally() == [("cake", True)]
    dialogue = BriefMarks(Brief(("cake", "ball"), features=("dialogue",)))
    dialogue.spans('"A cake!" she said.')
    assert dialogue.tally() == [("cake", True), ("ball", None), ("dialogue", None)]
    done = dialogue.tally('"A cake!" she said.')
    assert done == [("cake", True), ("ball", False), ("dialogue", True)]


# ---- the row in the app ----------------------------------------------------------------------
async def test_the_brief_key_shows_the_row_and_the_story_carries_its_brief(
    tui_checkpoints, tui_env
):
    app = make_app(tui_checkpoints)
    notes = notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        row = app.query_one(BriefRow)
        assert not row.display and app.write_screen.settings.brief is None
        row_ = await brief_typed(pilot, "dog cake name: max features: dialogue")
        assert row_ is row and row.brief == DOG
        assert subtitle(row) == "words: dog, cake · name: Max · features: dialogue"
        await pilot.press("enter")  # on to the seed sentence; nothing written yet
        assert app.query_one(PromptArea).has_focus and app.current is None
        story = await written(pilot, app)
        assert story.settings["brief"] == DOG.to_dict() and story.brief == DOG
        assert story.text == handle_text(app.loaded, story, DOG)  # the brief reached the model
        assert story.text != handle_text(app.loaded, story, None)
        said = [n for n in notes if "trained without briefs" in n]
        assert len(said) == 1 and "alpha" in said[0] and "\n" not in said[0]
        await written(pilot, app)  # said once per model, not per story
        assert len([n for n in notes if "trained without briefs" in n]) == 1
        await pilot.press("ctrl+b")  # hidden: no brief, the text kept for later
        assert not row.display and app.query_one(PromptArea).has_focus
        plain = await written(pilot, app)
        assert plain.brief is None and plain.settings["brief"] is None
        await pilot.press("ctrl+b")
        assert row.display and row.input.value == "dog cake name: max features: dialogue"


async def test_a_wrong_brief_is_said_in_place_and_writes_nothing(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    notes = notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        row = await brief_typed(pilot, "dog name: max smith")
        error = "brief name 'max smith' must be one capitalised word, like 'Lily'"
        assert row.has_class("-invalid") and subtitle(row) == error.removeprefix("brief ")
        await pilot.press("enter")
        await pilot.press(*"Once upon a time", "enter")
        await pilot.pause()
        assert app.current is None and error in notes  # the error again, nothing written
        assert app.query_one(PromptArea).text == "Once upon a time"  # the seed is kept
        row.input.insert_text_at_cursor("x" * 100_000)  # a paste no brief needs: refused
        assert row.text == "dog name: max smith" and subtitle(row) == error.removeprefix("brief ")
        row.input.insert_text_at_cursor("x" * (MAX_CHARS - len(row.text) + 1))
        assert len(row.text) <= MAX_CHARS
        row.input.focus()
        await pilot.press("ctrl+u", *"dog name: Max")
        assert not row.has_class("-invalid") and row.brief == Brief(("dog",), "Max")
        story = await written(pilot, app, "")
        assert story.brief == Brief(("dog",), "Max") and story.prompt == "Once upon a time"


async def test_a_brief_alone_writes_a_story(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")  # no seed, no brief: nothing to write
        await pilot.pause()
        assert app.current is None
        await brief_typed(pilot, "dog, cake name: Max")
        story = await written(pilot, app, "")
        assert story.prompt == "" and story.num_tokens > 0
        assert story.brief == Brief(("dog", "cake"), "Max")
        assert story.title == "[dog, cake · name: Max]"  # the history list's line
        assert story.text == handle_text(app.loaded, story, story.brief)


async def test_only_a_model_trained_without_briefs_gets_the_note(
    tui_checkpoints, tui_env, tmp_path
):
    root = tmp_path / "checkpoints"
    shutil.copytree(tui_checkpoints / "alpha", root / "briefed")
    config = root / "briefed" / "config.yaml"
    config.write_text(config.read_text().replace("briefs: 0.0", "briefs: 0.5"))
    app = make_app(root, "briefed")
    notes = notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.loaded.info.briefs is True
        row = await brief_typed(pilot, "dog, xylophone")
        # a word this model's tokenizer splits into many tokens: said in place and once
        assert subtitle(row).startswith("brief word 'xylophone' is")
        await written(pilot, app)
        await written(pilot, app)
        assert not any("trained without briefs" in n for n in notes)
        assert len([n for n in notes if n.startswith("brief word 'xylophone'")]) == 1


# ---- marks in the story view -----------------------------------------------------------------
async def test_requested_words_are_marked_as_the_story_streams(tui_checkpoints, tui_env,
                                                               monkeypatch):  # fmt: skip
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        view = app.write_screen.story_view
        view.display = True
        brief = Brief(("dog", "cake", "run"), "Max", ("dialogue",))
        story = Story(prompt="Max had a dog.", settings=SamplingSettings(brief=brief).to_dict())
        looked: list[int] = []  # characters the marks were asked about
        spans = BriefMarks.spans

        def counted(self, text, complete=True):
            looked.append(len(text))
            return spans(self, text, complete)

        monkeypatch.setattr(BriefMarks, "spans", counted)
        chunks = [" The do", "gs ran to the ca", "ke", "s and ate", " them.", ' "Yum!"']
        seen = []
        for chunk in chunks:
            story.text += chunk
            view.show(story)
            await pilot.pause()
            seen.append(marked(view))
        assert seen[0] == ["Max", "dog"]  # "do" is not judged while it is being written
        assert seen[1] == ["Max", "dog", "dogs", "ran"]
        assert seen[2] == seen[1]  # "cake" may yet be "cakes" (it is: a plural counts too)
        assert seen[3][-1] == "cakes"
        # while it streams, the features wait: they are judged once the story is done
        assert subtitle(view) == "brief dog ✓ · cake ✓ · run ✓ · Max ✓ · dialogue"
        story.finish_reason = "eos"
        view.show(story)
        assert subtitle(view) == "brief dog ✓ · cake ✓ · run ✓ · Max ✓ · dialogue ✓"
        # the view stays incremental: finished lines are marked once, not on every flush
        long = Story(prompt="", settings=SamplingSettings(brief=brief).to_dict())
        view.show(long)
        looked.clear()
        for _ in range(300):
            long.text += "the dog ran to the cake "
            view.show(long)
        width = view.scrollable_content_region.width
        assert sum(looked) <= len(long.text) + 300 * width
        other = Story(prompt="Max had a dog.", text=" The dog ran.", finish_reason="eos")
        view.show(other)  # a story without a brief: nothing marked, no tally
        await pilot.pause()
        assert marked(view) == [] and view.border_subtitle is None


# ---- history, export, server -----------------------------------------------------------------
async def test_history_keeps_the_brief_and_the_export_says_it(tui_checkpoints, tui_env):
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await brief_typed(pilot, "dog, cake name: Max")
        # The seed ends in a full stop: "dog" stays a whole word whatever the model writes.
        story = await written(pilot, app, "Max and his dog.")
    again = make_app(tui_checkpoints)
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot, again)
        history = again.query_one(HistoryList)
        history.focus()
        history.highlighted = 0
        await pilot.press("enter")
        shown = again.current
        assert shown is not None and shown.id == story.id
        assert shown.brief == Brief(("dog", "cake"), "Max") and shown.text == story.text
        view = again.query_one(StoryView)
        await pilot.pause()
        assert marked(view)[:2] == ["Max", "dog"]
        assert subtitle(view).startswith("brief dog ✓ · cake")
        for name in ("story.md", "story.jsonl"):
            await pilot.press("f9")
            await until(pilot, lambda: isinstance(again.screen, ExportScreen))
            if name.endswith("jsonl"):
                await pilot.click("#fmt-jsonl")
            path = again.screen.query_one("#export-path")
            path.value = str(tui_env / name)
            path.focus()
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(again.screen, ExportScreen))
    md = (tui_env / "story.md").read_bytes().decode()
    assert "> brief: dog, cake · name: Max (" in md
    (row,) = [json.loads(line) for line in (tui_env / "story.jsonl").read_text().splitlines()]
    assert row["brief"] == {"words": ["dog", "cake"], "name": "Max", "features": []}
    assert row["settings"]["brief"] == row["brief"]


async def test_a_server_model_is_sent_the_brief(tiny_checkpoint, tui_env):
    from tests.test_serve import Running

    running = Running(tiny_checkpoint, max_batch=4, max_tokens_cap=1000)
    try:
        app = SlmApp(server=running.url, rescan=False, demo=False)
        notes = notifications(app)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded is not None)
            app.query_one(SamplingPanel).set_values({"seed": 7})  # a server draws its own
            await brief_typed(pilot, "dog, cake name: Max")
            story = await written(pilot, app)
            assert story.brief == Brief(("dog", "cake"), "Max") and story.num_tokens > 0
            assert story.seed == 7
        handle = ServerModel.connect(running.url)
        assert story.text == handle_text(handle, story, story.brief)
        assert story.text != handle_text(handle, story, None)
        assert not any("trained without briefs" in n for n in notes)  # a server does not say
    finally:
        running.close()


# ---- the key ---------------------------------------------------------------------------------
async def test_the_brief_key_is_remappable_and_in_the_palette(tui_checkpoints, tui_env):
    keys = tui_env / "config" / "keys.yaml"
    keys.parent.mkdir(parents=True)
    keys.write_text("brief: f11\n")
    app = make_app(tui_checkpoints)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        row = app.query_one(BriefRow)
        await pilot.press("ctrl+b")
        assert not row.display  # remapped away
        await pilot.press("f11")
        assert row.display and row.input.has_focus
        entries = {c.title: c.help for c in app.get_system_commands(app.screen)}
        brief = "F11 · the brief row: words, a name and features the story is to have"
        assert entries["Brief"] == brief


# ---- snapshots -------------------------------------------------------------------------------
def _snapshot_app(tui_checkpoints, tui_env, monkeypatch) -> SlmApp:
    prefs = {"sampling": {"max_new_tokens": 24, "seed": 14}}
    (tui_env / "data" / "settings.json").write_text(json.dumps(prefs))
    monkeypatch.chdir(tui_checkpoints.parent)
    return SlmApp(
        checkpoint=tui_checkpoints / "alpha",
        checkpoints_dir=tui_checkpoints.relative_to(tui_checkpoints.parent),
        rescan=False,
        demo=False,
        device="cpu",
    )


async def _story_with_a_brief(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.loaded is not None and app.scanned)
    app.query_one(PromptArea).cursor_blink = False
    await pilot.press("ctrl+b", *"dog, cake name: max features: dialogue", "enter")
    await pilot.press(*"Max had a dog and a cake", "enter")
    await until(pilot, lambda: app.current is not None and not app.current.streaming)
    app.current.tokens_per_s, app.current.ttft = 1234.0, 0.012  # timing varies run to run
    app.current.created = "2025-03-14T09:30:00+00:00"  # the history list shows its time
    app.write_screen.refresh_history()
    app.query_one(StatusBar).set_story(app.current)
    app.query_one(StatusBar).set_note("")
    app.clear_notifications()  # the untrained model's note: a toast that times out
    app.query_one(BriefRow).input.focus()
    app.query_one(BriefRow).input.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_the_brief_row_snapshot(snap_compare, tui_checkpoints, tui_env, monkeypatch, size):
    app = _snapshot_app(tui_checkpoints, tui_env, monkeypatch)
    assert snap_compare(app, terminal_size=size, run_before=_story_with_a_brief)


def test_a_damaged_brief_in_history_is_no_brief():
    for bad in ("dog", ["dog"], {"words": ["two words"]}, {"colour": "red"}, 3, {}):
        story = Story.from_dict({"prompt": "Once", "text": " upon", "settings": {"brief": bad}})
        assert story.brief is None and story.title == "Once"
    good = {"words": ["dog"], "name": "Max", "features": []}
    story = Story.from_dict({"prompt": "", "text": " x", "settings": {"brief": good}})
    assert story.brief == Brief(("dog",), "Max") and story.title == "[dog · name: Max]"
