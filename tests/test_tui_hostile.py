"""The TUI against hostile input, driven as a user would (a real app under `run_test`): a
server that streams past max_tokens, floods tokens, sends a token too big, drips or
stalls, lists odd model ids or 100,000 of them (tests/hostile_http.py, a real loopback
server); the Train screen on metrics.jsonl files with NaN, Infinity, strings, 1e308, a
FIFO, a line of megabytes (real files); and the sampling facts an export and the status
line give after a change mid-story."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from slm_tui.generation import Event
from slm_tui.tui.app import SlmApp
from slm_tui.tui.checkpoint_loader import MODELS_SHOWN
from slm_tui.tui.screens.checkpoint_picker import CheckpointPicker
from slm_tui.tui.screens.compare import CompareScreen
from slm_tui.tui.screens.export import ExportScreen
from slm_tui.tui.store import STORED_TEXT_LIMIT
from slm_tui.tui.story import Story
from slm_tui.tui.streamer import FLUSH_EVENTS, QUEUE_LIMIT, Streamer
from slm_tui.tui.training.samples import TrainSamples
from slm_tui.tui.training.screen import TrainScreen
from slm_tui.tui.training.stats import TrainStats
from slm_tui.tui.training.watch import LINE_LIMIT, SAMPLE_CHARS, MetricsTail
from slm_tui.tui.widgets.history_list import HistoryList
from slm_tui.tui.widgets.sampling_panel import SamplingPanel
from slm_tui.tui.widgets.status_bar import StatusBar
from tests.hostile_http import HostileServer, Reply, drip, endless, ok, stall

SIZE = (100, 30)


@pytest.fixture
def hostile():
    with HostileServer() as server:
        yield server


async def until(pilot, condition, timeout: float = 20.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def status(app: SlmApp) -> str:
    return app.query_one("#status", StatusBar).plain_text


def watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "slm-remote-watch"]


def history_lines(env: Path) -> list[str]:
    path = env / "data" / "history.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


async def on_server(pilot, app: SlmApp, **sampling) -> None:
    await until(pilot, lambda: app.loaded is not None)
    if sampling:
        app.query_one(SamplingPanel).set_values(sampling)
        await pilot.pause()


# ---- a server faster than the screen -----------------------------------------------------
async def test_a_server_streaming_past_max_tokens_ends_the_story_there(hostile, tui_env):
    hostile.script["endless"] = endless  # 200,000 tokens whatever max_tokens says
    app = SlmApp(server=hostile.url("endless"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app, max_new_tokens=16)
        app.write("Once")
        await until(pilot, lambda: not app.current.streaming)
        assert app.current.num_tokens == 16 and app.current.finish_reason == "length"
        assert "max tokens" in status(app)


async def test_a_flood_of_tokens_reaches_the_screen_in_bounded_frames(hostile, tui_env):
    hostile.script["endless"] = endless
    app = SlmApp(server=hostile.url("endless"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app, max_new_tokens=150_000)
        batches: list[int] = []
        queued: list[int] = []
        update = app.write_screen.streamer.on_update

        def counted(story, events):  # a slow terminal: each redraw takes 0.3 s
            batches.append(len(events))
            update(story, events)
            time.sleep(0.3)

        app.write_screen.streamer.on_update = counted
        app.write("Once")
        for _ in range(40):  # the UI keeps answering while the server floods it
            await pilot.pause(0.02)
            queued.append(len(app.write_screen.streamer._queue))
            if app.current.num_tokens >= 20_000 or not app.current.streaming:
                break
        await pilot.press("escape")
        await until(pilot, lambda: not app.current.streaming)
        assert app.current.finish_reason == "cancelled" and app.current.num_tokens < 150_000
        assert batches and max(batches) <= FLUSH_EVENTS  # a frame folds a bounded batch
        assert max(queued) <= QUEUE_LIMIT  # the worker waits for the UI: memory stays flat


async def test_one_flush_folds_a_bounded_batch(tui_env):
    app = SlmApp(server="http://127.0.0.1:9", rescan=False, demo=False)
    async with app.run_test(size=SIZE):
        seen: list[int] = []
        streamer = Streamer(app, "test", lambda story, events: seen.append(len(events)))
        story = Story(prompt="Once")
        for i in range(3 * FLUSH_EVENTS):
            streamer._queue.append((story, Event(kind="token", index=i + 1, seed=1, text="a")))
        streamer.flush()
        assert seen == [len(story.tokens)] and 0 < seen[0] <= FLUSH_EVENTS
        while streamer._queue:
            streamer.flush()
        assert sum(seen) == len(story.tokens) == 3 * FLUSH_EVENTS


async def test_a_token_too_big_ends_the_story_and_history_stays_small(hostile, tui_env):
    def big_token(reply: Reply) -> None:
        if reply.models:
            return ok(reply)
        reply.start()
        reply.event("Once")
        reply.event("a" * (20 << 20))  # one 20 MB "token"
        reply.end()

    hostile.script["big"] = big_token
    app = SlmApp(server=hostile.url("big"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app)
        app.write("Once")
        await until(pilot, lambda: not app.current.streaming)
        assert app.current.finish_reason == "error" and "longer than" in app.current.error
        assert app.current.text == "Once"
    assert max(len(line) for line in history_lines(tui_env)) < 64 << 10


async def test_history_keeps_a_bounded_part_of_a_flooded_story(hostile, tui_env):
    piece = "word " * (80 << 10)  # 400 KiB a token: under the line bound, 3 exceed the store's

    def fat(reply: Reply) -> None:
        if reply.models:
            return ok(reply)
        reply.start()
        for _ in range(3):
            reply.event(piece)
        reply.event("", finish_reason="stop")
        reply.end()

    hostile.script["fat"] = fat
    app = SlmApp(server=hostile.url("fat"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app)
        app.write("Once")
        await until(pilot, lambda: not app.current.streaming)
        assert len(app.current.text) == 3 * len(piece)  # the screen has all of it
    (line,) = history_lines(tui_env)
    stored = json.loads(line)
    assert stored["truncated"] is True and len(stored["text"]) == STORED_TEXT_LIMIT
    assert len(line.encode()) < 3 * STORED_TEXT_LIMIT  # text, tokens and fields, bounded
    again = SlmApp(server=hostile.url("fat"), rescan=False, demo=False)
    async with again.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: again.history.stories)
        assert again.history.stories[0].truncated


# ---- a server that drips or stalls -------------------------------------------------------
async def test_esc_ends_a_dripping_story_and_closes_its_socket(hostile, tui_env):
    # the list comes at once; a story gets a byte every 0.2 s: never idle long enough to
    # time out
    hostile.script["drip"] = lambda reply: ok(reply) if reply.models else drip(reply)
    app = SlmApp(server=hostile.url("drip"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app)
        app.write("Once")
        await until(pilot, lambda: hostile.open_connections == 1)
        await pilot.pause(0.5)
        await pilot.press("escape")
        await until(pilot, lambda: not app.current.streaming, timeout=10.0)
        assert app.current.finish_reason == "cancelled"
        await until(pilot, lambda: hostile.open_connections == 0, timeout=5.0)
        await until(pilot, lambda: not watchers(), timeout=5.0)


async def test_restarting_stories_on_a_silent_server_leaves_no_socket_behind(hostile, tui_env):
    hostile.script["stall"] = stall  # headers, then 30 s of silence
    app = SlmApp(server=hostile.url("stall"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app)
        for n in range(3):  # each new story cancels the one before
            app.write(f"Once {n}")
            await until(pilot, lambda n=n: len(hostile.requests) >= n + 2)  # /models + n+1
        await until(pilot, lambda: hostile.open_connections == 1, timeout=10.0)
        await pilot.press("escape")
        await until(pilot, lambda: not app.current.streaming, timeout=10.0)
        await until(pilot, lambda: hostile.open_connections == 0, timeout=5.0)
        await until(pilot, lambda: not watchers(), timeout=5.0)
        stories = app.session
        assert [s.finish_reason for s in stories] == ["cancelled"] * 3


# ---- model lists -------------------------------------------------------------------------
async def test_model_ids_with_nul_duplicates_markup_and_slashes(hostile, tui_env):
    ids = ["org/model-a", "nul\x00name", "org/model-a", "[bold]x[/]", "/abs/path"]

    def models(reply: Reply) -> None:
        if reply.models:
            return reply.models_list(ids)
        ok(reply)

    hostile.script["odd"] = models
    app = SlmApp(server=hostile.url("odd"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app)
        assert app.loaded.info.name == "org/model-a"  # the first, by its whole id
        assert [i.name for i in app.checkpoints] == ["org/model-a", "nul\x00name", "[bold]x[/]",
                                                      "/abs/path"]  # fmt: skip
        seen = []
        for row, want in ((1, "nul\x00name"), (3, "/abs/path"), (0, "org/model-a")):
            await pilot.press("f2")
            await until(pilot, lambda: isinstance(app.screen, CheckpointPicker))
            table = app.screen.query_one("#picker-table")
            assert table.row_count == 4
            table.move_cursor(row=row)
            await pilot.press("enter")
            await until(pilot, lambda want=want: app.loaded.info.name == want)
            app.write("Once")
            await until(pilot, lambda: not app.current.streaming)
            assert app.current.finish_reason == "eos", app.current.error
            seen.append(hostile.requests[-1]["model"])
        assert seen == ["nul\x00name", "/abs/path", "org/model-a"]  # requested whole
        assert app.is_running


async def test_a_hundred_thousand_models_are_capped_and_not_fetched_every_2s(hostile, tui_env):
    def many(reply: Reply) -> None:
        if reply.models:
            return reply.models_list([f"model-{i:06d}" for i in range(100_000)])
        ok(reply)

    hostile.script["many"] = many
    app = SlmApp(server=hostile.url("many"), demo=False)  # rescans on its timer
    notes: list[str] = []
    notify = app.notify
    app.notify = lambda message, *a, **k: (notes.append(str(message)), notify(message, *a, **k))
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app)
        assert len(app.checkpoints) == MODELS_SHOWN
        assert any("100,000 models" in n for n in notes)
        await pilot.pause(5.0)  # two rescan ticks: a server that answered is not re-asked
        assert sum(r["path"].endswith("/models") for r in hostile.requests) == 1
        await pilot.press("f2")  # the picker asks at once
        await until(pilot, lambda: isinstance(app.screen, CheckpointPicker))
        await until(
            pilot, lambda: sum(r["path"].endswith("/models") for r in hostile.requests) == 2
        )
        assert app.screen.query_one("#picker-table").row_count == MODELS_SHOWN


async def test_compare_works_on_a_server(hostile, tui_env):
    hostile.script["two"] = lambda r: r.models_list(["a", "b"]) if r.models else ok(r)
    app = SlmApp(server=hostile.url("two"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app)
        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await until(pilot, lambda: screen.b_loaded is not None)
        screen.query_one("#compare-seed").value = "Once"
        screen.action_run()
        await until(pilot, lambda: len(screen.stories) == 2)
        await until(pilot, lambda: not any(s.streaming for s in screen.stories.values()))
        assert {s.checkpoint for s in screen.stories.values()} == {"a", "b"}
        assert all(s.text == "Once upon a time" for s in screen.stories.values())


# ---- sampling changes: the export and the status line ------------------------------------
def paced(reply: Reply) -> None:
    """An endless story at ~100 tokens a second: slow enough for a change to land."""
    if reply.models:
        return ok(reply)
    reply.start()
    for _ in range(3000):
        reply.event("a ")
        reply.wait(0.01)
    reply.end()


async def export(pilot, app: SlmApp, path: Path) -> None:
    await pilot.press("f9")
    await until(pilot, lambda: isinstance(app.screen, ExportScreen))
    if path.suffix == ".jsonl":
        await pilot.click("#fmt-jsonl")
    field = app.screen.query_one("#export-path")
    field.value = str(path)
    field.focus()
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(app.screen, ExportScreen))


async def change_mid_story(pilot, app: SlmApp, **changes) -> int:
    """Change sampling settings while the current story streams; the token they apply from."""
    start = app.current.num_tokens
    await until(pilot, lambda: app.current.num_tokens >= start + 3)
    logged = len(app.applied_log)
    app.query_one(SamplingPanel).set_values(changes)
    await until(pilot, lambda: len(app.applied_log) > logged)
    return app.applied_log[-1][2]


async def test_an_export_says_from_which_token_each_sampling_change_applied(hostile, tui_env):
    hostile.script["paced"] = paced
    app = SlmApp(server=hostile.url("paced"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app, max_new_tokens=100_000, temperature=0.9)
        app.write("Once")
        first = await change_mid_story(pilot, app, temperature=7.0)
        await pilot.press("escape")
        await until(pilot, lambda: not app.current.streaming)
        story = app.current
        # Continued with other settings: a change from the continuation's first token.
        app.query_one(SamplingPanel).set_values({"temperature": 0.5})
        await pilot.pause()
        before = story.num_tokens
        app.write_screen.action_continue_story()
        await until(pilot, lambda: story.num_tokens >= before + 3)
        third = await change_mid_story(pilot, app, top_k=7)
        await pilot.press("escape")
        await until(pilot, lambda: not story.streaming)
        assert before + 1 < third <= story.num_tokens
        assert story.tokens[first - 1].settings_version > story.tokens[first - 2].settings_version
        await export(pilot, app, tui_env / "story.jsonl")
        await export(pilot, app, tui_env / "story.md")
    (row,) = [json.loads(line) for line in (tui_env / "story.jsonl").read_text().splitlines()]
    assert row["settings"]["temperature"] == 0.9  # what the story started with
    assert row["settings_changes"] == [
        {"from_token": first, "settings": {"temperature": 7.0}},
        {"from_token": before + 1, "settings": {"temperature": 0.5}},
        {"from_token": third, "settings": {"top_k": 7}},
    ]
    md = (tui_env / "story.md").read_text(encoding="utf-8")
    assert "> temperature 0.9 · " in md
    assert f"> from token {first}: temperature 7.0" in md
    assert f"> from token {before + 1}: temperature 0.5" in md
    assert f"> from token {third}: top_k 7" in md


async def test_the_note_on_a_change_belongs_to_its_story(hostile, tui_env):
    hostile.script["paced"] = paced
    app = SlmApp(server=hostile.url("paced"), rescan=False, demo=False)
    async with app.run_test(size=SIZE) as pilot:
        await on_server(pilot, app, max_new_tokens=200)

        async def changed_story(prompt: str) -> str:
            app.write(prompt)
            index = await change_mid_story(pilot, app, temperature=7.0)
            note = f"from token {index}"
            assert note in status(app)
            await until(pilot, lambda: not app.current.streaming)  # ends at max tokens
            assert app.current.finish_reason == "length" and note in status(app)
            return note

        note = await changed_story("One")
        await pilot.press("f6")  # a preset between stories: the note was the last story's
        await pilot.pause()
        assert note not in status(app)

        note = await changed_story("Two")
        app.write("Three")  # a new story
        await until(pilot, lambda: app.current.num_tokens >= 1)
        assert note not in status(app)
        await until(pilot, lambda: not app.current.streaming)

        note = await changed_story("Four")
        history = app.query_one(HistoryList)
        history.focus()
        history.highlighted = history.option_count - 1  # the first story (newest first)
        await pilot.press("enter")
        await until(pilot, lambda: app.current.prompt == "One")
        assert note not in status(app)
        # the stored story still says what changed, and from where
        assert app.history.stories[0].changes[0]["settings"] == {"temperature": 7.0}


# ---- the Train screen on hostile metrics.jsonl files --------------------------------------
START = {"kind": "event", "event": "start", "step": 0, "tokens": 0, "max_steps": 100}
GOOD = [
    START,
    {"kind": "train", "step": 1, "tokens": 4096, "loss": 8.3, "lr": 3e-4,
     "tokens_per_s": 5000.0, "eta_s": 10.0, "elapsed_s": 1.0},
    {"kind": "eval", "step": 1, "tokens": 4096, "val_loss": 8.2, "val_bpb": 3.1,
     "val_tokens": 40960},
    {"kind": "samples", "step": 1, "tokens": 4096,
     "samples": [{"prompt": "Once", "text": " upon a time"}]},
]  # fmt: skip
BAD_LINES = {
    "nan and infinity": (
        b'{"kind": "train", "step": 2, "tokens": 8192, "loss": NaN, "lr": Infinity,'
        b' "tokens_per_s": -Infinity, "eta_s": NaN, "elapsed_s": 2.0}\n'
        b'{"kind": "eval", "step": 2, "tokens": 8192, "val_loss": 1e308, "val_bpb": Infinity}\n'
    ),
    "tokens infinity": b'{"kind": "train", "step": 3, "tokens": Infinity, "loss": 2.0}\n',
    "tokens nan": b'{"kind": "train", "step": 3, "tokens": NaN, "loss": 2.0}\n',
    "elapsed infinity": (
        b'{"kind": "train", "step": 3, "tokens": 10, "loss": 2.0, "elapsed_s": Infinity}\n'
    ),
    "tokens_per_s a string": (
        b'{"kind": "train", "step": 3, "tokens": 10, "loss": 2.0, "tokens_per_s": "fast"}\n'
    ),
    "eval step a string": b'{"kind": "eval", "step": "two", "tokens": 10, "val_loss": 2.0}\n',
    "samples tokens a string": (
        b'{"kind": "samples", "step": 3, "tokens": "many", "samples": [{"text": 5}]}\n'
    ),
    "1e308 and huge integers": (
        b'{"kind": "train", "step": ' + b"9" * 4000 + b', "tokens": 1e308, "loss": 1e308}\n'
        b'{"kind": "eval", "step": 3, "tokens": 1e308, "val_loss": 1e308}\n'
        b'{"kind": "event", "event": "start", "step": 0, "max_steps": ' + b"9" * 4000 + b"}\n"
    ),
    "wrong types everywhere": (
        b'{"kind": 5, "step": true}\n{"kind": "event", "event": ["x"], "max_steps": "ten"}\n'
        b'{"kind": "samples", "step": 4, "samples": "none"}\n'
        b'{"kind": "eval", "step": 4, "tokens": 10, "val_loss": "low", "val_bpb": []}\n'
    ),
}


def lines(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def watch_app(run: Path, tmp_path: Path) -> SlmApp:
    return SlmApp(watch=run, demo=False, rescan=False, checkpoints_dir=tmp_path / "none")


def shown(app: SlmApp) -> str:
    stats = app.screen.query_one(TrainStats).plain_text
    samples = str(app.screen.query_one(TrainSamples).query_one("Static").content)
    return stats + "\n" + samples


@pytest.mark.parametrize("shape", list(BAD_LINES))
async def test_the_train_screen_shows_what_makes_sense_of_bad_figures(tmp_path, tui_env, shape):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(lines(GOOD) + BAD_LINES[shape])
    app = watch_app(run, tmp_path)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TrainScreen) and app.screen.polls >= 2)
        await pilot.pause(0.3)  # the chart renders
        text = shown(app).lower()
        assert "nan" not in text and "inf" not in text and "e+" not in text, text
        assert "best val    8.2000 @ 1" in shown(app)  # the good figures stay
        assert app.is_running
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, TrainScreen))


async def test_a_fifo_in_place_of_metrics_jsonl_is_never_opened(tmp_path, tui_env):
    run = tmp_path / "run"
    run.mkdir()
    fifo = run / "metrics.jsonl"
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer() -> None:
        # Only a reader that opened the FIFO lets this open succeed: an app that blocks in
        # open() is released (so the test fails instead of hanging); one that never opens
        # it leaves this loop to the end of the test.
        while not stop.wait(0.1):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        app = watch_app(run, tmp_path)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, TrainScreen))
            screen = app.screen
            await until(pilot, lambda: screen.polls >= 3)
            assert "not a regular file" in screen.query_one("#train-title").text
            await pilot.press("escape")  # the app answers keys
            await until(pilot, lambda: not isinstance(app.screen, TrainScreen))
            # replaced by a good file: read as usual
            fifo.unlink()
            (run / "metrics.jsonl").write_bytes(lines(GOOD))
            await pilot.press("ctrl+t")
            await until(pilot, lambda: app.training.watch.history.step == 1)
    finally:
        stop.set()
        thread.join()


def test_a_folder_or_a_device_in_place_of_metrics_jsonl_is_not_read(tmp_path):
    tail = MetricsTail(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").mkdir()
    assert tail.poll() == ([], False) and "not a regular file" in (tail.problem or "")
    (tmp_path / "metrics.jsonl").rmdir()
    (tmp_path / "metrics.jsonl").symlink_to("/dev/zero")
    assert tail.poll() == ([], False) and "not a regular file" in (tail.problem or "")
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").write_bytes(lines(GOOD))
    assert len(tail.poll()[0]) == 4 and tail.problem is None


async def test_a_line_of_megabytes_is_skipped_and_samples_are_cut(tmp_path, tui_env):
    run = tmp_path / "run"
    run.mkdir()
    huge = {"kind": "samples", "step": 2, "tokens": 8192,
            "samples": [{"prompt": "P", "text": "word " * (LINE_LIMIT // 2)}]}  # fmt: skip
    long = {"kind": "samples", "step": 3, "tokens": 9000,
            "samples": [{"prompt": "L", "text": "long " * 50_000}] * 3}  # fmt: skip
    # 2.5 MB (over the line bound: skipped), then 750 KB (under it: read, samples cut)
    data = lines(GOOD) + lines([huge]) + lines([long]) + lines([{**GOOD[1], "step": 4}])
    (run / "metrics.jsonl").write_bytes(data)
    app = watch_app(run, tmp_path)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: app.training.watch is not None)
        history = app.training.watch.history
        await until(pilot, lambda: history.step == 4)
        assert [r.step for r in history.samples] == [1, 3]  # the 2.5 MB line: skipped
        assert all(len(s.text) <= SAMPLE_CHARS for r in history.samples for s in r.samples)
        assert len(shown(app)) < 4 * SAMPLE_CHARS  # what is drawn is bounded
