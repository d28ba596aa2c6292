"""The trainer as a library: a tiny run learns, resume replays the uninterrupted run exactly,
schedules, the Muon option, a diverging run stops keeping its last good checkpoint, and
whole-corpus evaluation counts every token and byte.

Everything runs on CPU in float32 with a one-layer, 32-wide model on the byte tokenizer and a
synthetic corpus the test writes itself.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import torch
from conftest import _synthetic_stories

from slm_tui.config import load_config
from slm_tui.errors import TrainingError
from slm_tui.trainer import Reporter, evaluate, lr_multiplier, train


@pytest.fixture(autouse=True)
def _shards_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path / "shards-cache"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    stories = _synthetic_stories(400, seed=3)
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


def tiny_config(corpus: Path, *overrides: str):
    base = [
        "tokenizer.kind=byte",
        "model.d_model=32",
        "model.n_layer=1",
        "model.n_head=2",
        "model.context_length=32",
        "train.batch_size=8",
        "train.grad_accum=1",
        "train.max_steps=30",
        "train.warmup_steps=5",
        "train.lr=3e-3",
        "train.eval_every=15",
        "train.save_every=15",
        "train.eval_batches=2",
        "train.log_every=1",
        "train.sample_tokens=8",
        "train.threads=1",
        "train.device=cpu",
    ]
    cfg = load_config("tiny", base + list(overrides))
    cfg.data.data_files = [str(corpus)]
    return cfg


def train_losses(run: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def test_tiny_run_learns_and_writes_a_complete_run(corpus, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_config(corpus), run)
    assert result.status == "finished" and result.step == 30
    losses = train_losses(run)
    assert sum(losses[s] for s in range(26, 31)) < sum(losses[s] for s in range(1, 6)) - 1.0
    for kind in ("latest", "best"):
        assert (run / kind / "model.safetensors").is_file()
        assert (run / kind / "trainer_state.pt").is_file()
    meta = json.loads((run / "latest" / "meta.json").read_text())
    assert meta["step"] == 30 and meta["tokens_seen"] == 30 * 8 * 32
    assert math.isfinite(meta["val_bpb"]) and meta["val_bpb"] < 8.0
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kinds = {json.loads(x)["kind"] for x in (run / "metrics.jsonl").read_text().splitlines()}
    assert {"train", "eval", "samples"} <= kinds


class StopAt(Reporter):
    """Asks the run to stop after `step`, the way SIGINT/SIGTERM does."""

    def __init__(self, step: int, event: threading.Event) -> None:
        self.step, self.event = step, event

    def on_log(self, record):
        if record["step"] == self.step:
            self.event.set()


def test_resume_replays_the_uninterrupted_run_exactly(corpus, tmp_path):
    # Dropout on, so the restored RNG matters; grad accumulation on, so micro-batching does.
    over = (
        "model.dropout=0.1",
        "train.grad_accum=2",
        "train.max_steps=16",
        "train.eval_every=5",
        "train.save_every=5",
    )
    full = train(tiny_config(corpus, *over), tmp_path / "full")
    assert full.status == "finished"

    stop = threading.Event()
    part = train(tiny_config(corpus, *over), tmp_path / "part", reporter=StopAt(7, stop), stop=stop)
    assert part.status == "interrupted" and part.step == 7
    assert json.loads((tmp_path / "part/latest/meta.json").read_text())["step"] == 7
    torch.manual_seed(12345)  # whatever the process RNG did meanwhile must not matter
    resumed = train(tiny_config(corpus, *over), tmp_path / "part", resume=True)
    assert resumed.status == "finished" and resumed.step == 16

    a, b = train_losses(tmp_path / "full"), train_losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 17))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
    assert resumed.val_loss == pytest.approx(full.val_loss, abs=1e-6)


def test_schedules_are_pure_functions_of_the_step():
    cfg = load_config(
        "tiny", ["train.max_steps=100", "train.warmup_steps=10", "train.min_lr_ratio=0.1"]
    ).train
    assert lr_multiplier(0, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, cfg) == pytest.approx(1.0)
    assert lr_multiplier(55, cfg) == pytest.approx(0.55)  # cosine midpoint
    assert lr_multiplier(99, cfg) == pytest.approx(0.1, abs=1e-3)
    cfg.schedule, cfg.decay_fraction = "wsd", 0.2
    assert [lr_multiplier(s, cfg) for s in (10, 50, 79)] == [1.0, 1.0, 1.0]
    assert lr_multiplier(89, cfg) == pytest.approx(0.55)
    assert lr_multiplier(99, cfg) == pytest.approx(0.1)


def test_muon_option_trains(corpus, tmp_path):
    cfg = tiny_config(corpus, "train.optimizer=muon", "train.max_steps=20", "train.lr=1e-2")
    result = train(cfg, tmp_path / "run")
    losses = train_losses(tmp_path / "run")
    assert result.status == "finished"
    assert sum(losses[s] for s in range(16, 21)) < sum(losses[s] for s in range(1, 6))
    state = torch.load(tmp_path / "run/latest/trainer_state.pt", weights_only=True)
    assert len(state["optimizer"]["optimizers"]) == 2  # AdamW + Muon


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    cfg = tiny_config(
        corpus,
        "train.lr=1e30",
        "train.grad_clip=0",
        "train.warmup_steps=0",
        "train.save_every=1",
        "train.log_every=10",
        "train.eval_every=100",
    )
    with pytest.raises(TrainingError) as info:
        train(cfg, tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and "loss became" in message
    meta = json.loads((tmp_path / "run/latest/meta.json").read_text())
    assert math.isfinite(meta["train_loss"])  # the saved weights predate the blow-up


def test_eval_counts_every_token_and_byte_of_the_corpus(corpus, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(corpus, "train.max_steps=5"), run)
    stories = _synthetic_stories(400, seed=3)
    result = evaluate(run, data_files=[str(corpus)], batch_size=4)
    assert result["bytes"] == sum(len(s.encode("utf-8")) for s in stories)
    assert result["tokens"] == sum(len(s.encode("utf-8")) + 2 for s in stories) - 1
    assert result["bpb"] == pytest.approx(
        result["loss"] * result["tokens"] / math.log(2) / result["bytes"]
    )
    # Batching does not change the answer; a cap reads whole stories only.
    again = evaluate(run, data_files=[str(corpus)], batch_size=7)
    assert again["loss"] == pytest.approx(result["loss"], rel=1e-5)
    capped = evaluate(run, data_files=[str(corpus)], max_tokens=1000)
    assert capped["tokens"] < result["tokens"] and capped["stories"] < 400
