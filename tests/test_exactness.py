"""A seed fixes a run on every machine: the dtype probe leaves the random state alone (a cold
and a warm probe cache give the same losses), a run decides its dtype, compile and attention
kernel once and records them (trainer_state.pt, meta.json, the start event), `--resume`
keeps them whatever the probe says now, and `slm-train eval` computes in the dtype the run
recorded, so it equals the in-run validation figure.

The probe's answer is forced, never timed: `speed.cpu_info` is made to report a CPU whose
flags are not conclusive (AVX512-BF16 without AMX, as on AMD Zen 4), so every machine takes
the probe path, and `speed.probe` is replaced where a test needs one answer or the other.
Everything runs on the CPU with a one-layer, 32-wide model, dropout on (so the random state
matters), on the byte tokenizer and a synthetic corpus the test writes itself.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from conftest import _synthetic_stories

from slm_tui.config import ModelConfig
from slm_tui.errors import CheckpointError
from slm_tui.presets import load_config
from slm_tui.trainer import Reporter, evaluate, speed, train

ZEN4 = ("AMD EPYC (test)", frozenset({"avx512f", "avx512_bf16"}))  # probed, never decided by flags


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path / "shards-cache"))
    monkeypatch.setenv("SLM_TUI_CACHE_DIR", str(tmp_path / "cache"))  # a cold probe cache
    monkeypatch.setattr(speed, "cpu_info", lambda: ZEN4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    stories = _synthetic_stories(400, seed=3)
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


def config(corpus: Path, *overrides: str):
    base = [
        "tokenizer.kind=byte",
        "model.d_model=32",
        "model.n_layer=1",
        "model.n_head=2",
        "model.context_length=32",
        "model.dropout=0.1",  # dropout draws from the global RNG: the random state matters
        "train.batch_size=8",
        "train.grad_accum=2",
        "train.max_steps=12",
        "train.warmup_steps=3",
        "train.lr=3e-3",
        "train.eval_every=5",
        "train.save_every=5",
        "train.eval_batches=2",
        "train.log_every=1",
        "train.sample_tokens=4",
        "train.threads=1",
        "train.device=cpu",
    ]
    cfg = load_config("tiny", base + list(overrides))
    cfg.data.data_files = [str(corpus)]
    return cfg


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run) if r["kind"] == "train"}


def events(run: Path) -> list[dict]:
    return [r for r in records(run) if r["kind"] == "event"]


class Watch(Reporter):
    """Keeps the start info (the speed line); asks the run to stop after `stop_at`."""

    def __init__(self, stop_at: int | None = None, event: threading.Event | None = None):
        self.stop_at, self.event, self.starts = stop_at, event, []

    def on_start(self, info):
        self.starts.append(info)

    def on_log(self, record):
        if record.step == self.stop_at and self.event is not None:
            self.event.set()


def answer(monkeypatch, faster: str) -> None:
    """Make the probe measure `faster` ("bfloat16" or "float32") as the faster dtype."""
    times = {"float32": 1.0, "bfloat16": 0.5} if faster == "bfloat16" else {
        "float32": 0.5, "bfloat16": 1.0
    }  # fmt: skip
    monkeypatch.setattr(speed, "probe", lambda *a: (times["float32"], times["bfloat16"], False))


# ---- item 1: the probe and the random state ------------------------------------------------
def test_a_cold_probe_leaves_every_random_state_as_it_found_it(tmp_path):
    shape = ModelConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, d_model=16,
                        dropout=0.1)  # fmt: skip
    torch.manual_seed(5)
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    fp32, bf16, cached = speed.probe(*ZEN4, shape, 2)
    assert not cached and fp32 > 0 and bf16 > 0  # it measured, dropout masks included
    assert torch.equal(torch.get_rng_state(), cpu)
    if cuda is not None:
        after = torch.cuda.get_rng_state_all()
        assert all(torch.equal(a, b) for a, b in zip(after, cuda, strict=True))
    assert json.loads((tmp_path / "cache" / speed.PROBE_FILE).read_text())


def test_two_fresh_runs_log_identical_losses_with_a_cold_and_a_warm_probe_cache(corpus, tmp_path):
    cold, warm = Watch(), Watch()
    train(config(corpus), tmp_path / "a", reporter=cold)  # the probe measures here
    train(config(corpus), tmp_path / "b", reporter=warm)  # and reads its cache here
    assert "measured" in cold.starts[0].speed and "(cached)" not in cold.starts[0].speed
    assert "(cached)" in warm.starts[0].speed
    assert cold.starts[0].dtype == warm.starts[0].dtype
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == list(range(1, 13)) and a == b  # identical, not merely close


# ---- item 2: a run decides once, a resume keeps it ---------------------------------------
def test_a_resumed_run_keeps_its_dtype_when_the_probe_now_answers_the_other_way(
    corpus, tmp_path, monkeypatch
):
    answer(monkeypatch, "bfloat16")
    train(config(corpus), tmp_path / "full")
    stop = threading.Event()
    part = train(config(corpus), tmp_path / "part", reporter=Watch(6, stop), stop=stop)
    assert part.status == "interrupted" and part.step == 6

    # Recorded in the run: trainer_state.pt, meta.json and the start event.
    state = torch.load(tmp_path / "part/latest/trainer_state.pt", weights_only=True)
    meta = json.loads((tmp_path / "part/latest/meta.json").read_text())
    for record in (state["speed"], meta["speed"]):
        assert (record["device"], record["dtype"]) == ("cpu", "bfloat16")
        assert (record["compile"], record["math_attention"]) == (False, True)
    (start,) = events(tmp_path / "part")[:1]
    assert (start["event"], start["dtype"], start["compile"]) == ("start", "bfloat16", False)

    answer(monkeypatch, "float32")  # the machine would now choose float32
    torch.manual_seed(12345)
    watch = Watch()
    resumed = train(config(corpus), tmp_path / "part", resume=True, reporter=watch)
    assert resumed.status == "finished" and resumed.step == 12
    assert watch.starts[0].dtype == "bfloat16" and "as the run started" in watch.starts[0].speed
    resume_event = events(tmp_path / "part")[-1]
    assert (resume_event["event"], resume_event["dtype"]) == ("resume", "bfloat16")
    full, both = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(both) == list(range(1, 13))
    for step in full:
        assert both[step] == pytest.approx(full[step], abs=1e-6), step

    # What the float32 answer computes instead: not the same run (so the above proves it).
    train(config(corpus), tmp_path / "float32")
    other = losses(tmp_path / "float32")
    assert any(abs(other[s] - full[s]) > 1e-6 for s in full)


def test_a_resumed_run_keeps_compile_as_it_started(corpus, tmp_path, monkeypatch):
    # Started where torch.compile could not run (no C++ compiler): eager. The resume finds
    # one, and the run is long enough to compile: it must stay eager all the same.
    answer(monkeypatch, "float32")
    over = ("train.max_steps=400", "train.save_every=2", "train.eval_every=1000")
    monkeypatch.setattr(speed, "cxx_compiler", lambda: None)
    stop = threading.Event()
    train(config(corpus, *over), tmp_path / "run", reporter=Watch(2, stop), stop=stop)
    assert events(tmp_path / "run")[0]["compile"] is False

    monkeypatch.setattr(speed, "cxx_compiler", lambda: "g++")
    assert speed.choose(config(corpus, *over).train, torch.device("cpu"),
                        config(corpus).model, 4, 400).compile  # fmt: skip  # anew: compiled

    def no_compile(*args, **kwargs):
        raise AssertionError("the resumed run compiled; it started eager")

    monkeypatch.setattr(torch, "compile", no_compile)
    stop = threading.Event()
    watch = Watch(4, stop)
    res = train(config(corpus, *over), tmp_path / "run", resume=True, reporter=watch, stop=stop)
    assert res.status == "interrupted" and res.step == 4
    assert watch.starts[0].speed.startswith("float32 + eager (as the run started: ")
    resume_event = next(e for e in events(tmp_path / "run") if e["event"] == "resume")
    assert resume_event["compile"] is False


def test_resume_rules_explicit_values_win_and_another_device_decides_anew(corpus):
    tc, shape, cpu = config(corpus).train, config(corpus).model, torch.device("cpu")
    record = {"device": "cpu", "dtype": "bfloat16", "compile": True, "math_attention": True,
              "why": "AMX-BF16 in the CPU flags; 2,000 steps repay compiling"}  # fmt: skip
    kept = speed.resumed(record, tc, cpu, shape, 4, 10)
    assert (kept.dtype, kept.compile, kept.math_attention) == ("bfloat16", True, True)
    assert kept.why == "as the run started: AMX-BF16 in the CPU flags; 2,000 steps repay compiling"
    again = speed.resumed({**record, "why": kept.why}, tc, cpu, shape, 4, 10)  # resumed twice
    assert again.why == kept.why
    explicit = config(corpus, "train.dtype=float32", "train.compile=false").train
    mine = speed.resumed(record, explicit, cpu, shape, 4, 10)
    assert (mine.dtype, mine.compile, mine.math_attention) == ("float32", False, False)
    assert "train.dtype float32" in mine.why and "train.compile false" in mine.why
    cuda_record = {**record, "device": "cuda"}  # trained on a GPU, resumed on a CPU: anew
    anew = speed.resumed(cuda_record, config(corpus, "train.dtype=float32").train, cpu, shape,
                         4, 10)  # fmt: skip
    assert "as the run started" not in anew.why and anew.dtype == "float32"
    for bad in (None, "bf16", {**record, "dtype": "float8"}, {**record, "compile": "yes"}):
        assert speed.recorded_choice(bad) is None


def test_a_damaged_speed_record_refuses_the_resume_in_one_line(corpus, tmp_path):
    run = tmp_path / "run"
    train(config(corpus, "train.max_steps=5", "train.dtype=float32"), run)
    state_file = run / "latest" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=True)
    state["speed"] = {"dtype": "float64"}
    torch.save(state, state_file)
    with pytest.raises(CheckpointError, match="speed is not a recorded") as err:
        train(config(corpus, "train.max_steps=8", "train.dtype=float32"), run, resume=True)
    assert "\n" not in str(err.value)


# ---- item 3: slm-train eval computes what the in-run validation did -----------------------
def test_eval_computes_in_the_dtype_the_run_recorded(corpus, tmp_path, monkeypatch):
    run = tmp_path / "run"
    answer(monkeypatch, "bfloat16")
    train(config(corpus, "train.max_steps=6", "train.eval_batches=100000"), run)
    val = [r for r in records(run) if r["kind"] == "eval"][-1]
    answer(monkeypatch, "float32")  # eval would choose float32 now (another batch size too)
    result = evaluate(run / "latest", device="cpu")
    assert result.dtype == "bfloat16"
    assert result.tokens == val["val_tokens"]
    assert result.loss == pytest.approx(val["val_loss"], abs=1e-5)
    assert evaluate(run / "latest", device="cpu", dtype="float32").dtype == "float32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_on_cuda_eval_of_the_checkpoint_equals_the_in_run_validation(corpus, tmp_path, dtype):
    # On the GPU both paths run the same uncompiled model in the same dtype (bf16 autocast
    # for auto) and the same matmul precision (TF32); compile is training's alone.
    run = tmp_path / "run"
    over = ("train.device=cuda", "train.compile=false", f"train.dtype={dtype}",
            "train.max_steps=6", "train.eval_batches=100000")  # fmt: skip
    train(config(corpus, *over), run)
    meta = json.loads((run / "latest" / "meta.json").read_text())
    result = evaluate(run / "latest", device="cuda")
    assert result.dtype == meta["speed"]["dtype"]
    assert result.loss == pytest.approx(meta["val_loss"], abs=1e-5)
    assert result.bpb == pytest.approx(meta["val_bpb"], abs=1e-5)
