"""What `slm-train model` and its neighbours print, and the ETA behind it (issue 25).

The moving rate (`slm_tui.trainer.pace.Pace`) on its own, then real short runs through the
CLI: a few opening lines instead of the whole config (which goes to `<run>/config.yaml`
from the start, and to the terminal with `--print-config`), `step N/M (pct%)`, an ETA that
is "…" through the warm-up, after a resume too, and a closing line with this process's and
the whole run's tokens. metrics.jsonl keeps its fields, and a watcher folding it into a
`Pace` gets the ETA the trainer wrote. Then paths and plurals: eval's table names the
corpus as typed (normalised), and "1 token", not "1 tokens".
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import _synthetic_stories
from typer.testing import CliRunner

from slm_tui.cli.common import plural, shown_path
from slm_tui.cli.train import app
from slm_tui.trainer.pace import SETTLE, Pace, format_duration

TINY = [
    "model", "--config", "tiny", "--set", "tokenizer.kind=byte",
    "--set", "model.d_model=32", "--set", "model.n_layer=1", "--set", "model.n_head=2",
    "--set", "model.context_length=32", "--set", "train.batch_size=8", "--set", "train.grad_accum=1",
    "--set", "train.max_steps=12", "--set", "train.warmup_steps=3", "--set", "train.eval_every=6",
    "--set", "train.save_every=6", "--set", "train.eval_batches=2", "--set", "train.log_every=1",
    "--set", "train.sample_tokens=4", "--set", "train.threads=1", "--set", "train.device=cpu",
    "--set", "train.compile=false",
]  # fmt: skip
TRAIN_FIELDS = ["kind", "step", "tokens", "loss", "lr", "tokens_per_s", "elapsed_s", "eta_s"]
STEP_LINE = re.compile(r"^step (\d+)/(\d+) \((\d+)%\)  loss \S+  lr \S+  [\d,]+ tok/s  eta (\S+)$")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("train-output") / "stories.txt"
    stories = _synthetic_stories(300, seed=5)
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _shards(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path_factory.getbasetemp() / "output-shards"))


# ---- the moving rate -------------------------------------------------------------------------
def test_the_warm_up_interval_never_counts_and_the_eta_waits_until_it_settles():
    pace = Pace(window=4, settle=2)
    pace.add(10, 60.0)  # 10 steps in 60 s: compile and the first steps, left out
    assert pace.steps_per_s is None and pace.eta_s(100) is None
    pace.add(20, 70.0)
    assert pace.eta_s(100) is None  # one interval measured: not settled yet
    pace.add(30, 80.0)
    assert pace.steps_per_s == pytest.approx(1.0)  # 20 steps in 20 s, the warm-up left out
    assert pace.eta_s(100) == pytest.approx(70.0)
    assert pace.eta_s(30) == 0.0 and pace.eta_s(None) is None


def test_the_rate_moves_with_the_last_intervals():
    pace = Pace(window=2, settle=1)
    for step, t in [(1, 0.0), (2, 1.0), (3, 2.0), (4, 2.5), (5, 3.0)]:
        pace.add(step, t)
    assert pace.steps_per_s == pytest.approx(2.0)  # the last two intervals only
    assert pace.eta_s(9) == pytest.approx(2.0)


def test_a_resume_or_a_rewritten_log_begins_measuring_again():
    pace = Pace(window=4, settle=1)
    pace.add(1, 1.0)
    pace.add(2, 2.0)
    assert pace.settled
    pace.fold({"kind": "event", "event": "resume", "step": 2, "tokens": 0})
    assert pace.eta_s(10) is None
    pace.fold({"kind": "train", "step": 3, "elapsed_s": 30.0})  # the resumed process's warm-up
    assert pace.eta_s(10) is None
    pace.fold({"kind": "train", "step": 4, "elapsed_s": 31.0})
    assert pace.eta_s(10) == pytest.approx(6.0)
    pace.add(2, 5.0)  # a step back: metrics.jsonl was rewritten
    assert pace.eta_s(10) is None and pace.step == 2
    for bad in ({"kind": "train", "step": "7"}, {"kind": "eval", "step": 9}, {"kind": "train"}):
        pace.fold(bad)  # what is not a train record with numbers is ignored
    assert pace.step == 2


def test_durations_read_as_a_person_writes_them():
    assert [format_duration(s) for s in (None, float("nan"), -1, 0.4, 42, 185, 3725)] == [
        "…", "…", "…", "0s", "42s", "3m 05s", "1h 02m",
    ]  # fmt: skip
    assert format_duration(None, unknown="-") == "-"


# ---- a real run through the CLI ----------------------------------------------------------------
def test_a_run_opens_with_a_few_lines_and_counts_steps_of_the_whole(corpus, tmp_path):
    run = tmp_path / "run"
    res = invoke(*TINY, "--data-files", str(corpus), "--output", str(run))
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    first_step = next(i for i, line in enumerate(lines) if line.startswith("step "))
    # a line for the tokenizer it trains first, then what, on what, how, where
    assert lines[0].startswith("training a byte tokenizer for ")
    opening = lines[1:first_step]
    assert [line.split()[0] for line in opening] == ["training", "data", "speed", "output"]
    assert (
        "tiny: " in opening[0]
        and "on cpu" in opening[0]
        and "12 steps of 256 tokens" in (opening[0])
    )
    assert "stories.txt" in opening[1] and "train tokens" in opening[1]
    assert f"{run / 'config.yaml'}" in opening[3]
    assert "context_length" not in res.stderr  # the config is in the run folder, not here
    saved = (run / "config.yaml").read_text()
    assert saved == (run / "latest" / "config.yaml").read_text()
    assert "context_length: 32" in saved

    steps = [STEP_LINE.match(line) for line in lines if line.startswith("step ")]
    assert all(steps), [line for line in lines if line.startswith("step ")]
    assert [(int(m[1]), int(m[2])) for m in steps] == [(s, 12) for s in range(1, 13)]
    assert steps[0][3] == "8" and steps[-1][3] == "100"
    etas = [m[4] for m in steps]
    # The first log step is the warm-up; the rate needs SETTLE intervals after it.
    assert etas[:SETTLE] == ["…"] * SETTLE
    assert all(re.fullmatch(r"\d+s|\d+m \d\ds", e) for e in etas[SETTLE:]), etas
    assert etas[-1] == "0s"
    tps = 8 * 32
    assert lines[-1].startswith(f"finished at step 12/12: {12 * tps:,} tokens in ")
    assert "this time" not in lines[-1] and f"checkpoints in {run}" in lines[-1]


def test_print_config_prints_the_resolved_config(corpus, tmp_path):
    res = invoke(*TINY, "--set", "train.max_steps=2", "--data-files", str(corpus),
                 "--output", str(tmp_path / "run"), "--print-config")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "context_length: 32" in res.stderr and "max_steps: 2" in res.stderr


def test_config_yaml_is_in_the_run_folder_before_the_first_checkpoint(corpus, tmp_path):
    from slm_tui.presets import load_config
    from slm_tui.trainer import Reporter, train

    seen = []

    class Watch(Reporter):
        def on_log(self, record):
            seen.append(((run / "config.yaml").is_file(), (run / "latest").exists()))

    run = tmp_path / "run"
    cfg = load_config("tiny", [a for a in TINY if "=" in a and a != "tiny"])
    cfg.data.data_files = [str(corpus)]
    cfg.train.max_steps = 2
    train(cfg, run, reporter=Watch())
    assert seen[0] == (True, False)
    assert load_config(str(run / "config.yaml")).model.context_length == 32
    # A folder holding it takes no new run without --force, and --force clears it.
    res = invoke(*TINY, "--data-files", str(corpus), "--output", str(run))
    assert res.exit_code == 2 and "holds another run" in res.stderr
    # A run folder with no checkpoint yet is not mistaken for a damaged checkpoint.
    shutil.rmtree(run / "latest"), shutil.rmtree(run / "best")
    res = invoke("eval", "--checkpoint", str(run))
    assert res.exit_code == 2 and "holds no checkpoint yet" in res.stderr


def test_metrics_lines_keep_their_fields_and_a_watcher_gets_the_trainers_eta(corpus, tmp_path):
    run = tmp_path / "run"
    assert invoke(*TINY, "--data-files", str(corpus), "--output", str(run)).exit_code == 0
    lines = records(run)
    train = [r for r in lines if r["kind"] == "train"]
    assert all(list(r) == TRAIN_FIELDS for r in train), train[0]
    assert [r["eta_s"] is None for r in train] == [True] * SETTLE + [False] * (12 - SETTLE - 1) + [
        False
    ]
    # The Train screen folds the same lines into a Pace: it gets what the trainer wrote.
    for i, line in enumerate(lines):
        if line["kind"] == "train":
            assert Pace.of(lines[: i + 1]).eta_s(12) == pytest.approx(line["eta_s"])


def test_after_resume_the_eta_waits_again_and_the_closing_line_says_both(corpus, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--data-files", str(corpus), "--output", str(run)]
    assert invoke(*args, "--set", "train.max_steps=6").exit_code == 0
    res = invoke(*args, "--resume", "--set", "train.max_steps=12")
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    resumed = next(line for line in lines if line.startswith("resumed"))
    tps = 8 * 32
    assert f"at step 6/12 (50%): {6 * tps:,} tokens in " in resumed
    etas = [STEP_LINE.match(line)[4] for line in lines if line.startswith("step ")]
    assert len(etas) == 6 and etas[:SETTLE] == ["…"] * SETTLE  # the resumed warm-up is left out
    last = lines[-1]
    assert last.startswith(f"finished at step 12/12: {6 * tps:,} tokens in "), last
    assert f"this time (from step 6); the whole run {12 * tps:,} tokens in " in last
    after = [r for r in records(run) if r["kind"] == "train" and r["step"] > 6]
    assert [r["eta_s"] is None for r in after[:SETTLE]] == [True] * SETTLE


# ---- paths and plurals -------------------------------------------------------------------------
def test_eval_names_the_corpus_as_typed_never_with_dot_dot(corpus, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert invoke(*TINY, "--set", "train.max_steps=2", "--data-files", str(corpus),
                  "--output", str(run)).exit_code == 0  # fmt: skip
    (tmp_path / "sub").mkdir()
    shutil.copy(corpus, tmp_path / "held.txt")
    monkeypatch.chdir(tmp_path)
    res = invoke("eval", "--checkpoint", "./sub/../run", "--data-files", "sub/../held.txt")
    assert res.exit_code == 0, res.output
    assert "eval of run/best" in res.stdout
    assert re.search(r"corpus\s+[│|]\s+held\.txt\s", res.stdout), res.stdout
    assert "/../" not in res.stdout and "sub" not in res.stdout


def test_shown_path_and_plural(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "a" / ".." / "b.txt") == "b.txt"
    assert shown_path("x/./y/../z") == "x/z"
    assert shown_path("/elsewhere/a/../b") == "/elsewhere/b"
    assert shown_path(tmp_path) == "."
    assert [plural(n, "token") for n in (0, 1, 2, 4096)] == [
        "0 tokens", "1 token", "2 tokens", "4,096 tokens",
    ]  # fmt: skip
    assert plural(1, "story", "stories") == "1 story" and plural(3, "story", "stories") == (
        "3 stories"
    )


def test_one_token_is_not_tokens(corpus, tmp_path):
    from slm_tui.cli.generate import app as generate_app

    run = tmp_path / "run"
    assert invoke(*TINY, "--set", "train.max_steps=2", "--data-files", str(corpus),
                  "--output", str(run)).exit_code == 0  # fmt: skip
    res = CliRunner().invoke(generate_app, ["--checkpoint", str(run), "--prompt", "Once",
                                            "--max-new-tokens", "1", "--stream",
                                            "--ignore-eos"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("1 token, ") and "1 tokens" not in res.stderr
