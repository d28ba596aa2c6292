"""Every stage with a byte-level tokenizer, through the real commands: `slm-train model`
trains a `bytelevel-bpe` tokenizer into the run and a model on it, `slm-train eval` scores
text, `slm-generate` writes from a prompt with an emoji, and `slm-serve` (a real server on a
loopback port, the official `openai` client) streams whole UTF-8 text with logprobs. With
GPT-2's vocabulary present, the `seed-notebook` preset (the `gpt2` kind) trains end to end
on the shared text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import _synthetic_stories
from test_gpt2_kinds import encoder_path
from typer.testing import CliRunner

from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.cli.generate import app as generate_app
from slm_tui.cli.train import app

FAST = ["--set", "train.threads=1", "--set", "train.compile=false", "--set", "train.dtype=float32",
        "--set", "train.sample_tokens=4"]  # fmt: skip


def invoke(application, *args):
    return CliRunner().invoke(application, [str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    stories = [s + " 😀 日本" if i % 7 == 0 else s for i, s in enumerate(_synthetic_stories(600))]
    path.write_text("\n<|endoftext|>\n".join(stories) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory, monkeypatch_module) -> Path:
    out = tmp_path_factory.mktemp("run") / "bl"
    res = invoke(app, "model", "--config", "tiny", "--data-files", corpus,
                 "--set", "tokenizer.kind=bytelevel-bpe", "--set", "tokenizer.vocab_size=360",
                 "--set", "model.context_length=64", "--set", "train.max_steps=4",
                 "--set", "train.eval_every=4", "--set", "train.eval_batches=2", *FAST,
                 "--output", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SLM_SHARDS_DIR", str(tmp_path_factory.mktemp("shards")))
    yield mp
    mp.undo()


def test_train_eval_and_generate_with_bytelevel_bpe(run, corpus):
    loaded = load_checkpoint(run / "latest")
    assert loaded.tokenizer.kind == "bytelevel-bpe" and loaded.model.cfg.vocab_size == 360
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    in_run = [m for m in metrics if m["kind"] == "eval"][-1]
    assert math.isfinite(in_run["val_bpb"])
    res = invoke(app, "eval", "--checkpoint", run, "--data-files", corpus, "--json",
                 "--max-tokens", "3000", "--dtype", "float32")  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["tokenizer"] == "bytelevel-bpe" and 0 < result["bpb"] < 20
    gen = invoke(generate_app, "--checkpoint", run, "--prompt", "Once upon a time 😀",
                 "--max-new-tokens", "12", "--seed", "1", "--format", "jsonl")  # fmt: skip
    assert gen.exit_code == 0, gen.output
    row = json.loads(gen.stdout.splitlines()[0])
    assert row["text"].encode("utf-8")  # whole UTF-8, whatever bytes the model chose


def test_serve_streams_whole_text_with_logprobs(run):
    from test_serve import MODEL, Running

    served = Running(run / "latest", max_batch=4)
    try:
        client = served.client()
        done = client.completions.create(model=MODEL, prompt="Lily 😀 saw", max_tokens=10,
                                         seed=2, logprobs=2)  # fmt: skip
        choice = done.choices[0]
        assert done.usage.prompt_tokens == 1 + len(
            load_checkpoint(run / "latest").tokenizer.encode("Lily 😀 saw")
        )
        parts = client.completions.create(model=MODEL, prompt="Lily 😀 saw", max_tokens=10,
                                          seed=2, stream=True)  # fmt: skip
        assert "".join(c.choices[0].text for c in parts if c.choices) == choice.text
        assert len(choice.logprobs.tokens) == done.usage.completion_tokens
    finally:
        served.close()


@pytest.mark.realdata
def test_seed_notebook_trains_end_to_end_on_the_shared_text(tinystories_dir, tmp_path, monkeypatch):
    """The seed notebook's preset, as shipped but for its length and batch: GPT-2's tokenizer
    from encoder.json, 30.0M parameters, two updates on train.txt, validated on valid.txt."""
    if encoder_path() is None:
        pytest.skip("GPT-2's encoder.json not found (../shared/data/gpt2)")
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path / "shards"))
    out = tmp_path / "seed"
    res = invoke(app, "model", "--config", "seed-notebook",
                 "--set", f"tokenizer.vocab_file={encoder_path()}",
                 "--data-files", tinystories_dir / "train.txt",
                 "--val-files", tinystories_dir / "valid.txt",
                 "--set", "train.max_steps=2", "--set", "train.batch_size=4",
                 "--set", "train.grad_accum=1", "--set", "train.eval_every=2",
                 "--set", "train.eval_batches=1", *FAST, "--output", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    loaded = load_checkpoint(out / "latest")
    assert loaded.tokenizer.kind == "gpt2" and loaded.model.num_params() == 29_995_392
    assert loaded.tokenizer.encode("Once upon a time") == [7454, 2402, 257, 640]
    shards = [json.loads(p.read_text()) for p in (tmp_path / "shards").rglob("train.json")]
    assert shards and shards[0]["tokenizer_kind"] == "gpt2" and shards[0]["dtype"] == "uint16"
