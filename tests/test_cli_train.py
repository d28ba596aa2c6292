"""`slm-train model`, `eval` and `export` as a user runs them: text to model in one command,
eval --json, export to a slim checkpoint, SIGTERM mid-run (a real subprocess), DDP through a
real `torchrun` with two gloo processes against one process, `--help` without importing
torch (real subprocesses), and every bad input: one line on stderr, exit code 2, the
existing run untouched. One run per folder (real concurrent `slm-train model` processes),
a second Ctrl-C during the interrupt save (real SIGINTs at a chosen point), `--resume` after
a swap cut between its renames, a run folder named with rich markup, and a real full disk
(a tmpfs in a private mount namespace, where root may mount one).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import _synthetic_stories
from typer.testing import CliRunner

from slm_tui.cli.train import app

BIN = Path(sys.executable).parent
TINY = [
    "model", "--config", "tiny",
    "--set", "model.d_model=32", "--set", "model.n_layer=1", "--set", "model.n_head=2",
    "--set", "model.context_length=32", "--set", "train.batch_size=8", "--set", "train.grad_accum=1",
    "--set", "train.max_steps=12", "--set", "train.warmup_steps=3",
    "--set", "train.eval_every=6", "--set", "train.save_every=6",
    "--set", "train.eval_batches=2", "--set", "train.log_every=1",
    "--set", "train.sample_tokens=4", "--set", "train.threads=1", "--set", "train.device=cpu",
]  # fmt: skip


# A long run (max_steps 100,000) would compile on a CPU with a C++ compiler and wait for
# it before step 1 (minutes under a loaded parallel suite); these tests are about signals
# and locks, not speed.
EAGER = ["--set", "train.compile=false"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Corpus, a byte tokenizer, a finished run; shards cached in a private folder."""
    from slm_tui.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("cli-train")
    corpus = root / "stories.txt"
    stories = _synthetic_stories(300, seed=5)
    corpus.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    byte_tok = train_tokenizer("byte", [], 256, root / "byte-tok")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLM_SHARDS_DIR", str(root / "shards-cache"))
        run = root / "run"
        res = invoke(*TINY, "--tokenizer", str(byte_tok.path), "--data-files", str(corpus),
                     "--output", str(run))  # fmt: skip
        assert res.exit_code == 0, res.output
    return {"root": root, "corpus": corpus, "byte": byte_tok.path, "run": run}


