"""What a run leaves beside `latest/` and `best/` for people watching it: a checkpoint at
every evaluation (`train.keep_every_eval`), TensorBoard event files (`train.tensorboard`,
an optional package: a one-line error naming the extra when it is missing), `max_steps` on
the start and resume events (the Train screen's "step / max steps"), and a run folder that
holds only the launcher's `train.log` taking a new run. Real tiny runs on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import _synthetic_stories

from slm_tui.checkpoint.format import list_checkpoints
from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.errors import TrainingError
from slm_tui.presets import load_config
from slm_tui.trainer import report as report_module
from slm_tui.trainer import train


@pytest.fixture(autouse=True)
def _shards_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path / "shards-cache"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    stories = _synthetic_stories(200, seed=4)
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


def tiny(corpus: Path, *overrides: str):
    cfg = load_config(
        "tiny",
        [
            "tokenizer.kind=byte", "model.d_model=32", "model.n_layer=1", "model.n_head=2",
            "model.context_length=32", "train.batch_size=8", "train.grad_accum=1",
            "train.max_steps=6", "train.warmup_steps=1", "train.eval_every=3",
            "train.save_every=6", "train.eval_batches=1", "train.log_every=1",
            "train.sample_tokens=4", "train.threads=1", "train.device=cpu", *overrides,
        ],
    )  # fmt: skip
    cfg.data.data_files = [str(corpus)]
    return cfg


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_keep_every_eval_keeps_a_loadable_checkpoint_per_evaluation(corpus, tmp_path):
    run = tmp_path / "run"
    train(tiny(corpus, "train.keep_every_eval=true"), run)
    kept = sorted(p.name for p in (run / "evals").iterdir())
    assert kept == ["step-000003", "step-000006"]
    for name in kept:
        assert not (run / "evals" / name / "trainer_state.pt").exists()  # weights only
    assert load_checkpoint(run / "evals" / "step-000003").info.step == 3
    names = {i.name for i in list_checkpoints(tmp_path)}
    assert {"run/evals/step-000003", "run/evals/step-000006", "run/latest"} <= names
    start = next(r for r in records(run) if r["kind"] == "event")
    assert {k: start[k] for k in ("event", "step", "tokens", "max_steps")} == {
        "event": "start",
        "step": 0,
        "tokens": 0,
        "max_steps": 6,
    }


def test_keep_every_eval_is_off_by_default(corpus, tmp_path):
    train(tiny(corpus), tmp_path / "run")
    assert not (tmp_path / "run" / "evals").exists()


def test_a_folder_holding_only_the_launchers_log_takes_a_new_run(corpus, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("started by slm-tui\n")
    assert train(tiny(corpus), run).status == "finished"
    assert (run / "train.log").read_text() == "started by slm-tui\n"


def test_tensorboard_without_the_package_is_one_line_naming_the_extra(
    corpus, tmp_path, monkeypatch
):
    real = report_module.importlib.util.find_spec
    monkeypatch.setattr(
        report_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    with pytest.raises(TrainingError) as info:
        train(tiny(corpus, "train.tensorboard=true"), tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and "pip install 'slm-tui[tensorboard]'" in message
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_tensorboard_event_files_mirror_metrics_jsonl(corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny(corpus, "train.tensorboard=true"), run)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "eval/val_loss", "eval/val_bpb"} <= set(tags)
    losses = {e.step: e.value for e in events.Scalars("train/loss")}
    expected = {r["step"]: r["loss"] for r in records(run) if r["kind"] == "train"}
    assert losses == pytest.approx(expected, rel=1e-6)
