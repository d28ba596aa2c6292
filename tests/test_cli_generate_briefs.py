"""`slm-generate` with briefs: --words/--name/--features, JSONL prompt rows with their own
`brief`, output rows that carry it, one-line errors (exit 2) for a brief that cannot be one,
one-line warnings for a model trained without briefs and for words its tokenizer splits
badly, and --server sending the brief. A real tiny checkpoint (conftest.py; trained without
briefs) and a real loopback server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from slm_tui.briefs import Brief, format_brief
from slm_tui.cli.generate import app
from tests.test_serve import Running

runner = CliRunner()
FAST = ["--max-new-tokens", "12", "--ignore-eos", "--seed", "3"]
FLAGS = ["--words", "dog,cake", "--name", "Lily", "--features", "dialogue"]
BRIEF = Brief(("dog", "cake"), "Lily", ("dialogue",))


def run(*args, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_brief_flags_reach_the_model_and_the_output_carries_them(tiny_checkpoint):
    args = ["--checkpoint", tiny_checkpoint, "--format", "jsonl", *FAST]
    done = run(*args, "--prompt", "Once", "--prompt", "Tom", *FLAGS)
    assert done.exit_code == 0, done.output
    rows = _rows(done.stdout)
    assert [r["prompt"] for r in rows] == ["Once", "Tom"]  # the story's prompt, no block
    for r in rows:
        assert r["brief"] == BRIEF.to_dict() == r["settings"]["brief"]
    by_hand = run(*args, "--prompt", format_brief(BRIEF) + "Once")
    alone = run(*args, "--prompt", "Once", *FLAGS, "--brief-strength", "0")  # the guide off
    assert _rows(by_hand.stdout)[0]["text"] == _rows(alone.stdout)[0]["text"]
    assert _rows(alone.stdout)[0]["settings"]["brief_strength"] == 0
    # said once, not per story: this model was trained without briefs
    assert done.stderr.count("trained without briefs") == 1
    said = [line for line in done.stderr.splitlines() if line.strip()]  # (the bar's blank)
    assert len(said) == 1 and said[0].startswith("warning:")
    text = run("--checkpoint", tiny_checkpoint, *FAST, "--prompt", "Once", *FLAGS)
    assert text.stdout == "Once" + rows[0]["text"] + "\n"
    streamed = run("--checkpoint", tiny_checkpoint, *FAST, "--prompt", "Once", *FLAGS, "--stream")
    assert streamed.exit_code == 0 and streamed.stdout == text.stdout


def test_jsonl_rows_bring_their_own_briefs(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"prompt": "Once", "brief": {"words": ["ball"], "name": "Tom"}},
        {"prompt": "Once"},  # the flags' brief
        {"prompt": "Once", "brief": {}},  # none
        {"prompt": "Once", "brief": None},  # the flags' brief
    ]
    prompts.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    base = ["--checkpoint", tiny_checkpoint, "--format", "jsonl", *FAST]
    done = run(*base, "--prompts", prompts, "--words", "cake")
    assert done.exit_code == 0, done.output
    rows = _rows(done.stdout)
    cake = {"words": ["cake"], "name": None, "features": []}
    assert [r["brief"] for r in rows] == [
        {"words": ["ball"], "name": "Tom", "features": []}, cake, None, cake
    ]  # fmt: skip
    for r in rows:  # each row is the story its prompt and brief write alone
        brief = ["--words", ",".join(r["brief"]["words"])] if r["brief"] else []
        name = ["--name", r["brief"]["name"]] if r["brief"] and r["brief"]["name"] else []
        alone = run(*base[:-1], str(r["seed"]), "--prompt", "Once", *brief, *name)
        assert _rows(alone.stdout)[0]["text"] == r["text"]
    from_stdin = run(*base, "--words", "cake", input=prompts.read_text(encoding="utf-8"))
    assert from_stdin.stdout == done.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--features", "funny"], "--features: unknown brief feature 'funny'; known: dialogue"),
        (["--words", "a,b,c,d,e,f,g"], "--words: a brief holds at most 6 words, got 7"),
        (["--words", "dog cake"], "--words: brief word 'dog cake' must be one word of letters"),
        (["--words", "dog,,cake"], "--words: brief word 2 is empty"),
        (["--words", "dog2"], "must be one word of letters only"),
        (["--name", "lily"], "--name: brief name 'lily' must be one capitalised word"),
    ],
    ids=["feature", "too-many", "two-words", "empty", "digits", "name"],
)
def test_a_brief_that_cannot_be_one_is_a_one_line_error(tiny_checkpoint, tmp_path, args, needle):
    out = tmp_path / "out.jsonl"
    result = run("--checkpoint", tiny_checkpoint, "--prompt", "Once", *args, "--output", out)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert needle in result.stderr
    assert not out.exists()


def test_a_bad_brief_in_a_prompts_file_names_its_line(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "a"}, {"prompt": "b", "brief": {"features": ["twist"]}}]
    prompts.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    result = run("--checkpoint", tiny_checkpoint, "--prompts", prompts)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"{prompts} line 2: unknown brief feature 'twist'" in result.stderr
    prompts.write_text('{"prompt": "a", "brief": ["dog"]}\n', encoding="utf-8")
    result = run("--checkpoint", tiny_checkpoint, "--prompts", prompts)
    assert result.exit_code == 2 and "line 1: a brief must be an object" in result.stderr


def test_words_the_tokenizer_splits_badly_are_a_warning(tiny_checkpoint):
    result = run("--checkpoint", tiny_checkpoint, "--prompt", "Once", *FAST,
                 "--words", "dog,xylophone,ñandú")  # fmt: skip
    assert result.exit_code == 0 and result.stdout.startswith("Once")
    lines = result.stderr.splitlines()
    assert all(line.startswith("warning:") for line in lines) and len(lines) == 3
    assert "brief word 'xylophone' is" in lines[1] and "tokens" in lines[1]
    assert "brief word 'ñandú' is spelled in bytes" in lines[2]
    assert "'dog'" not in result.stderr


def test_slm_generate_on_a_server_sends_the_brief(tiny_checkpoint):
    served = Running(tiny_checkpoint, max_batch=4, max_tokens_cap=100)
    try:
        common = ["--prompt", "Once", "--format", "jsonl", *FAST, *FLAGS]
        remote = run("--server", served.url, *common)
        local = run("--checkpoint", tiny_checkpoint, "--device", "cpu", *common)
        assert remote.exit_code == 0, remote.output
        (r,), (w,) = _rows(remote.stdout), _rows(local.stdout)
        assert (r["text"], r["brief"]) == (w["text"], w["brief"])
        assert "trained without briefs" not in remote.stderr  # a server does not say
    finally:
        served.close()


def test_a_brief_alone_writes_a_story_without_a_prompt(tiny_checkpoint):
    """The README's `slm-generate --words dragon,cake --name Max ...`: no prompt anywhere
    (nothing piped) writes the story from the brief alone, as `--prompt ""` does; without
    a brief, no prompt stays an error."""
    args = ["--checkpoint", tiny_checkpoint, "--format", "jsonl", *FAST, *FLAGS]
    alone = run(*args, input="")
    assert alone.exit_code == 0, alone.output
    given = run(*args, "--prompt", "")
    assert _rows(alone.stdout) == _rows(given.stdout)
    assert _rows(alone.stdout)[0]["prompt"] == ""
    none = run("--checkpoint", tiny_checkpoint, *FAST, input="")
    assert none.exit_code == 2 and "holds no prompts" in none.output
