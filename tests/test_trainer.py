"""The trainer as a library: a tiny run learns, resume replays the uninterrupted run exactly,
schedules, the Muon option, a diverging run stops keeping its last good checkpoint,
whole-corpus evaluation counts every token and byte, the in-run validation figures equal
`evaluate` on the same shard, samples come from the generation engine, and the reporter
hooks get the records metrics.jsonl holds.

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

from slm_tui.errors import ConfigError, TrainingError
from slm_tui.generation import SamplingSettings, generate_batch
from slm_tui.presets import load_config
from slm_tui.shards import corpus_source, plan_split
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
        if record.step == self.step:
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
    assert result.bytes == sum(len(s.encode("utf-8")) for s in stories)
    assert result.tokens == sum(len(s.encode("utf-8")) + 2 for s in stories) - 1
    assert result.bpb == pytest.approx(result.loss * result.tokens / math.log(2) / result.bytes)
    # Batching does not change the answer; a cap reads whole stories only.
    again = evaluate(run, data_files=[str(corpus)], batch_size=7)
    assert again.loss == pytest.approx(result.loss, rel=1e-5)
    capped = evaluate(run, data_files=[str(corpus)], max_tokens=1000)
    assert capped.tokens < result.tokens and capped.stories < 400


class Recorder(Reporter):
    """Keeps every record the hooks receive."""

    def __init__(self) -> None:
        self.got: dict[str, list] = {"start": [], "log": [], "eval": [], "samples": []}

    def on_start(self, info):
        self.got["start"].append(info)

    def on_log(self, record):
        self.got["log"].append(record)

    def on_eval(self, record):
        self.got["eval"].append(record)

    def on_samples(self, record):
        self.got["samples"].append(record)


def test_in_run_validation_equals_eval_of_the_checkpoint_on_its_shard(corpus, tmp_path):
    # eval_batches covers the whole validation shard, tail included: the same targets.
    run = tmp_path / "run"
    rec = Recorder()
    train(tiny_config(corpus, "train.max_steps=6", "train.eval_batches=100000"), run, reporter=rec)
    meta = json.loads((run / "latest" / "meta.json").read_text())
    last = rec.got["eval"][-1]
    assert last.step == 6 and (last.val_loss, last.val_bpb) == (meta["val_loss"], meta["val_bpb"])
    # No corpus: the checkpoint's own validation shard, on the device the run trained on
    # (a GPU computes its own figure; tests/test_exactness.py compares on CUDA).
    result = evaluate(run / "latest", device="cpu")
    assert result.corpus.startswith("validation shard")
    assert result.tokens == last.val_tokens
    assert result.loss == pytest.approx(meta["val_loss"], abs=1e-5)
    assert result.bpb == pytest.approx(meta["val_bpb"], abs=1e-5)
    # The shard's bytes count whole: bpb is the sum of nats / ln 2 / the stories' bytes.
    held_out = list(plan_split(corpus_source(data_files=[str(corpus)]), None, 0.005).iter_val())
    assert result.stories == len(held_out)
    assert result.bytes == sum(len(s.encode("utf-8")) for s in held_out)
    assert result.tokens == sum(len(s.encode("utf-8")) + 2 for s in held_out) - 1
    assert result.bpb == pytest.approx(result.loss * result.tokens / math.log(2) / result.bytes)


def test_hooks_get_the_records_metrics_jsonl_holds(corpus, tmp_path):
    run = tmp_path / "run"
    rec = Recorder()
    train(tiny_config(corpus, "train.max_steps=4", "train.eval_every=2"), run, reporter=rec)
    (start,) = rec.got["start"]
    assert (start.step, start.max_steps, start.tokens_per_step) == (0, 4, 8 * 32)
    assert start.tokenizer == "byte" and not start.resumed and start.device == "cpu"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    start_line = {"kind": "event", "event": "start", "step": 0, "tokens": 0, "max_steps": 4}
    start_line["tokens_per_step"] = 8 * 32  # the run's planned length in tokens, for watchers
    # ... and how the run computes, decided once (a resume keeps it; tests/test_exactness.py)
    bf16 = start.dtype == "bfloat16"
    start_line |= {"dtype": start.dtype, "compile": False, "math_attention": bf16}
    assert lines[0] == start_line
    train_lines = [x for x in lines if x["kind"] == "train"]
    assert [x["step"] for x in train_lines] == [r.step for r in rec.got["log"]] == [1, 2, 3, 4]
    # Key order is the file format; no "mfu" without a GPU peak.
    keys = ["kind", "step", "tokens", "loss", "lr", "tokens_per_s", "elapsed_s", "eta_s"]
    assert all(list(x) == keys for x in train_lines)
    assert [x["loss"] for x in train_lines] == [r.loss for r in rec.got["log"]]
    eval_lines = [x for x in lines if x["kind"] == "eval"]
    assert [list(x) for x in eval_lines] == [
        ["kind", "step", "tokens", "val_loss", "val_bpb", "val_tokens"]
    ] * 2
    assert [x["val_bpb"] for x in eval_lines] == [r.val_bpb for r in rec.got["eval"]]
    sample_lines = [x for x in lines if x["kind"] == "samples"]
    assert [x["step"] for x in sample_lines] == [2, 4]
    assert list(sample_lines[0]) == ["kind", "step", "tokens", "samples"]
    assert [list(s) for s in sample_lines[0]["samples"]] == [["prompt", "text"]] * 3
    assert sample_lines[-1]["samples"] == [
        {"prompt": s.prompt, "text": s.text} for s in rec.got["samples"][-1].samples
    ]


def test_samples_are_the_engines_stories_with_the_configured_settings(corpus, tmp_path):
    from slm_tui.checkpoint.io import load_checkpoint

    run = tmp_path / "run"
    over = ("train.max_steps=3", "train.sample_tokens=12", "train.sample_top_k=5")
    cfg = tiny_config(corpus, *over)
    train(cfg, run)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    written = [x for x in lines if x["kind"] == "samples"][-1]["samples"]
    loaded = load_checkpoint(run / "latest", device="cpu")
    settings = SamplingSettings(temperature=0.7, top_k=5, top_p=1.0, min_p=0.0,
                                repetition_penalty=1.0, max_new_tokens=12)  # fmt: skip
    prompts = list(cfg.train.sample_prompts)
    seeds = [cfg.train.seed + i for i in range(len(prompts))]
    again = generate_batch(loaded.model.eval(), loaded.tokenizer, prompts, settings, seeds=seeds)
    assert written == [{"prompt": r.prompt, "text": r.text} for r in again]
    assert any(r.text for r in again)


def test_no_samples_when_sample_tokens_is_zero(corpus, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(corpus, "train.max_steps=2", "train.sample_tokens=0"), run)
    kinds = [json.loads(x)["kind"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "samples" not in kinds and "eval" in kinds


def test_sample_top_k_larger_than_the_vocabulary_is_refused_before_training(corpus, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        train(tiny_config(corpus, "train.sample_top_k=100000"), run)
    message = str(info.value)
    assert "\n" not in message and "train.sample_top_k 100000" in message
    assert "vocabulary" in message
    assert not (run / "metrics.jsonl").exists()
