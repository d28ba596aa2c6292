"""`slm-generate` on a real tiny checkpoint: stories on stdout, JSONL, prompts from files and
stdin, atomic --output, --stream, and every bad input as a one-line error with exit code 2
and no partial output file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slm_tui.cli.generate import app

runner = CliRunner()
FAST = ["--max-new-tokens", "12"]


def run(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_prompt_prints_a_story_and_one_seed_reproduces_it(tiny_checkpoint):
    # A random model: seed 2 happens not to draw EOS first (the reproducibility is the point).
    args = ["--checkpoint", tiny_checkpoint, "--prompt", "Once upon a time", "--seed", "2", *FAST]
    first, second = run(*args), run(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("Once upon a time")
    assert len(first.stdout) > len("Once upon a time\n")
    assert first.stdout == second.stdout
    assert first.stderr == ""  # nothing but the story on a single-prompt run


def test_prompts_file_jsonl_output_one_line_per_prompt_and_sample(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\n\nTom had a ball\n", encoding="utf-8")
    args = ["--checkpoint", tiny_checkpoint, "--prompts", prompts, "--format", "jsonl"]
    result = run(*args, "--num-samples", "2", "--seed", "7", "--batch-size", "3", *FAST)
    assert result.exit_code == 0, result.output
    rows = _jsonl(result.stdout)
    assert [(r["prompt"], r["sample"]) for r in rows] == [
        ("Once upon a time", 0),
        ("Once upon a time", 1),
        ("Tom had a ball", 0),
        ("Tom had a ball", 1),
    ]
    assert [r["seed"] for r in rows] == [7, 8, 9, 10]
    for r in rows:
        assert r["finish_reason"] in ("eos", "stop", "length") and r["tokens"] <= 12
        assert r["settings"]["seed"] == r["seed"] and r["settings"]["max_new_tokens"] == 12
    # row j is the same story as running its prompt alone with seed 7 + j
    alone = run("--checkpoint", tiny_checkpoint, "--prompt", "Tom had a ball", "--seed", "9",
                "--format", "jsonl", *FAST)  # fmt: skip
    assert _jsonl(alone.stdout)[0]["text"] == rows[2]["text"]


def test_jsonl_prompts_file_and_stdin(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "Lily saw"}, {"prompt": "", "id": 3}]
    prompts.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    base = ["--checkpoint", tiny_checkpoint, "--format", "jsonl", "--seed", "3", *FAST]
    from_file = run(*base, "--prompts", prompts)
    assert from_file.exit_code == 0, from_file.output
    assert [r["prompt"] for r in _jsonl(from_file.stdout)] == ["Lily saw", ""]
    from_stdin = run(*base, input=prompts.read_text(encoding="utf-8"))
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == from_file.stdout


def test_output_file_is_written_atomically(tiny_checkpoint, tmp_path):
    out = tmp_path / "stories.jsonl"
    args = ["--checkpoint", tiny_checkpoint, "--prompt", "Tom", "--seed", "2", "--format", "jsonl"]
    result = run(*FAST, *args, "--output", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert out.read_text(encoding="utf-8") == run(*args, *FAST).stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stories.jsonl"]  # no temp leftovers


def test_stream_prints_the_same_story(tiny_checkpoint):
    args = ["--checkpoint", tiny_checkpoint, "--prompt", "The dog", "--seed", "4", *FAST]
    streamed, batched = run(*args, "--stream"), run(*args)
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == batched.stdout
    assert "tokens/s" in streamed.stderr


def test_empty_long_and_unseen_prompts_are_fine(tiny_checkpoint):
    base = ["--checkpoint", tiny_checkpoint, "--seed", "1", *FAST]
    assert run(*base, "--prompt", "").exit_code == 0
    unseen = run(*base, "--prompt", "Ψ 🦄 猫 ✨ ñ")
    assert unseen.exit_code == 0 and unseen.stdout.startswith("Ψ 🦄 猫 ✨ ñ")
    long = run(*base, "--prompt", "Once upon a time there was a dog. " * 30)
    assert long.exit_code == 0
    assert "warning" in long.stderr and "context" in long.stderr


def _write_bad_files(tmp: Path) -> None:
    (tmp / "corrupt.jsonl").write_text(
        '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c\n', encoding="utf-8"
    )
    (tmp / "nofield.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n', encoding="utf-8")
    (tmp / "binary.txt").write_bytes(b"fine\n\xff\xfe bad\n")
    (tmp / "not-a-checkpoint").mkdir()


def _bad_inputs(ckpt: Path, tmp: Path) -> dict[str, tuple[list, str]]:
    corrupt, no_field = tmp / "corrupt.jsonl", tmp / "nofield.jsonl"
    binary, empty = tmp / "binary.txt", tmp / "not-a-checkpoint"
    ok = ["--checkpoint", ckpt, "--prompt", "Tom"]
    return {
        "not a checkpoint": (["--checkpoint", empty, "--prompt", "x"], "not a checkpoint"),
        "missing checkpoint": (["--checkpoint", tmp / "nope", "--prompt", "x"], "nope"),
        "corrupt prompts file": (["--checkpoint", ckpt, "--prompts", corrupt], "line 3"),
        "prompt field missing": (["--checkpoint", ckpt, "--prompts", no_field], "line 2"),
        "not utf-8": (["--checkpoint", ckpt, "--prompts", binary], "line 2"),
        "missing prompts file": (["--checkpoint", ckpt, "--prompts", tmp / "none.txt"], "none"),
        "negative temperature": ([*ok, "--temperature", "-1"], "temperature"),
        "nonsense temperature": ([*ok, "--temperature", "hot"], "temperature"),
        "nan min-p": ([*ok, "--min-p", "nan"], "min_p"),
        "top-p above 1": ([*ok, "--top-p", "1.5"], "top_p"),
        "negative penalty": ([*ok, "--repetition-penalty", "-2"], "repetition_penalty"),
        "zero new tokens": ([*ok, "--max-new-tokens", "0"], "max_new_tokens"),
        "fractional top-k": ([*ok, "--top-k", "2.5"], "--top-k"),
        "negative seed": ([*ok, "--seed", "-5"], "seed"),
        "top-k above vocab": ([*ok, "--top-k", "100000"], "vocabulary"),
        "zero samples": ([*ok, "--num-samples", "0"], "--num-samples"),
        "zero batch": ([*ok, "--batch-size", "0"], "--batch-size"),
        "unknown format": ([*ok, "--format", "xml"], "--format"),
        "stream two prompts": ([*ok, "--prompt", "Sue", "--stream"], "--stream"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs(Path("c"), Path("/nonexistent")).keys()))
def test_bad_input_is_one_line_exit_2_and_no_output_file(case, tiny_checkpoint, tmp_path):
    _write_bad_files(tmp_path)
    args, needle = _bad_inputs(tiny_checkpoint, tmp_path)[case]
    out = tmp_path / "out.txt"
    result = run(*FAST, *args, "--output", out)
    assert result.exit_code == 2, (case, result.output)
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert not out.exists()


def test_failed_run_leaves_an_existing_output_file_alone(tiny_checkpoint, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("earlier results\n", encoding="utf-8")
    args = ["--checkpoint", tiny_checkpoint, "--prompt", "x", "--top-p", "0", "--output", out]
    assert run(*args).exit_code == 2
    assert out.read_text(encoding="utf-8") == "earlier results\n"


def test_real_command_in_a_pipeline(tiny_checkpoint):
    """The installed entry point: prompts piped in, only results on stdout."""
    script = Path(sys.executable).with_name("slm-generate")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c",
           "from slm_tui.cli.generate import main; main()"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, "--checkpoint", str(tiny_checkpoint), "--format", "jsonl", "--seed", "5", *FAST],
        input="Tom saw a cat\nMia\n", capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = _jsonl(proc.stdout)
    assert [r["prompt"] for r in rows] == ["Tom saw a cat", "Mia"]
    assert "Traceback" not in proc.stderr


def test_ignore_eos_writes_every_story_to_max_new_tokens(tiny_checkpoint):
    args = ["--checkpoint", tiny_checkpoint, "--format", "jsonl", "--max-new-tokens", "30"]
    prompts = [f"Story {i}" for i in range(12)]
    plain = _jsonl(run(*args, "--seed", "1", *[x for p in prompts for x in ("--prompt", p)]).stdout)
    assert any(r["finish_reason"] == "eos" for r in plain)  # the random model does end some
    result = run(
        *args, "--seed", "1", "--ignore-eos", *[x for p in prompts for x in ("--prompt", p)]
    )
    assert result.exit_code == 0, result.output
    rows = _jsonl(result.stdout)
    assert all(r["finish_reason"] == "length" and r["tokens"] == 30 for r in rows)
    assert all(r["settings"]["ignore_eos"] is True for r in rows)
