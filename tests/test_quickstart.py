"""The README's quick start, run as a newcomer types it (issue 25).

The commands are read from the `## Quick start` code block of README.md, not copied here,
so the README cannot drift from what works. In a temporary folder the test writes
`my-stories.txt` and `my-held-out.txt` (TinyStories' format: stories separated by a line
`<|endoftext|>`; invented words, varied enough for the 4,096-piece tokenizer the command
trains) and runs every command in order as a real subprocess, with this environment's bin
folder in place of `.venv/bin/`:

- `make setup` is skipped: the suite already runs inside the set-up environment.
- `slm-train model` gets documented overrides appended, to stay short on two loaded
  cores: `--set train.max_steps=12 --set train.compile=false --set train.threads=1`
  (a later `--set` of a key wins over the README's `train.max_steps=300`).
- The last command, `slm-tui ...`, is interactive: its arguments go through the real
  `slm-tui` command line, and the app that command builds runs under Textual's `run_test`,
  where the checkpoint the quick start trained must load.

Each other command must exit 0 and print what a user then relies on.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VENV_BIN = ".venv/bin/"
QUICK_OVERRIDES = {
    "model": ["--set", "train.max_steps=12", "--set", "train.compile=false",
              "--set", "train.threads=1"],
}  # fmt: skip


def quick_start_commands() -> list[str]:
    """The command lines of README.md's `## Quick start` code block (continuations joined)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|console|sh)?\n(.*?)```", section, re.S)
    assert block, "the quick start has no code block"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def _word(rng: random.Random) -> str:
    return "".join(
        rng.choice("bdgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(1, 4))
    )


def write_stories(path: Path, n: int, rng: random.Random, words: list[str]) -> None:
    stories = []
    for _ in range(n):
        sentences = [
            " ".join(rng.choice(words) for _ in range(rng.randint(5, 12))).capitalize() + "."
            for _ in range(rng.randint(3, 6))
        ]
        stories.append("Once upon a time " + " ".join(sentences))
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    """Runs every quick-start command but the TUI in a fresh folder; (folder, commands,
    {program/subcommand: CompletedProcess})."""
    here = tmp_path_factory.mktemp("quick-start")
    rng = random.Random(25)
    words = sorted({_word(rng) for _ in range(6000)})
    write_stories(here / "my-stories.txt", 1500, rng, words)
    write_stories(here / "my-held-out.txt", 40, rng, words)
    base = tmp_path_factory.getbasetemp()
    env = {
        **os.environ,
        "SLM_SHARDS_DIR": str(here / "shards"),
        "SLM_TUI_CACHE_DIR": str(base / "cache"),  # the speed probe's cache, not the user's
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    commands = quick_start_commands()
    results = {}
    for line in commands:
        argv = shlex.split(line)
        if argv[0] == "make":
            assert argv == ["make", "setup"], line  # the suite runs inside the set-up .venv
            continue
        assert argv[0].startswith(VENV_BIN), f"{line!r}: not a .venv/bin/ command"
        program = argv[0][len(VENV_BIN) :]
        if program == "slm-tui":
            continue  # interactive: test_quick_start_opens_the_model_in_the_tui
        argv[0] = str(BIN / program)
        sub = argv[1] if program == "slm-train" else ""
        argv += QUICK_OVERRIDES.get(sub, [])
        proc = subprocess.run(argv, cwd=here, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        results[f"{program} {sub}".strip()] = proc
    return here, commands, results


def test_the_quick_start_is_six_commands_from_setup_to_the_tui():
    commands = quick_start_commands()
    assert commands[0] == "make setup" and commands[-1].startswith(f"{VENV_BIN}slm-tui ")
    assert len(commands) <= 7
    # every command after setup is one a fresh clone has after `make setup`
    assert all(c.startswith(VENV_BIN) for c in commands[1:]), commands


def test_quick_start_commands_run_as_typed(quick_start):
    here, _, results = quick_start
    for name, proc in results.items():
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr, (name, proc.stderr[-3000:])

    tokenizer = results["slm-train tokenizer"]
    assert Path(tokenizer.stdout.strip()) == here / "tokenizers" / "mine"
    assert "vocab size     4,096" in tokenizer.stderr

    model = results["slm-train model"]
    lines = model.stderr.splitlines()
    assert lines[0].startswith("training tiny: ") and "on " in lines[0]
    assert any(line.startswith("step 12/12 (100%)") for line in lines), model.stderr
    assert lines[-1].startswith("finished at step 12/12: ")
    assert lines[-1].endswith("checkpoints in runs/mine")
    assert len(lines) < 40, model.stderr  # short: no resolved config on screen
    for part in ("config.yaml", "metrics.jsonl", "best/model.safetensors"):
        assert (here / "runs" / "mine" / part).is_file(), part

    evaluation = results["slm-train eval"]
    assert "eval of runs/mine/best" in evaluation.stdout
    assert re.search(r"bits per byte\s+[│|]\s+\d+\.\d{4}", evaluation.stdout), evaluation.stdout
    assert re.search(r"corpus\s+[│|]\s+my-held-out\.txt\s", evaluation.stdout), evaluation.stdout

    story = results["slm-generate"].stdout
    # The story is printed after its prompt. Its continuation may be empty: the README's
    # command draws a fresh seed each run, and a 12-step model ends a story at its first
    # token (EOS) now and then (seen once in a full run of the suite).
    assert story.startswith("Once upon a time") and story.endswith("\n")


async def test_quick_start_opens_the_model_in_the_tui(quick_start, tui_env, monkeypatch):
    from textual.app import App

    from slm_tui.cli.tui import app as tui_cli

    here, commands, _ = quick_start
    argv = shlex.split(commands[-1])
    assert argv[0] == f"{VENV_BIN}slm-tui"
    built: list[App] = []
    monkeypatch.setattr(App, "run", lambda self, *a, **k: built.append(self))
    monkeypatch.chdir(here)  # the README's paths are relative to where the commands ran
    res = CliRunner().invoke(tui_cli, argv[1:])
    assert res.exit_code == 0, res.output
    (app,) = built
    async with app.run_test(size=(100, 30)) as pilot:
        start = time.monotonic()
        while app.loaded is None or not app.scanned:
            assert time.monotonic() - start < 60, "the quick start's checkpoint never loaded"
            await pilot.pause(0.05)
        assert app.loaded_path.resolve() == (here / "runs" / "mine" / "best").resolve()
        assert app.loaded.info.step == 12
