"""The Train screen driven like a user drives it, on real `slm-train model` processes (a
one-layer, 32-wide model on the byte tokenizer and a synthetic corpus: a few steps a
second on a loaded CPU). A run started from the form trains live (the step advances, the
curve grows, samples arrive, generation drops to one thread and says so), `w` writes with
its newest checkpoint, `x` stops it (it saves latest/), `r` resumes it, quitting asks. A
refusal and a diverging run show their one-line messages; a run started from another
terminal is watched by two TUIs at once; a missing folder and a partial last line are
waited for. The snapshot test of a recorded finished run is in test_tui_snapshots.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import _synthetic_stories

from slm_tui.trainer.report import metrics_line
from slm_tui.tui.app import SlmApp
from slm_tui.tui.training.chart import LossChart
from slm_tui.tui.training.form import StartForm
from slm_tui.tui.training.quit_dialog import QuitWhileTraining
from slm_tui.tui.training.samples import TrainSamples
from slm_tui.tui.training.screen import TrainScreen
from slm_tui.tui.widgets.status_bar import StatusBar

TINY = [
    "tokenizer.kind=byte", "model.d_model=32", "model.n_layer=1", "model.n_head=2",
    "model.context_length=32", "train.batch_size=8", "train.grad_accum=1",
    "train.warmup_steps=2", "train.eval_batches=1", "train.log_every=1",
    "train.sample_tokens=4", "train.threads=1", "train.device=cpu",
    "train.dtype=float32", "train.compile=false",  # no probe, no compile warm-up: fast starts
]  # fmt: skip
LONG = ["train.max_steps=100000", "train.save_every=3", "train.eval_every=3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tui-train")
    path = root / "stories.txt"
    stories = _synthetic_stories(300, seed=7)
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _shards(corpus, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(corpus.parent / "shards"))  # shared: built once


async def until(pilot, condition, timeout: float = 90.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


def app_on(tui_checkpoints: Path, runs: Path, **kwargs) -> SlmApp:
    return SlmApp(
        checkpoint=tui_checkpoints / "alpha",
        checkpoints_dir=runs,
        rescan=False,
        demo=False,
        device="cpu",
        **kwargs,
    )


def meta_step(folder: Path) -> int:
    return json.loads((folder / "latest" / "meta.json").read_text())["step"]


def threads_of_a_new_thread() -> int:
    """What a story's worker thread gets (each story runs in a fresh thread)."""
    import torch

    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    return seen[0]


async def test_a_run_started_here_trains_live_then_stops_and_resumes(
    corpus, tui_checkpoints, tui_env, tmp_path
):
    run = tmp_path / "runs" / "r1"
    app = app_on(tui_checkpoints, tmp_path / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: app.loaded is not None)
        threads_before = threads_of_a_new_thread()
        await pilot.press("ctrl+t")
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        assert "no run yet" in screen.query_one("#train-title").text
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, StartForm)
        form.query_one("#f-data").value = str(corpus)
        form.query_one("#f-output").value = str(run)
        form.query_one("#f-set").value = " ".join(TINY + LONG)
        await pilot.click("#form-start")
        assert app.screen is screen
        history = lambda: app.training.watch.history  # noqa: E731 (replaced on a reset)
        chart = screen.query_one(LossChart)

        # Live: the step advances and the curve grows.
        await until(pilot, lambda: history().step >= 2 and chart.points >= 2)
        step, points = history().step, chart.points
        await until(pilot, lambda: history().step >= step + 3 and chart.points > points)
        pid = app.training.process.pid
        assert f"training (process {pid})" in screen.query_one("#train-title").text
        assert screen.query_one("#train-stats").plain_text.startswith("step")
        await until(pilot, lambda: screen.query_one(TrainSamples).shown >= 1)

        # CPU fairness: one thread for the app's generation while the run trains.
        assert app.cpu.shared and threads_of_a_new_thread() == 1
        assert "machine shared with training" in app.query_one(StatusBar).plain_text

        # Write with the newest checkpoint: one key, back on the story screen.
        await until(pilot, lambda: (run / "latest" / "meta.json").exists())
        await pilot.press("w")
        assert not isinstance(app.screen, TrainScreen)
        await until(
            pilot, lambda: app.loaded is not None and run in Path(app.loaded.identity).parents
        )
        assert app.loaded.info.step >= 3

        # Stop: SIGTERM, the trainer saves latest/ and exits 0.
        await pilot.press("ctrl+t")
        screen = app.screen
        await pilot.press("x")
        await until(pilot, lambda: not app.training.own_running)
        assert app.training.process.returncode == 0
        stopped = meta_step(run)
        await until(pilot, lambda: history().ending() is not None)
        assert history().ending() == f"stopped at step {stopped}: Resume continues it"
        await until(pilot, lambda: not app.cpu.shared)
        assert threads_of_a_new_thread() == threads_before
        assert "shared" not in app.query_one(StatusBar).plain_text

        # Resume continues from the saved step.
        await pilot.press("r")
        await until(pilot, lambda: history().step >= stopped + 2 and app.training.own_running)
        assert app.training.process.argv.count("--resume") == 1

        # Quitting while it trains asks; "stop it" stops it and quits.
        process = app.training.process
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, QuitWhileTraining)
        await pilot.press("s")
    assert process.proc.wait(timeout=120) == 0
    assert meta_step(run) > stopped
    assert "resume" in (run / "train.log").read_text()