@pytest.fixture(autouse=True)
def _shards(env, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(env["root"] / "shards-cache"))


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(p.relative_to(folder)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha1(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_refused(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def train_losses(run: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


# ---- the happy paths ------------------------------------------------------------------------
def test_text_to_model_in_one_command_then_eval_json(env, tmp_path):
    run = tmp_path / "run"
    res = invoke(*TINY, "--set", "tokenizer.kind=sentencepiece-bpe",
                 "--set", "tokenizer.vocab_size=300",
                 "--data-files", str(env["corpus"]), "--output", str(run))  # fmt: skip
    assert res.exit_code == 0, res.output
    # the resolved config is in the run folder (printed only with --print-config)
    assert "context_length: 32" in (run / "config.yaml").read_text()
    # ... and how the run uses this machine, and why (train.dtype/compile auto)
    speed_line = next(line for line in res.stderr.splitlines() if line.startswith("speed "))
    assert "too few to repay compiling" in speed_line or "no C++ compiler" in speed_line
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((run / "latest" / "meta.json").read_text())["step"] == 12
    assert (run / "loss.png").is_file() and (run / "latest" / "loss.png").is_file()

    res = invoke("eval", "--checkpoint", str(run), "--data-files", str(env["corpus"]), "--json")
    assert res.exit_code == 0, res.output
    (line,) = res.stdout.strip().splitlines()
    result = json.loads(line)
    assert {"loss", "bpb", "tokens", "bytes"} <= set(result)
    assert result["bytes"] == sum(len(s.encode()) for s in _synthetic_stories(300, seed=5))
    assert 0 < result["bpb"] < 8

    res = invoke("eval", "--checkpoint", str(run))  # default: the run's own validation shard
    assert res.exit_code == 0, res.output
    assert "bits per byte" in res.stdout


def test_eval_dtype_is_reported_and_can_be_chosen(env):
    fp32 = json.loads(invoke("eval", "--checkpoint", str(env["run"]), "--json",
                             "--dtype", "float32").stdout)  # fmt: skip
    bf16 = json.loads(invoke("eval", "--checkpoint", str(env["run"]), "--json",
                             "--dtype", "bfloat16").stdout)  # fmt: skip
    assert (fp32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    assert fp32["tokens"] == bf16["tokens"] and abs(fp32["bpb"] - bf16["bpb"]) < 0.05
    assert_refused(invoke("eval", "--checkpoint", str(env["run"]), "--dtype", "fp8"),
                   "--dtype must be auto, float32 or bfloat16")  # fmt: skip


def test_eval_record_keeps_held_out_figures_in_meta_and_the_weights_untouched(env, tmp_path):
    from slm_tui.checkpoint.format import read_info

    ckpt = tmp_path / "ckpt"
    shutil.copytree(env["run"] / "latest", ckpt)
    weights = (ckpt / "model.safetensors").read_bytes()
    dev = _story_file(tmp_path / "dev.txt", [f"Kept {i}. {s}" for i, s in
                                             enumerate(_synthetic_stories(20, seed=3))])  # fmt: skip
    res = invoke("eval", "--checkpoint", str(ckpt), "--data-files", str(dev), "--record")
    assert res.exit_code == 0, res.output
    assert "recorded" in res.stderr and "dev.txt" in res.stderr
    (entry,) = json.loads((ckpt / "meta.json").read_text())["evaluations"]
    assert entry["name"] == "dev.txt" and len(entry["fingerprint"]) == 64
    assert set(entry) == {"name", "corpus", "fingerprint", "bpb", "loss", "tokens", "dtype", "date"}
    # Scoring the same corpus again replaces its entry; another corpus adds one.
    assert invoke("eval", "--checkpoint", str(ckpt), "--data-files", str(dev), "--record",
                  "--json").exit_code == 0  # fmt: skip
    assert invoke("eval", "--checkpoint", str(ckpt), "--data-files", str(env["corpus"]),
                  "--record").exit_code == 0  # fmt: skip
    info = read_info(ckpt)
    assert [e.name for e in info.evaluations] == ["dev.txt", "stories.txt"]
    assert info.quality().startswith(f"{entry['bpb']:.3f} bpb on dev.txt · ")
    assert (ckpt / "model.safetensors").read_bytes() == weights  # and load still checks sha256
    # slm-generate's JSONL says which figures the model has, with their corpora
    from slm_tui.cli.generate import app as generate_app

    out = CliRunner().invoke(generate_app, ["--checkpoint", str(ckpt), "--prompt", "Once",
                                            "--max-new-tokens", "3", "--format", "jsonl"])  # fmt: skip
    about = json.loads(out.stdout.splitlines()[0])["model"]
    assert set(about["bits_per_byte"]) == {"dev.txt", "stories.txt"}


def test_eval_record_leaves_a_corrupt_meta_json_as_it_is(env, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(env["run"] / "latest", ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    bad = json.dumps({**meta, "evaluations": "not a list"})
    (ckpt / "meta.json").write_text(bad)
    res = invoke("eval", "--checkpoint", str(ckpt), "--data-files", str(env["corpus"]), "--record")
    assert_refused(res, "evaluations must be a list")
    assert (ckpt / "meta.json").read_text() == bad


def test_eval_json_keeps_its_fields_and_order(env):
    res = invoke("eval", "--checkpoint", str(env["run"]), "--json")
    assert res.exit_code == 0, res.output
    assert list(json.loads(res.stdout)) == [
        "loss", "bpb", "tokens", "bytes", "stories", "perplexity", "checkpoint", "corpus",
        "tokenizer", "vocab_size", "context_length", "seconds", "dtype", "name", "fingerprint",
        "weights_sha256",
    ]  # fmt: skip


@pytest.mark.parametrize("command", [[], ["tokenizer"], ["data"], ["model"], ["eval"], ["export"]])
def test_help_does_not_import_torch(command):
    # The real entry point in a fresh interpreter; -X importtime lists every module imported.
    cmd = [sys.executable, "-X", "importtime", str(BIN / "slm-train"), *command, "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]  # fmt: skip
    assert "typer" in imported  # the listing is real
    assert "torch" not in imported, [m for m in imported if m.startswith("torch")][:5]


def test_export_writes_a_slim_loadable_checkpoint(env, tmp_path):
    from slm_tui.checkpoint.io import load_checkpoint, read_checkpoint_meta

    dest = tmp_path / "slim"
    res = invoke("export", "--checkpoint", str(env["run"] / "latest"), "--output", str(dest))
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(dest.resolve())
    assert not (dest / "trainer_state.pt").exists()
    assert (dest / "metrics.jsonl").read_bytes() == (env["run"] / "metrics.jsonl").read_bytes()
    source_meta = read_checkpoint_meta(env["run"] / "latest")
    meta = read_checkpoint_meta(dest)
    for key in ("step", "tokens_seen", "val_loss", "val_bpb"):
        assert meta[key] == source_meta[key]
    loaded = load_checkpoint(dest, device="cpu")
    original = load_checkpoint(env["run"] / "latest", device="cpu")
    for name, weight in original.model.state_dict().items():  # bf16 weights, upcast on load
        assert (loaded.model.state_dict()[name] - weight).abs().max() <= weight.abs().max() / 64
    assert_refused(invoke("export", "--checkpoint", str(env["run"]), "--output", str(dest)),
                   "already exists", "--force")  # fmt: skip
    assert_refused(invoke("export", "--checkpoint", str(env["run"]), "--output",
                          str(tmp_path / "x"), "--dtype", "int8"), "--dtype")  # fmt: skip
    assert invoke("export", "--checkpoint", str(env["run"]), "--output", str(dest),
                  "--dtype", "float32", "--force").exit_code == 0  # fmt: skip
    assert (load_checkpoint(dest, device="cpu").model.state_dict()["tok_emb.weight"]
            == original.model.state_dict()["tok_emb.weight"]).all()  # fmt: skip


def test_eval_takes_several_files_after_one_flag_as_the_other_commands_do(env, tmp_path):
    stories = env["corpus"].read_text(encoding="utf-8").split("<|endoftext|>\n")
    half = len(stories) // 2
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("<|endoftext|>\n".join(stories[:half]) + "<|endoftext|>\n", encoding="utf-8")
    b.write_text("<|endoftext|>\n".join(stories[half:]), encoding="utf-8")
    whole = invoke("eval", "--checkpoint", str(env["run"]), "--data-files", str(env["corpus"]),
                   "--json")  # fmt: skip
    split = invoke("eval", "--checkpoint", str(env["run"]), "--data-files", str(a), str(b),
                   "--json")  # fmt: skip
    assert whole.exit_code == 0 and split.exit_code == 0, split.output
    assert json.loads(split.stdout)["bytes"] == json.loads(whole.stdout)["bytes"]
    stray = invoke("eval", "--checkpoint", str(env["run"]), str(a))
    assert stray.exit_code == 2
    assert "local files go after --data-files" in stray.stderr


def test_force_replaces_a_run_and_says_so(env, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
            "--output", str(run), "--set", "train.max_steps=3"]  # fmt: skip
    assert invoke(*args).exit_code == 0
    (run / "latest" / "marker").write_text("old run")
    res = invoke(*args, "--force")
    assert res.exit_code == 0, res.output
    assert "replaced the previous run" in res.stderr
    assert not (run / "latest" / "marker").exists()


def test_sigterm_saves_and_exits_cleanly_then_resumes(env, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
            "--output", str(run), "--set", "train.max_steps=100000", *EAGER,
            "--set", "train.save_every=100000", "--set", "train.eval_every=100000"]  # fmt: skip
    child_env = {**os.environ, "SLM_SHARDS_DIR": str(env["root"] / "shards-cache")}
    proc = subprocess.Popen([str(BIN / "slm-train"), *args], env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            metrics = run / "metrics.jsonl"
            if metrics.is_file() and len(train_losses(run)) >= 3:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    step = json.loads((run / "latest" / "meta.json").read_text())["step"]
    assert step >= 3 and max(train_losses(run)) == step

    res = invoke(*args, "--resume", "--set", f"train.max_steps={step + 2}")
    assert res.exit_code == 0, res.output
    assert json.loads((run / "latest" / "meta.json").read_text())["step"] == step + 2


def test_ddp_two_gloo_processes_match_one_process(env, tmp_path):
    common = [*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
              "--set", "train.max_steps=6", "--set", "train.grad_accum=2",
              # float32: bf16 (auto's pick on a CPU with AMX) rounds differently when the
              # batch splits differently across processes
              "--set", "train.dtype=float32"]  # fmt: skip
    child_env = {**os.environ, "SLM_SHARDS_DIR": str(env["root"] / "shards-cache"),
                 "OMP_NUM_THREADS": "1"}  # fmt: skip
    one = invoke(*common, "--output", str(tmp_path / "one"))
    assert one.exit_code == 0, one.output
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2",
           str(BIN / "slm-train"), *common, "--output", str(tmp_path / "two")]  # fmt: skip
    two = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-5), step
    meta = json.loads((tmp_path / "two" / "latest" / "meta.json").read_text())
    assert meta["world_size"] == 2


def _story_file(path: Path, stories: list[str]) -> Path:
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


def test_val_files_replace_the_held_out_fraction(env, tmp_path):
    held = [f"{s} Kept aside {i}." for i, s in enumerate(_synthetic_stories(40, seed=9))]
    v1 = _story_file(tmp_path / "dev-a.txt", held[:25])
    v2 = _story_file(tmp_path / "dev-b.txt", held[25:])
    run = tmp_path / "run"
    # Several files after one --val-files flag, the training files before it.
    res = invoke(*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
                 "--val-files", str(v1), str(v2), "--output", str(run))  # fmt: skip
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((run / "latest" / "config.yaml").read_text())["data"]
    assert saved["val_files"] == [str(v1), str(v2)] and saved["data_files"] == [str(env["corpus"])]
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" for r in evals)
    # slm-train eval of the run, with no corpus named, scores the run's own validation files
    scored = json.loads(invoke("eval", "--checkpoint", str(run), "--json").stdout)
    assert scored["stories"] == 40


def test_files_after_the_data_flag_stay_training_files(env, tmp_path):
    held = [f"{s} Kept aside {i}." for i, s in enumerate(_synthetic_stories(30, seed=9))]
    dev = _story_file(tmp_path / "dev.txt", held)
    more = _story_file(tmp_path / "more.txt", _synthetic_stories(20, seed=11))
    run = tmp_path / "run"
    res = invoke(*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
                 str(more), "--val-files", str(dev), "--output", str(run),
                 "--set", "train.max_steps=2")  # fmt: skip
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((run / "latest" / "config.yaml").read_text())["data"]
    assert saved["data_files"] == [str(env["corpus"]), str(more)]
    assert saved["val_files"] == [str(dev)]


def test_a_validation_file_that_overlaps_training_is_refused(env, tmp_path):
    stories = _synthetic_stories(300, seed=5)  # the training corpus's own stories
    leak = _story_file(
        tmp_path / "dev.txt",
        [f"Kept aside {i}." for i in range(5)] + ["  " + stories[17].replace("\n", "\n  ")],
    )  # the same words, other whitespace
    run = tmp_path / "run"
    res = invoke(*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
                 "--val-files", str(leak), "--output", str(run))  # fmt: skip
    assert_refused(res, "shares stories with the training text", stories[17].split("\n")[0][:30])
    assert not (run / "latest").exists()


# ---- bad input: one line, exit 2, nothing touched -------------------------------------------
def test_output_holding_another_run_is_refused(env):
    before = snapshot(env["run"])
    res = invoke(*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
                 "--output", str(env["run"]))  # fmt: skip
    assert_refused(res, "holds another run", "--resume", "--force")
    assert snapshot(env["run"]) == before


def test_resume_without_a_checkpoint_is_refused(env, tmp_path):
    res = invoke(*TINY, "--data-files", str(env["corpus"]), "--output", str(tmp_path / "none"),
                 "--resume")  # fmt: skip
    assert_refused(res, "no checkpoint")
    assert not (tmp_path / "none").exists()


def test_resume_with_another_model_shape_is_refused(env):
    before = snapshot(env["run"])
    res = invoke(*TINY, "--set", "model.d_model=64", "--data-files", str(env["corpus"]),
                 "--output", str(env["run"]), "--resume")  # fmt: skip
    assert_refused(res, "different model shape", "d_model")
    assert snapshot(env["run"]) == before


def test_context_longer_than_the_model_supports_is_refused(env):
    before = snapshot(env["run"])
    res = invoke(*TINY, "--set", "model.context_length=64", "--data-files", str(env["corpus"]),
                 "--output", str(env["run"]), "--resume")  # fmt: skip
    assert_refused(res, "context_length 64", "32")
    res = invoke("eval", "--checkpoint", str(env["run"]), "--data-files", str(env["corpus"]),
                 "--context-length", "64")  # fmt: skip
    assert_refused(res, "context length 64")
    assert snapshot(env["run"]) == before


def test_tokenizer_vocab_differing_from_the_model_is_refused(env, tmp_path):
    res = invoke(*TINY, "--set", "model.vocab_size=999", "--tokenizer", str(env["byte"]),
                 "--data-files", str(env["corpus"]), "--output", str(tmp_path / "a"))  # fmt: skip
    assert_refused(res, "model.vocab_size is 999")
    res = invoke(*TINY, "--set", "model.vocab_size=999", "--set", "tokenizer.vocab_size=300",
                 "--data-files", str(env["corpus"]), "--output", str(tmp_path / "b"))  # fmt: skip
    assert_refused(res, "model.vocab_size is 999")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_shards_made_with_another_tokenizer_are_refused(env, tmp_path):
    from slm_tui.shards import corpus_source, prepare_shards
    from slm_tui.tokenizers import train_tokenizer

    other = train_tokenizer("sentencepiece-bpe", _synthetic_stories(200), 300,
                            tmp_path / "spm", num_threads=1)  # fmt: skip
    shards = tmp_path / "shards"
    prepare_shards(corpus_source(None, [str(env["corpus"])]), other, shards)
    before = snapshot(shards)
    res = invoke(*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
                 "--set", f"data.shards_dir={shards}", "--output", str(tmp_path / "run"))  # fmt: skip
    assert_refused(res, "tokenizer")
    assert snapshot(shards) == before


def test_batch_that_does_not_divide_across_ranks_is_refused(env, tmp_path, monkeypatch):
    # The environment torchrun gives rank 0 of two; the check runs before any process group.
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                        "LOCAL_WORLD_SIZE": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    res = invoke(*TINY, "--set", "train.batch_size=6", "--set", "train.grad_accum=2",
                 "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
                 "--output", str(tmp_path / "run"))  # fmt: skip
    assert_refused(res, "train.batch_size (6)", "processes (2)")
    assert not (tmp_path / "run").exists()


# ---- one run per folder, interrupted saves, full disks, markup (issue 16) --------------------
def _slm_train(args: list[str], env: dict, **kwargs) -> subprocess.Popen:
    child_env = {**os.environ, "SLM_SHARDS_DIR": str(env["root"] / "shards-cache"),
                 "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.Popen([str(BIN / "slm-train"), *args], env=child_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)  # fmt: skip


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_second_run_on_a_training_folder_is_refused_naming_the_process(env, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
            "--output", str(run), "--set", "train.max_steps=100000", *EAGER,
            "--set", "train.save_every=100000", "--set", "train.eval_every=100000"]  # fmt: skip
    first = _slm_train(args, env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (
            (run / "metrics.jsonl").is_file() and train_losses(run)
        ):
            time.sleep(0.2)
        assert train_losses(run), "the first run never started training"
        for extra in ([], ["--resume"], ["--force"]):
            other = _slm_train([*args, *extra], env)
            _, stderr = other.communicate(timeout=120)
            assert other.returncode == 2, (extra, stderr)
            line = _one_error_line(stderr)
            assert "in use by another training run" in line and f"process {first.pid}" in line
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]  # fmt: skip
    assert steps == sorted(set(steps))  # every step once: nobody else trained here
    # The kernel dropped the lock with the process: the next run resumes at once.
    res = invoke(*args, "--resume", "--set", f"train.max_steps={max(steps) + 1}")
    assert res.exit_code == 0, res.output


def test_two_runs_started_together_on_one_folder_do_not_both_train(env, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
            "--output", str(run), "--set", "train.max_steps=8"]  # fmt: skip
    procs = [_slm_train(args, env) for _ in range(2)]
    results = [(p.wait(timeout=240), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(stderr for code, stderr in results if code == 2)
    _one_error_line(refused)
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]  # fmt: skip
    assert steps == list(range(1, 9))


def test_a_second_ctrl_c_during_the_interrupt_save_keeps_latest(env, tmp_path):
    """Ctrl-C, then Ctrl-C again right before the interrupt save swaps `latest/` in: exit 130
    and `latest/` (the previous save) loads, nothing is left behind, `--resume` goes on."""
    run = tmp_path / "run"
    args = [*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
            "--output", str(run), "--set", "train.max_steps=100000", *EAGER,
            "--set", "train.save_every=2", "--set", "train.eval_every=100000"]  # fmt: skip
    code = (
        "import os, signal, sys\n"
        "state = {'appends': 0, 'first': False, 'second': False}\n"
        "def hook(event, a):\n"
        "    if event == 'open' and str(a[0]).endswith('metrics.jsonl') and a[1] == 'a':\n"
        "        state['appends'] += 1\n"
        "        if state['appends'] == 6 and not state['first']:\n"
        "            state['first'] = True\n"
        "            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: finish the step, save\n"
        "    elif state['first'] and not state['second'] and '.tmp-latest-' in repr(a) and (\n"
        "            event in ('os.rename', 'ctypes.call_function')):\n"
        "        state['second'] = True\n"
        "        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again, before the swap\n"
        "sys.addaudithook(hook)\n"
        "from slm_tui.cli.train import main\n"
        "sys.argv = ['slm-train'] + sys.argv[1:]\n"
        "main()\n"
    )
    child_env = {**os.environ, "SLM_SHARDS_DIR": str(env["root"] / "shards-cache"),
                 "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, *args], env=child_env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    from slm_tui.checkpoint.io import load_checkpoint

    step = load_checkpoint(run / "latest").info.step
    assert step >= 2 and step % 2 == 0  # the last periodic save, whole
    assert [p.name for p in run.iterdir() if p.name.startswith((".tmp-", ".trash-"))] == []
    res = invoke(*args, "--resume", "--set", f"train.max_steps={step + 2}")
    assert res.exit_code == 0, res.output
    assert load_checkpoint(run / "latest").info.step == step + 2


def test_resume_puts_back_a_latest_cut_between_the_two_renames(env, tmp_path):
    """What a kill between the fallback swap's two renames leaves: no latest/, the previous
    one in .trash-latest-<pid> of a dead process. --resume puts it back and goes on."""
    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                             capture_output=True, text=True).stdout)  # fmt: skip
    step = json.loads((run / "latest" / "meta.json").read_text())["step"]
    (run / "latest").rename(run / f".trash-latest-{pid}")
    shutil.copytree(run / "best", run / f".tmp-latest-{pid}")
    res = invoke(*TINY, "--tokenizer", str(env["byte"]), "--data-files", str(env["corpus"]),
                 "--output", str(run), "--resume",
                 "--set", f"train.max_steps={step + 1}")  # fmt: skip
    assert res.exit_code == 0, res.output
    resumed = next(line for line in res.stderr.splitlines() if line.startswith("resumed"))
    assert "restored" in res.stderr and f"at step {step}/{step + 1}" in resumed
    assert json.loads((run / "latest" / "meta.json").read_text())["step"] == step + 1
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".tmp-")) == []


def test_a_run_folder_whose_name_holds_markup_trains_and_prints_it(env, tmp_path):
    run = tmp_path / "scratch[/]x[bold red]y"
    args = [*TINY, "--set", "tokenizer.kind=byte", "--data-files", str(env["corpus"]),
            "--output", str(run), "--set", "train.max_steps=2"]  # fmt: skip
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert f"checkpoints in {run}" in res.stderr and f"{run / 'tokenizer'}" in res.stderr
    res = invoke(*args, "--force")
    assert res.exit_code == 0, res.output
    assert f"replaced the previous run in {run}" in res.stderr


def _can_mount_tmpfs() -> bool:
    """Whether a tmpfs can be mounted in a private mount namespace (root, util-linux)."""
    import tempfile

    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as where:
        probe = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o size=64k tmpfs {where}"],
            capture_output=True,
        )  # fmt: skip
    return probe.returncode == 0


DISK_FULL_DRIVER = r"""
import json, os, subprocess, sys
from pathlib import Path
disk, run_src, tok, corpus = map(Path, sys.argv[1:5])
tiny = json.loads(sys.argv[5])
bin_ = Path(sys.executable).parent
env = {**os.environ, "OMP_NUM_THREADS": "1"}
results = {}
def cli(name, *args):
    proc = subprocess.run([str(bin_ / name), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=240)
    return {"code": proc.returncode, "stderr": proc.stderr}
run = disk / "run"
subprocess.run(["cp", "-a", str(run_src), str(run)], check=True)
step = json.loads((run / "latest" / "meta.json").read_text())["step"]
filler = disk / "filler"
with open(filler, "wb") as f:  # leave 64 KiB: metrics lines fit, a checkpoint does not
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    f.write(b"\0" * max(0, free - (64 << 10)))
results["train"] = cli("slm-train", *tiny, "--tokenizer", tok, "--data-files", corpus,
                       "--output", run, "--resume", "--set", f"train.max_steps={step + 2}",
                       "--set", "train.save_every=1")
results["latest_step"] = json.loads((run / "latest" / "meta.json").read_text())["step"]
results["export"] = cli("slm-train", "export", "--checkpoint", run, "--output", disk / "slim")
out = disk / "stories.txt"
out.write_text("earlier\n")
try:  # now nothing at all is left
    with open(filler, "ab", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)
except OSError:
    pass
results["generate"] = cli("slm-generate", "--checkpoint", run, "--prompt", "Tom", "--output",
                          out, "--max-new-tokens", "8", "--device", "cpu")
results["stories"] = out.read_text()
results["leftovers"] = sorted(
    p.name for p in run.iterdir() if p.name.startswith((".tmp", ".trash"))
)
results["disk"] = sorted(os.listdir(disk))
print(json.dumps(results))
"""


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs (needs root)")
def test_a_full_disk_is_one_line_saying_what_was_kept(env, tmp_path):
    """A real full disk (a small tmpfs in a private mount namespace) under a training save,
    an export and slm-generate --output: one line each, and the old files stay whole."""
    disk = tmp_path / "disk"
    disk.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DISK_FULL_DRIVER)
    inner = (f"mount -t tmpfs -o size=4m tmpfs {disk} && exec {sys.executable} {driver} {disk} "
             f"{env['run']} {env['byte']} {env['corpus']} '{json.dumps(TINY)}'")  # fmt: skip
    child_env = {**os.environ, "SLM_SHARDS_DIR": str(env["root"] / "shards-cache")}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", inner],
                          capture_output=True, text=True, timeout=600, env=child_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    for what in ("export", "generate"):
        assert r[what]["code"] == 2, (what, r[what])
        assert "the disk is full" in _one_error_line(r[what]["stderr"])
    # A run prints its config and progress first; it ends with the one error line.
    train = r["train"]["stderr"]
    errors = [line for line in train.splitlines() if line.startswith("error:")]
    assert r["train"]["code"] == 2 and "Traceback" not in train, train[-2000:]
    assert len(errors) == 1 and train.rstrip().endswith(errors[0]), train[-2000:]
    assert "the disk is full" in errors[0] and "previous latest/ is kept" in errors[0]
    assert "nothing kept" in _one_error_line(r["export"]["stderr"])
    assert "kept as it was" in _one_error_line(r["generate"]["stderr"])
    step = json.loads((env["run"] / "latest" / "meta.json").read_text())["step"]
    assert r["latest_step"] == step  # the run's last checkpoint, untouched
    assert r["stories"] == "earlier\n"
    assert r["leftovers"] == [] and "slim" not in r["disk"]
    assert [n for n in r["disk"] if n.startswith(".")] == []
