"""metrics.jsonl's typed read side (slm_tui/trainer/report.py: `parse_record`): every record
the trainer writes reads back as itself; a real run's file reads back whole, with the fields
the Train screen shows (so renaming a field of a record fails here, not silently in the
chart); a damaged or foreign object is no record, or an optional field of one is None."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from slm_tui.fileio import json_safe
from slm_tui.trainer.report import (
    DivergedRecord,
    EvalRecord,
    EventRecord,
    Sample,
    SamplesRecord,
    TrainRecord,
    metrics_line,
    parse_record,
)
from slm_tui.tui.training.watch import RunHistory

RUN = Path(__file__).parent / "data" / "tiny-run" / "metrics.jsonl"  # a real 1,200-step run


def through_the_file(record) -> dict:
    """The object a reader gets back: the line MetricsLog.append writes, parsed as JSON."""
    return json.loads(json.dumps(json_safe(metrics_line(record))))


EVERY_KIND = [
    TrainRecord(step=10, tokens=10240, loss=6.9, lr=6e-4, tokens_per_s=699.5, elapsed_s=14.6,
                mfu=None, eta_s=None),
    TrainRecord(step=20, tokens=20480, loss=6.6, lr=1.2e-3, tokens_per_s=84353.5,
                elapsed_s=14.8, mfu=0.41, eta_s=870.8),
    EvalRecord(step=20, tokens=20480, val_loss=6.5, val_bpb=2.9, val_tokens=40960),
    SamplesRecord(step=20, tokens=20480,
                  samples=[Sample("Once upon a time", " there was"), Sample("Lily", "")]),
    EventRecord(event="start", step=0, tokens=0, max_steps=1200, dtype="bfloat16",
                compile=True, math_attention=False),
    EventRecord(event="resume", step=600, tokens=614400, max_steps=1200, dtype="float32",
                compile=False, math_attention=True),
    EventRecord(event="interrupted", step=640, tokens=655360),
]  # fmt: skip


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda r: f"{type(r).__name__}")
def test_every_record_reads_back_as_itself(record):
    assert parse_record(through_the_file(record)) == record


def test_a_nan_loss_reads_back_as_unknown_and_a_diverged_event_as_nan():
    nan_loss = TrainRecord(step=3, tokens=3072, loss=math.nan, lr=1e-3, tokens_per_s=900.0,
                           elapsed_s=1.0, mfu=None, eta_s=None)  # fmt: skip
    line = through_the_file(nan_loss)
    assert line["loss"] is None  # json_safe: NaN is written as null
    assert parse_record(line) == TrainRecord(**{**vars(nan_loss), "loss": None})
    diverged = parse_record(through_the_file(DivergedRecord(step=7, loss=math.inf)))
    assert isinstance(diverged, DivergedRecord) and diverged.step == 7
    assert math.isnan(diverged.loss)


def test_a_real_runs_file_reads_back_whole_with_what_the_train_screen_shows():
    lines = [json.loads(line) for line in RUN.read_text().splitlines()]
    records = [parse_record(line) for line in lines]
    assert None not in records  # every line the trainer wrote is a record
    assert [metrics_line(r) for r in records] == lines  # ... and reads back as it was written
    kinds = {type(r).__name__ for r in records}
    assert kinds == {"EventRecord", "TrainRecord", "EvalRecord", "SamplesRecord"}
    history = RunHistory()
    history.add(lines)
    last, best = history.last_train, history.best
    assert last is not None and best is not None
    # The figures of the Train screen (tests/__snapshots__: the finished run at 100x32).
    assert (history.step, history.max_steps, history.tokens) == (1200, 1200, 1228800)
    assert (round(last.tokens_per_s), f"{last.lr:.2e}", f"{last.loss:.4f}") == (
        84639, "3.00e-04", "2.9352",
    )  # fmt: skip
    assert (f"{best.val_loss:.4f}", best.step, f"{best.val_bpb:.3f}") == ("3.0527", 1200, "1.415")
    assert len(history.evals) == len(history.samples) == 6 and history.train.count == 120
    assert history.samples[-1].samples[0].prompt == "Once upon a time"
    assert history.ending() == "finished at step 1200"
    assert history.eta_s() == 0.0  # the moving rate has settled, and the run is at its end


@pytest.mark.parametrize(
    "line",
    [
        {"kind": "train", "step": 1, "tokens": 8, "loss": 2.0, "lr": math.inf,
         "tokens_per_s": 9.0, "elapsed_s": 1.0},  # a non-finite required figure
        {"kind": "train", "step": True, "tokens": 8, "loss": 2.0, "lr": 1e-3,
         "tokens_per_s": 9.0, "elapsed_s": 1.0},  # a bool for a whole number
        {"kind": "train", "step": 10**4000, "tokens": 8, "loss": 2.0, "lr": 1e-3,
         "tokens_per_s": 9.0, "elapsed_s": 1.0},  # a step of 4,000 digits
        {"kind": "train", "step": 1, "tokens": 8, "loss": 2.0, "lr": 1e-3,
         "tokens_per_s": "fast", "elapsed_s": 1.0},  # text where a number belongs
        {"kind": "train", "step": 1, "tokens": 8, "loss": 2.0, "lr": 1e-3,
         "tokens_per_s": 9.0},  # a required field missing
        {"kind": "eval", "step": 2, "tokens": 1e308, "val_loss": 2.0, "val_bpb": 1.0,
         "val_tokens": 64},  # 1e308 tokens, and a float for a whole number
        {"kind": "eval", "step": 2, "tokens": 16, "val_loss": 1e308, "val_bpb": 1.0,
         "val_tokens": 64},  # beyond any figure a run reports
        {"kind": "samples", "step": 3, "tokens": 24, "samples": [{"prompt": "P", "text": 5}]},
        {"kind": "samples", "step": 3, "tokens": 24, "samples": "none"},
        {"kind": "event", "event": ["x"], "step": 0, "tokens": 0},
        {"kind": "event", "event": "diverged", "step": "five", "loss": None},
        {"kind": 5, "step": 1},
        {"kind": "checkpoint", "step": 1, "tokens": 8},  # a kind the trainer never writes
        {"step": 1, "tokens": 8},
    ],
)  # fmt: skip
def test_a_damaged_or_foreign_object_is_no_record(line):
    assert parse_record(line) is None


def test_an_optional_field_that_is_bad_reads_as_none():
    line = through_the_file(EVERY_KIND[1])
    line.update(mfu=math.nan, eta_s="soon")  # optional figures: unknown, the record stays
    assert parse_record(line) == TrainRecord(**{**vars(EVERY_KIND[1]), "mfu": None, "eta_s": None})
    start = {"kind": "event", "event": "start", "step": 0, "tokens": 0, "max_steps": "ten"}
    assert parse_record(start) == EventRecord(event="start", step=0, tokens=0)
