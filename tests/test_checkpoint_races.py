"""Loads, `eval --record` and saves of one checkpoint folder take turns (`checkpoint.lock`):

- two `slm-train eval --record` processes on one checkpoint keep both entries (real
  processes, made to meet between their read and their write of meta.json);
- a record caught by a save of the same `latest/` never leaves `latest/` holding the other
  save's meta.json (real threads, the save started between the record's read and write);
- a record of weights a save has since replaced is refused in one line, meta.json untouched;
- without flock (some network filesystems) a load that meets a swap still reads again and
  returns one save whole.

The meeting points are made with hooks that wait for the other side (bounded), never with
sleeps that hope for an interleaving.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import _synthetic_stories

import slm_tui.checkpoint.format as files
import slm_tui.checkpoint.io as checkpoints
from slm_tui.checkpoint.format import read_checkpoint_meta, record_evaluation
from slm_tui.checkpoint.io import load_checkpoint, save_checkpoint
from slm_tui.checkpoint.records import RecordedEval, recorded_evals
from slm_tui.errors import CheckpointError
from slm_tui.trainer.evaluation import evaluate, record

BIN = Path(sys.executable).parent


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path) -> Path:
    path = tmp_path / "run" / "latest"
    shutil.copytree(tiny_checkpoint, path)
    return path


def entry(name: str) -> RecordedEval:
    return RecordedEval(name=name, corpus=name, fingerprint=name * 4, bpb=1.0, loss=1.0,
                        tokens=10, dtype="float32", date="2026-12-04")  # fmt: skip


def nudged(model: torch.nn.Module, by: float) -> torch.nn.Module:
    with torch.no_grad():
        model.tok_emb.weight[0, 0] += by  # other weights: another sha256
    return model


# The CLI in a fresh interpreter, where the record's write of meta.json waits (at most 30 s)
# for the other process to reach its own write, unless the other has been inside its record
# for 1.5 s without getting there (it is waiting for this one's lock).
RECORD_MEETS_THE_OTHER = """
import sys, time
from pathlib import Path
me, other = sys.argv[1], sys.argv[2]
marks = Path(sys.argv[3])
import slm_tui.checkpoint.format as files
import slm_tui.trainer.evaluation as evaluation

original_record, original_write = evaluation.record_evaluation, files.atomic_write_text

def record_evaluation(*args, **kwargs):
    (marks / f"entered-{me}").touch()
    return original_record(*args, **kwargs)

def atomic_write_text(path, text, **kwargs):
    (marks / f"write-{me}").touch()
    deadline, seen = time.monotonic() + 30, None
    while time.monotonic() < deadline and not (marks / f"write-{other}").exists():
        if (marks / f"entered-{other}").exists():
            seen = seen or time.monotonic()
            if time.monotonic() - seen > 1.5:
                break
        time.sleep(0.02)
    return original_write(path, text, **kwargs)

evaluation.record_evaluation = record_evaluation
files.atomic_write_text = atomic_write_text
from slm_tui.cli.train import main
sys.argv = ["slm-train"] + sys.argv[4:]
main()
"""


def test_two_concurrent_eval_records_keep_both_entries(ckpt, tmp_path):
    corpora = []
    for i, name in enumerate(("a.txt", "b.txt")):
        path = tmp_path / name
        stories = _synthetic_stories(20, seed=10 + i)
        path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
        corpora.append(path)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["eval", "--checkpoint", str(ckpt), "--record", "--device", "cpu", "--dtype", "float32"]

    def start(me: str, other: str, corpus: Path) -> subprocess.Popen:
        command = [sys.executable, "-c", RECORD_MEETS_THE_OTHER, me, other, str(marks), *args]
        return subprocess.Popen([*command, "--data-files", str(corpus)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    procs = [start("a", "b", corpora[0]), start("b", "a", corpora[1])]
    outcomes = [(p.wait(timeout=240), p.communicate()[1]) for p in procs]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert {p.name for p in marks.iterdir()} == {"entered-a", "entered-b", "write-a", "write-b"}
    kept = {e.name for e in recorded_evals(read_checkpoint_meta(ckpt))}
    assert kept == {"a.txt", "b.txt"}
    load_checkpoint(ckpt)  # meta.json still describes the weights


def test_a_record_caught_by_a_save_never_leaves_latest_with_the_other_saves_meta(ckpt, monkeypatch):
    loaded = load_checkpoint(ckpt)
    newer = nudged(loaded.model, 1e-3)
    saver: list[threading.Thread] = []
    original = files.read_checkpoint_meta

    def read_then_let_a_save_run(path):
        meta = original(path)
        if not saver:  # the record has read meta.json; a save of latest/ starts now
            thread = threading.Thread(
                target=save_checkpoint,
                args=(ckpt, newer, loaded.config, loaded.tokenizer, {"step": 2}),
            )
            saver.append(thread)
            thread.start()
            thread.join(timeout=2)  # old code: the save swaps latest/ here; now it waits
        return meta

    monkeypatch.setattr(files, "read_checkpoint_meta", read_then_let_a_save_run)
    record_evaluation(ckpt, entry("x.txt"))
    saver[0].join(timeout=60)
    assert not saver[0].is_alive()
    monkeypatch.undo()
    now = load_checkpoint(ckpt)  # whole: the new save's meta.json with the new save's weights
    assert now.info.step == 2
    torch.testing.assert_close(now.model.tok_emb.weight, newer.tok_emb.weight)
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith((".tmp-", ".trash-"))]


def test_a_record_of_weights_a_save_has_replaced_is_refused(ckpt, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(s + "\n<|endoftext|>\n" for s in _synthetic_stories(10)))
    result = evaluate(ckpt, data_files=[str(corpus)], device="cpu", dtype="float32")
    assert result.weights_sha256 == read_checkpoint_meta(ckpt)["weights_sha256"]
    loaded = load_checkpoint(ckpt)
    save_checkpoint(ckpt, nudged(loaded.model, 1e-3), loaded.config, loaded.tokenizer,
                    {"step": 9})  # fmt: skip
    before = (ckpt / "meta.json").read_bytes()
    with pytest.raises(CheckpointError, match="replaced by a newer save") as err:
        record(result)
    assert "\n" not in str(err.value) and "step 9" in str(err.value)
    assert (ckpt / "meta.json").read_bytes() == before
    assert (
        record(evaluate(ckpt, data_files=[str(corpus)], device="cpu", dtype="float32"))
        == ckpt / "meta.json"
    )


def test_without_flock_a_load_that_meets_a_swap_reads_again_and_loads_one_save(ckpt, monkeypatch):
    loaded = load_checkpoint(ckpt)
    newer = nudged(loaded.model, 1e-3)
    monkeypatch.setattr("slm_tui.checkpoint.lock._flock", lambda *a: None)  # no flock here
    original = checkpoints._read_weights
    swapped: list[int] = []

    def swap_before_the_weights(path, meta):
        if not swapped:  # config, meta and tokenizer read: now a save replaces the folder
            save_checkpoint(ckpt, newer, loaded.config, loaded.tokenizer, {"step": 5})
            swapped.append(1)
        return original(path, meta)

    monkeypatch.setattr(checkpoints, "_read_weights", swap_before_the_weights)
    again = load_checkpoint(ckpt)
    assert swapped and again.info.step == 5
    torch.testing.assert_close(again.model.tok_emb.weight, newer.tok_emb.weight)
