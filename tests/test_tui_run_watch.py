"""Reading a run from outside (slm_tui/tui/training/watch.py, process.py): only appended
bytes are read, a partial last line waits for its newline, a replaced (resumed) or removed
file starts over, torn lines are skipped, the curve stays bounded however long the run,
and the launcher's command line is what `slm-train model` takes."""

from __future__ import annotations

import json
import os
import sys

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


def test_history_folds_records_and_tells_how_the_run_ended():
    h = RunHistory()
    h.add([{"kind": "event", "event": "start", "step": 0, "tokens": 0, "max_steps": 4}])
    h.add([{"kind": "train", "step": s, "tokens": 8 * s, "loss": 5.0 - s} for s in (1, 2)])
    h.add([{"kind": "eval", "step": 2, "tokens": 16, "val_loss": 3.0, "val_bpb": 1.2}])
    assert (h.step, h.tokens, h.best["val_loss"], h.ending()) == (2, 16, 3.0, None)
    h.add([{"kind": "event", "event": "interrupted", "step": 2, "tokens": 16}])
    assert h.ending() == "stopped at step 2: Resume continues it"
    h.add([{"kind": "event", "event": "resume", "step": 2, "tokens": 16, "max_steps": 4}])
    h.add([{"kind": "train", "step": 4, "tokens": 32, "loss": None}])  # NaN is written as null
    h.add([{"kind": "eval", "step": 4, "tokens": 32, "val_loss": 2.5, "val_bpb": 1.0}])
    assert h.ending() == "finished at step 4" and h.train.count == 2
    h.add([{"kind": "event", "event": "diverged", "step": 5, "loss": None}])
    assert "non-finite at step 5" in (h.ending() or "")


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