async def test_a_refusal_from_the_trainer_is_its_one_line(
    corpus, tui_checkpoints, tui_env, tmp_path
):
    run = tmp_path / "runs" / "bad"
    app = app_on(tui_checkpoints, tmp_path / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("ctrl+t", "n")
        form = app.screen
        form.query_one("#f-data").value = str(corpus)
        form.query_one("#f-output").value = str(run)
        form.query_one("#f-set").value = "train.lr=-1"
        await pilot.click("#form-start")
        screen = app.screen
        await until(pilot, lambda: screen.message.startswith("error:"))
        assert screen.message == "error: train.lr must be positive, got -1.0"


async def test_a_diverging_run_shows_why_it_stopped(corpus, tui_checkpoints, tui_env, tmp_path):
    run = tmp_path / "runs" / "nan"
    app = app_on(tui_checkpoints, tmp_path / "runs")
    overrides = [*TINY, "train.lr=1e30", "train.grad_clip=0", "train.warmup_steps=0",
                 "train.max_steps=50", "train.save_every=1", "train.eval_every=100"]  # fmt: skip
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("ctrl+t", "n")
        form = app.screen
        form.query_one("#f-data").value = str(corpus)
        form.query_one("#f-output").value = str(run)
        form.query_one("#f-set").value = " ".join(overrides)
        await pilot.click("#form-start")
        screen = app.screen
        await until(pilot, lambda: not app.training.own_running)
        await until(pilot, lambda: screen.message.startswith("error: the loss became"))
        assert "last good checkpoint" in screen.message  # the trainer's own line
        assert "non-finite" in screen.query_one("#train-title").text


def start_elsewhere(corpus: Path, run: Path) -> subprocess.Popen:
    """`slm-train model` as if typed in another terminal."""
    args = ["model", "--config", "tiny", "--data-files", str(corpus), "--output", str(run)]
    for override in TINY + LONG:
        args += ["--set", override]
    return subprocess.Popen(
        [sys.executable, "-m", "slm_tui.cli.train", *args],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_two_tuis_watch_a_run_started_in_another_terminal(
    corpus, tui_checkpoints, tui_env, tmp_path
):
    run = tmp_path / "elsewhere"
    proc = start_elsewhere(corpus, run)
    try:
        one = app_on(tui_checkpoints, tmp_path / "runs", watch=run)
        two = app_on(tui_checkpoints, tmp_path / "runs", watch=run)
        async with one.run_test(size=(100, 32)) as p1, two.run_test(size=(100, 32)) as p2:
            s1, s2 = one.screen, two.screen
            assert isinstance(s1, TrainScreen) and isinstance(s2, TrainScreen)
            for pilot, app, screen in ((p1, one, s1), (p2, two, s2)):
                await until(pilot, lambda a=app: a.training.watch.history.step >= 2)
                await until(pilot, lambda s=screen: s.pid == proc.pid)
                title = screen.query_one("#train-title").text
                assert f"training (process {proc.pid}, started elsewhere)" in title
            await until(p1, lambda: one.cpu.shared)  # a local run, though not ours
            await p2.press("r")  # the folder is busy: refused, naming the process
            assert s2.message == (f"{run} is in use by another training run (process {proc.pid})")
            await p1.press("x")  # stop a run started elsewhere: SIGTERM to its process
            assert proc.wait(timeout=120) == 0
            stopped = meta_step(run)
            for pilot, app in ((p1, one), (p2, two)):
                await until(pilot, lambda a=app: a.training.watch.history.ending() is not None)
                assert app.training.watch.history.step == stopped
    finally:
        proc.kill()
        proc.wait()


async def test_a_missing_folder_and_a_partial_line_are_waited_for(
    tui_checkpoints, tui_env, tmp_path
):
    run = tmp_path / "not-yet"
    app = app_on(tui_checkpoints, tmp_path / "runs", watch=run)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.polls >= 2)
        assert screen.query_one("#train-title").text.endswith("waiting for metrics.jsonl")
        run.mkdir()
        start = {"kind": "event", "event": "start", "step": 0, "tokens": 0, "max_steps": 10}
        train = {"kind": "train", "step": 1, "tokens": 256, "loss": 5.5, "lr": 1e-3,
                 "tokens_per_s": 900.0, "elapsed_s": 0.3, "eta_s": 2.7}  # fmt: skip
        line = json.dumps(train).encode()
        with open(run / "metrics.jsonl", "ab") as f:
            f.write(json.dumps(start).encode() + b"\n" + line[:20])  # mid-write
        history = lambda: app.training.watch.history  # noqa: E731
        await until(pilot, lambda: history().max_steps == 10)
        polls = screen.polls
        await until(pilot, lambda: screen.polls >= polls + 2)
        assert history().last_train is None and history().step == 0
        with open(run / "metrics.jsonl", "ab") as f:
            f.write(line[20:] + b"\n")
        await until(pilot, lambda: history().step == 1)
        assert metrics_line(history().last_train) == train  # read whole once complete
        first = screen.query_one("#train-stats").plain_text.splitlines()[0]
        assert first.split() == ["step", "1", "/", "10"]
