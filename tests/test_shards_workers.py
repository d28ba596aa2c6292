"""Token shards written by N worker processes: byte-identical to one process for every
tokenizer kind, the same cache entry, progress in corpus order, bad worker counts refused in
one line, and failures (a worker killed mid-run, a story the tokenizer refuses, the parent
killed) that end cleanly with nothing half-written left in the cache.

Real parts throughout: real tokenizers of every kind, real spawned worker processes, the
real `slm-train` commands through typer's CliRunner, real signals. Chunks are cut small
(`_BATCH_BYTES`) so a small corpus still spreads over many chunks and every worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import _synthetic_stories
from test_gpt2_kinds import encoder_path
from typer.testing import CliRunner

import slm_tui.shards as shards_mod
from slm_tui.cli.train import app
from slm_tui.errors import DataError
from slm_tui.shard_encoder import PARALLEL_MIN_BYTES, ChunkEncoder, cpu_count, resolve_workers
from slm_tui.shards import (
    SIDECAR_CONTENT_FIELDS,
    SIDECAR_TIMING_FIELDS,
    ShardProgress,
    corpus_source,
    default_shards_dir,
    prepare_shards,
)
from slm_tui.tokenizers import train_tokenizer

REPO = Path(__file__).resolve().parent.parent
EXTRA = [
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🎈🐉 and a zero-width\u200bjoiner.",
    "Tabs\tand   spaces,\n\n\nblank lines, a literal <|endoftext|> and <s></s> as text.",
]


def stories(n: int = 240, seed: int = 3) -> list[str]:
    out = _synthetic_stories(n, seed=seed)
    out[7:7] = EXTRA  # inside the first chunks, in the training split
    return out


def write_txt(path: Path, items: list[str]) -> Path:
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in items), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _small_chunks(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(shards_mod, "_BATCH_BYTES", 1500)  # ~6 stories a chunk


@pytest.fixture(scope="module", params=["sentencepiece-bpe", "byte", "bytelevel-bpe", "gpt2"])
def tok(request, tmp_path_factory):
    kind, options = request.param, {}
    if kind == "gpt2":
        if encoder_path() is None:
            pytest.skip("GPT-2's encoder.json not found (../shared/data/gpt2)")
        options["vocab_file"] = encoder_path()
    if kind == "sentencepiece-bpe":
        options["num_threads"] = 1
    out = tmp_path_factory.mktemp(kind) / "tok"
    return train_tokenizer(kind, _synthetic_stories(300), 320, out, **options)


def expected_tokens(tok, items: list[str]) -> list[int]:
    """The shard format, written out from `encode`: BOS + ids + EOS per story, except that
    a BOS which is the EOS (GPT-2's <|endoftext|>) stands once at the start."""
    out: list[int] = []
    for s in items:
        if tok.bos_id != tok.eos_id or not out:
            out.append(tok.bos_id)
        out += [*tok.encode(s), tok.eos_id]
    return out


def content(meta: dict) -> dict:
    assert set(meta) == set(SIDECAR_CONTENT_FIELDS) | set(SIDECAR_TIMING_FIELDS)
    return {k: meta[k] for k in SIDECAR_CONTENT_FIELDS}


def test_shards_identical_for_any_worker_count(tok, tmp_path) -> None:
    items = stories()
    src = corpus_source(data_files=[str(write_txt(tmp_path / "c.txt", items))])
    made = {
        w: prepare_shards(src, tok, tmp_path / f"w{w}", val_fraction=0.1, workers=w)
        for w in (1, 2, 3)
    }
    one = made[1]
    for w in (2, 3):
        for split in ("train", "val"):
            a, b = getattr(one, split), getattr(made[w], split)
            assert b.path.read_bytes() == a.path.read_bytes(), (tok.kind, w, split)
            assert content(b.meta) == content(a.meta)
    # ... and that one format is the documented one: every 10th story held out, the
    # separator rule of the kind.
    assert one.val.tokens.tolist() == expected_tokens(tok, items[::10])
    train = [s for i, s in enumerate(items) if i % 10]
    assert one.train.tokens.tolist() == expected_tokens(tok, train)
    assert one.train.num_bytes == sum(len(s.encode()) for s in train)


def test_separate_validation_file_and_overlap_check_with_workers(tmp_path) -> None:
    tok = train_tokenizer("byte", [], 256, tmp_path / "byte")
    train = [f"{s} (training {i})" for i, s in enumerate(stories(200, seed=1))]
    val = [f"{s} (validation {i})" for i, s in enumerate(_synthetic_stories(30, seed=2))]
    src = corpus_source(data_files=[str(write_txt(tmp_path / "t.txt", train))])
    vsrc = corpus_source(data_files=[str(write_txt(tmp_path / "v.txt", val))])
    a = prepare_shards(src, tok, tmp_path / "a", val_source=vsrc, refuse_overlap=True)
    b = prepare_shards(src, tok, tmp_path / "b", val_source=vsrc, refuse_overlap=True, workers=2)
    for split in ("train", "val"):
        assert getattr(a, split).path.read_bytes() == getattr(b, split).path.read_bytes()
    # A training story that is also a validation story is refused, workers or not, and
    # nothing is left in the cache.
    overlapping = corpus_source(data_files=[str(write_txt(tmp_path / "o.txt", train[:150]))])
    vsrc2 = corpus_source(data_files=[str(write_txt(tmp_path / "v2.txt", train[140:141]))])
    with pytest.raises(DataError, match="shares stories"):
        prepare_shards(overlapping, tok, val_source=vsrc2, refuse_overlap=True, workers=2)
    assert not any((tmp_path / "cache").rglob("*"))


def test_cache_key_does_not_depend_on_workers(tmp_path) -> None:
    tok = train_tokenizer("byte", [], 256, tmp_path / "byte")
    src = corpus_source(data_files=[str(write_txt(tmp_path / "c.txt", stories()))])
    first = prepare_shards(src, tok, workers=2)
    assert not first.cached and first.dir == default_shards_dir(src, tok)
    for w in (1, 0, 3):
        again = prepare_shards(src, tok, workers=w)
        assert again.cached and again.dir == first.dir


def test_progress_comes_in_corpus_order_with_the_worker_count(tmp_path) -> None:
    tok = train_tokenizer("byte", [], 256, tmp_path / "byte")
    items = stories()
    path = write_txt(tmp_path / "c.txt", items)
    seen: list[ShardProgress] = []
    made = prepare_shards(
        corpus_source(data_files=[str(path)]), tok, workers=2, progress=seen.append
    )
    assert len(seen) > 10 and all(p.workers == 2 for p in seen)
    for field in ("stories", "bytes", "tokens"):
        values = [getattr(p, field) for p in seen]
        assert values == sorted(values) and len(set(values)) == len(values), field
    last = seen[-1]
    assert last.stories == len(items)
    assert last.bytes == made.train.num_bytes + made.val.num_bytes  # UTF-8 bytes, exact
    assert last.tokens == made.train.num_tokens + made.val.num_tokens
    assert last.total_bytes == path.stat().st_size


def test_auto_workers() -> None:
    assert resolve_workers(0, PARALLEL_MIN_BYTES - 1) == 1  # workers would cost more
    assert resolve_workers(0, PARALLEL_MIN_BYTES) == cpu_count()
    assert resolve_workers(0, None) == cpu_count()  # a hub dataset: size unknown
    assert resolve_workers(3, 10) == 3  # asked for: given


@pytest.mark.parametrize("bad", [-1, 257, True, 1.5])
def test_bad_worker_counts_refused_by_the_library(bad, tmp_path) -> None:
    tok = train_tokenizer("byte", [], 256, tmp_path / "byte")
    src = corpus_source(data_files=[str(write_txt(tmp_path / "c.txt", stories(20)))])
    with pytest.raises(DataError, match="workers must be"):
        prepare_shards(src, tok, workers=bad)
    assert not (tmp_path / "cache").exists()


# ---- the commands -------------------------------------------------------------------------


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(res, pattern: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in res.output


@pytest.fixture()
def byte_dir(tmp_path) -> Path:
    return train_tokenizer("byte", [], 256, tmp_path / "byte").path


@pytest.mark.parametrize(
    "value, pattern",
    [
        ("-1", "workers must be 0 (one per CPU core) or a positive number"),
        ("1000", "workers must be at most 256"),
        ("two", "--workers"),
    ],
)
def test_data_bad_workers_one_line(value, pattern, byte_dir, tmp_path) -> None:
    corpus = write_txt(tmp_path / "c.txt", stories(20))
    res = invoke("data", "--tokenizer", byte_dir, "--data-files", corpus, "--workers", value)
    assert_one_line_error(res, pattern)
    assert not (tmp_path / "cache").exists()


def test_data_workers_flag_writes_the_same_shards(byte_dir, tmp_path) -> None:
    corpus = write_txt(tmp_path / "c.txt", stories())
    outs = {}
    for w in ("1", "2"):
        out = tmp_path / f"out{w}"
        res = invoke("data", "--tokenizer", byte_dir, "--data-files", corpus, "--output", out,
                     "--workers", w)  # fmt: skip
        assert res.exit_code == 0, res.output
        outs[w] = out
    assert "(2 processes)" in res.stderr  # the summary's speed line says how many
    for name in ("train.bin", "val.bin"):
        assert (outs["1"] / name).read_bytes() == (outs["2"] / name).read_bytes()
    metas = [json.loads((outs[w] / "train.json").read_text()) for w in ("1", "2")]
    assert content(metas[0]) == content(metas[1])


def _workers(before: set[int] = frozenset()) -> list[psutil.Process]:
    """This process's spawned children, but those in `before` (other tests' leftovers)."""
    found = []
    for child in psutil.Process().children():
        try:
            if child.pid not in before and "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _dead(proc: psutil.Process, timeout: float = 10.0) -> None:
    """Wait until `proc` has died, without reaping it: the pool must see it as its parent
    would after any kill (psutil's wait() would reap it, and multiprocessing would then
    take the pid for a child still starting)."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(psutil.NoSuchProcess):
        while proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)


def test_worker_killed_mid_run_one_line_nothing_left(byte_dir, tmp_path, monkeypatch) -> None:
    # A real SIGKILL to a real worker, at a fixed point: once the first chunk is written
    # (~100 chunks remain), so the run cannot have finished before the kill lands.
    corpus = write_txt(tmp_path / "c.txt", stories(600))
    before = {p.pid for p in _workers()}
    killed: list[int] = []
    encode = ChunkEncoder.map

    def kill_after_the_first_chunk(self, chunks):
        for parts in encode(self, chunks):
            if not killed:
                victim = _workers(before)[0]
                victim.kill()
                killed.append(victim.pid)
                _dead(victim)
            yield parts

    monkeypatch.setattr(ChunkEncoder, "map", kill_after_the_first_chunk)
    res = invoke("data", "--tokenizer", byte_dir, "--data-files", corpus, "--workers", "2")
    assert killed
    assert_one_line_error(res, "a shard worker process stopped unexpectedly")
    assert not any((tmp_path / "cache").rglob("*"))  # not even an empty folder
    assert not _workers(before)  # the other worker is gone too


@pytest.mark.parametrize("workers", ["1", "2"])
def test_story_the_tokenizer_refuses_one_line_nothing_left(workers, byte_dir, tmp_path):
    # JSON can carry what UTF-8 cannot: a lone surrogate (\ud800), which no byte-level
    # tokenizer can encode.
    items = stories(60)
    lines = [json.dumps({"text": s}) for s in items]
    lines[40] = '{"text": "A story with a lone surrogate \\ud800 in it."}'
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = invoke("data", "--tokenizer", byte_dir, "--data-files", corpus, "--workers", workers)
    assert_one_line_error(res, 'the byte tokenizer cannot encode story 41 ("A story with a lone')
    assert "UnicodeEncodeError" in res.stderr
    assert not any((tmp_path / "cache").rglob("*"))


def test_model_shard_step_uses_data_workers(byte_dir, tmp_path, monkeypatch) -> None:
    # A step this short shows no progress unless asked to (then: lines, and the totals).
    monkeypatch.setattr("slm_tui.cli.train_model._PREPARE_LINE_EVERY", 0.0)
    corpus = write_txt(tmp_path / "c.txt", stories(400))
    tiny = ["--set", "model.d_model=32", "--set", "model.n_layer=1", "--set", "model.n_head=2",
            "--set", "model.context_length=32", "--set", "train.batch_size=4",
            "--set", "train.max_steps=1", "--set", "train.warmup_steps=0",
            "--set", "train.eval_every=1", "--set", "train.eval_batches=1",
            "--set", "train.sample_tokens=0", "--set", "train.threads=1",
            "--set", "train.device=cpu", "--set", "train.compile=false"]  # fmt: skip
    bad = invoke("model", *tiny, "--set", "data.workers=-2", "--tokenizer", byte_dir,
                 "--data-files", corpus, "--output", tmp_path / "bad")  # fmt: skip
    assert_one_line_error(bad, "data.workers must be 0 (one per CPU core)")
    big = invoke("model", *tiny, "--set", "data.workers=300", "--data-files", corpus,
                 "--output", tmp_path / "big")  # fmt: skip
    assert_one_line_error(big, "up to 256, got 300")  # before a tokenizer is trained
    assert not (tmp_path / "big").exists()
    res = invoke("model", *tiny, "--set", "data.workers=2", "--tokenizer", byte_dir,
                 "--data-files", corpus, "--output", tmp_path / "run")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "token shards" in res.stderr and "2 processes" in res.stderr
    (made,) = (tmp_path / "cache").iterdir()
    from slm_tui.tokenizers import load_tokenizer

    ref = prepare_shards(
        corpus_source(data_files=[str(corpus)]), load_tokenizer(byte_dir), tmp_path / "one"
    )
    for name in ("train.bin", "val.bin"):
        assert (made / name).read_bytes() == (ref.dir / name).read_bytes()


# ---- the parent killed: its workers do not stay behind --------------------------------------

_SCRIPT = """
import sys, time
import slm_tui.shards as shards
from slm_tui.shards import corpus_source, prepare_shards
from slm_tui.tokenizers import load_tokenizer

def slow(p):
    print("chunk", flush=True)
    time.sleep(0.2)

if __name__ == "__main__":
    shards._BATCH_BYTES = 500
    prepare_shards(corpus_source(data_files=[sys.argv[1]]), load_tokenizer(sys.argv[2]),
                   sys.argv[3], workers=2, progress=slow)
"""


def test_workers_leave_when_the_parent_is_killed(byte_dir, tmp_path) -> None:
    corpus = write_txt(tmp_path / "c.txt", stories(300))
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(corpus), str(byte_dir), str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    workers: list[psutil.Process] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"chunk"
        workers = [
            c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())
        ]
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "workers outlived their parent"
    finally:
        for p in [proc, *workers]:  # whatever the outcome, this test leaves no process
            with contextlib.suppress(psutil.Error, OSError):
                p.kill()
        proc.wait()
    # What a killed writer leaves is temporary files only: never a shard that looks whole.
    assert not (tmp_path / "out" / "train.json").exists()
