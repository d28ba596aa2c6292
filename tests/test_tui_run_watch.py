"""Reading a run from outside (slm_tui/tui/training/watch.py, process.py): only appended
bytes are read, a partial last line waits for its newline, a replaced (resumed) or removed
file starts over, torn lines are skipped, the records fold into what the screen shows (the
ETA from the trainer's own moving rate), the curve stays bounded however long the run, and
the launcher's command line is what `slm-train model` takes."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

from slm_tui.fileio import json_safe
from slm_tui.trainer.pace import SETTLE
from slm_tui.trainer.report import (
    DivergedRecord,
    EvalRecord,
    EventRecord,
    TrainRecord,
    metrics_line,
)
from slm_tui.tui.training.process import TrainRequest, last_line
from slm_tui.tui.training.watch import Curve, MetricsTail, RunHistory


def line(**record) -> bytes:
    return json.dumps(record).encode() + b"\n"


def test_tail_reads_appended_lines_and_keeps_a_partial_one(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll() == ([], False)  # no folder yet
    path.parent.mkdir()
    a, b = line(kind="train", step=1), line(kind="train", step=2)
    path.write_bytes(a + b[:7])
    assert tail.poll() == ([{"kind": "train", "step": 1}], False)
    assert tail.poll() == ([], False)
    with open(path, "ab") as f:
        f.write(b[7:] + b"not json\n" + b"[1, 2]\n")
    assert tail.poll() == ([{"kind": "train", "step": 2}], False)
    assert tail.offset == path.stat().st_size


def test_tail_starts_over_when_the_file_is_replaced_or_removed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(line(step=1) + line(step=2))
    tail = MetricsTail(path)
    assert len(tail.poll()[0]) == 2
    tmp = tmp_path / "new"
    tmp.write_bytes(line(step=1))  # a resume rewrites the file from the checkpoint's copy
    os.replace(tmp, path)
    assert tail.poll() == ([{"step": 1}], True)
    path.unlink()
    assert tail.poll() == ([], True)


def written(*records) -> list[dict]:
    """metrics.jsonl objects as the trainer writes them (MetricsLog.append) and a reader gets
    them back."""
    return [json.loads(json.dumps(json_safe(metrics_line(r)))) for r in records]


def train(step: int, loss: float) -> TrainRecord:
    return TrainRecord(step=step, tokens=8 * step, loss=loss, lr=1e-3, tokens_per_s=80.0,
                       elapsed_s=step / 10, mfu=None, eta_s=None)  # fmt: skip


def test_history_folds_records_and_tells_how_the_run_ended():
    h = RunHistory()
    h.add(written(EventRecord(event="start", step=0, tokens=0, max_steps=4)))
    h.add(written(train(1, 4.0), train(2, 3.0)))
    h.add(written(EvalRecord(step=2, tokens=16, val_loss=3.0, val_bpb=1.2, val_tokens=64)))
    assert (h.step, h.tokens, h.best.val_loss, h.ending()) == (2, 16, 3.0, None)
    h.add(written(EventRecord(event="interrupted", step=2, tokens=16)))
    assert h.ending() == "stopped at step 2: Resume continues it"
    h.add(written(EventRecord(event="resume", step=2, tokens=16, max_steps=4)))
    h.add(written(train(4, math.nan)))  # NaN is written as null
    h.add(written(EvalRecord(step=4, tokens=32, val_loss=2.5, val_bpb=1.0, val_tokens=64)))
    assert h.ending() == "finished at step 4" and h.train.count == 2
    h.add(written(DivergedRecord(step=5, loss=math.inf)))
    assert "non-finite at step 5" in (h.ending() or "")


def test_the_eta_is_unknown_until_the_moving_rate_settles_after_the_warm_up():
    """The ETA is trainer/pace.py's, as the trainer computes it: the interval before the
    first record after a (re)start is warm-up and never part of the rate."""
    h = RunHistory()
    h.add(written(EventRecord(event="start", step=0, tokens=0, max_steps=100)))
    h.add(written(train(10, 4.0)))  # 1 s: compile, caches (warm-up)
    for step in range(20, 20 + 10 * SETTLE, 10):
        assert h.eta_s() is None  # "…" on the screen
        record = train(step, 3.0)
        record.elapsed_s = 1.0 + (step - 10) / 100  # then 100 steps a second
        h.add(written(record))
    assert h.eta_s() == pytest.approx((100 - h.step) / 100)
    h.add(written(EventRecord(event="resume", step=h.step, tokens=h.tokens, max_steps=100)))
    assert h.eta_s() is None  # a resumed run warms up again


def test_curve_stays_bounded_and_keeps_the_mean():
    curve = Curve(target=100)
    for i in range(100_000):
        curve.add(float(i), 1.0 + (i % 2))
    xs, ys = curve.points()
    assert 100 <= len(xs) <= 200 and curve.count == 100_000
    assert abs(sum(ys) / len(ys) - 1.5) < 0.01 and xs == sorted(xs)


def test_the_command_is_slm_train_model_with_the_forms_values(tmp_path):
    r = TrainRequest(
        tmp_path / "r", "tiny", ["a.txt", "b/*.jsonl"], ["v.txt"], ["train.lr=1e-3"], "cpu"
    )
    assert r.argv() == [
        sys.executable, "-m", "slm_tui.cli.train", "model", "--output", str(tmp_path / "r"),
        "--config", "tiny", "--data-files", "a.txt", "b/*.jsonl", "--val-files", "v.txt",
        "--set", "train.lr=1e-3", "--set", "train.device=cpu",
    ]  # fmt: skip
    resumed = TrainRequest(tmp_path / "r", None).argv(resume=True)  # the run's own config
    assert resumed[4:] == ["--output", str(tmp_path / "r"), "--resume"]


def test_last_line_is_the_last_non_empty_one(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("config\nerror: train.lr must be positive, got -1.0\n\n")
    assert last_line(log) == "error: train.lr must be positive, got -1.0"
    assert last_line(tmp_path / "missing") == ""
