"""`slm-train tokenizer` and `slm-train data` as a user runs them: exit codes, the summary,
the output path on stdout, `--force`, and a one-line error (exit 2, no traceback) for every
bad input."""

from __future__ import annotations

import json

import pytest
import typer
from test_tokenizers import make_stories
from typer.testing import CliRunner

from slm_tui.cli import train_data, train_tokenizer
from slm_tui.shards import load_shard
from slm_tui.tokenizers import load_tokenizer

# The two commands on their own app, as cli/train.py registers them, so these tests do not
# depend on the model-training commands.
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("tokenizer")(train_tokenizer.tokenizer)
app.command("data")(train_data.data)
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in result.output


def write_txt(path, stories):
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLM_SHARDS_DIR", str(tmp_path / "cache"))


@pytest.fixture()
def corpus(tmp_path):
    return write_txt(tmp_path / "corpus.txt", make_stories(400, seed=4))


@pytest.fixture()
def tok_dir(corpus, tmp_path):
    res = run("tokenizer", "--data-files", corpus, "--vocab-size", 400, "--output", tmp_path / "t")
    assert res.exit_code == 0, res.output
    return tmp_path / "t"


def test_tokenizer_default_output_and_summary(corpus, tmp_path) -> None:
    res = run("tokenizer", "--data-files", corpus, "--vocab-size", 400)
    assert res.exit_code == 0, res.output
    out = tmp_path / "tokenizers" / "sentencepiece-bpe-400"
    assert res.stdout.strip() == str(out)
    for word in ("vocab size", "400", "bytes / token", "time", "output"):
        assert word in res.stderr
    tok = load_tokenizer(out)
    assert tok.vocab_size == 400 and tok.decode(tok.encode("Lily ran.\n\nThe end")) == (
        "Lily ran.\n\nThe end"
    )


def test_tokenizer_several_files_after_one_flag_and_kinds(tmp_path) -> None:
    a = write_txt(tmp_path / "a.txt", make_stories(200, seed=5))
    b = write_txt(tmp_path / "b.txt", make_stories(200, seed=6))
    res = run("tokenizer", "--data-files", a, b, "--kind", "sentencepiece-unigram",
              "--vocab-size", 400)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert load_tokenizer("tokenizers/sentencepiece-unigram-400").kind == "sentencepiece-unigram"
    res = run("tokenizer", "--data-files", a, "--kind", "byte")
    assert res.exit_code == 0, res.output
    assert load_tokenizer("tokenizers/byte-260").vocab_size == 260


def test_tokenizer_refuses_to_overwrite_without_force(corpus, tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    res = run("tokenizer", "--data-files", corpus, "--vocab-size", 400, "--output", out)
    assert_error(res, "already exists; use --force")
    assert (out / "precious.txt").read_text() == "keep me"
    res = run("tokenizer", "--data-files", corpus, "--vocab-size", 400, "--output", out, "--force")
    assert res.exit_code == 0, res.output
    assert load_tokenizer(out).vocab_size == 400


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--kind", "wordpiece"], "unknown tokenizer kind 'wordpiece'; known kinds: byte,"),
        (["--vocab-size", "50"], "vocab size 50 is too small"),
        (["--vocab-size", "60000"], "vocab size 60000 is too large"),
    ],
    ids=["unknown-kind", "vocab-too-small", "vocab-too-large"],
)
def test_tokenizer_bad_arguments(corpus, args, pattern) -> None:
    assert_error(run("tokenizer", "--data-files", corpus, *args), pattern)


def _made(path, content: bytes | None = None, directory: bool = False):
    if directory:
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("command", ["tokenizer", "data"])
@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda d: _made(d / "missing.txt"), "no such file"),
        (lambda d: _made(d / "folder", directory=True), "is a directory"),
        (lambda d: _made(d / "empty.txt", b""), "corpus is empty"),
        (lambda d: _made(d / "bad.txt", b"Hello\n\xe9t\xe9\n"), "invalid UTF-8 at byte 6"),
        (lambda d: d / "*.parquet", "no files match"),
    ],
    ids=["missing", "directory", "empty", "invalid-utf8", "glob-matches-nothing"],
)
def test_bad_data_files(command, make, pattern, tmp_path, tok_dir) -> None:
    path = make(tmp_path)
    extra = ["--tokenizer", tok_dir] if command == "data" else []
    assert_error(run(command, "--data-files", path, *extra), pattern)


def test_unreachable_hub_says_use_data_files(monkeypatch, tok_dir) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert_error(run("tokenizer", "--dataset", "roneneldan/TinyStories"), "use --data-files")
    assert_error(run("data", "--tokenizer", tok_dir), "use --data-files")


def test_data_writes_shards_then_is_cached(corpus, tok_dir, tmp_path) -> None:
    res = run("data", "--data-files", corpus, "--tokenizer", tok_dir, "--val-fraction", "0.1")
    assert res.exit_code == 0, res.output
    out = res.stdout.strip()
    assert out.startswith(str(tmp_path / "cache"))
    for word in ("train", "val", "uint16", "bytes / token", "stories/s", "MB/s"):
        assert word in res.stderr
    train = load_shard(f"{out}/train.bin")
    assert (
        train.num_stories == 360
        and train.meta["tokenizer_fingerprint"]
        == json.loads((tok_dir / "tokenizer.json").read_text())["fingerprint"]
    )
    again = run("data", "--data-files", corpus, "--tokenizer", tok_dir, "--val-fraction", "0.1")
    assert again.exit_code == 0 and again.stdout.strip() == out
    assert "cached" in again.stderr


def test_data_output_dir_needs_force_for_other_shards(corpus, tok_dir, tmp_path) -> None:
    out = tmp_path / "shards"
    assert (
        run("data", "--data-files", corpus, "--tokenizer", tok_dir, "--output", out).exit_code == 0
    )
    other = write_txt(tmp_path / "other.txt", make_stories(300, seed=9))
    res = run("data", "--data-files", other, "--tokenizer", tok_dir, "--output", out)
    assert_error(res, "already holds files")
    assert load_shard(out / "train").meta["source"] == str(corpus)  # untouched
    res = run("data", "--data-files", other, "--tokenizer", tok_dir, "--output", out, "--force")
    assert res.exit_code == 0, res.output
    assert load_shard(out / "train").meta["source"] == str(other)


def test_data_bad_tokenizer_dirs(corpus, tok_dir, tmp_path) -> None:
    assert_error(
        run("data", "--data-files", corpus, "--tokenizer", tmp_path / "nope"),
        "no such tokenizer directory",
    )
    (tok_dir / "spm.model").write_bytes(b"garbage")
    assert_error(
        run("data", "--data-files", corpus, "--tokenizer", tok_dir), "do not match the fingerprint"
    )
    (tmp_path / "plain").mkdir()
    assert_error(
        run("data", "--data-files", corpus, "--tokenizer", tmp_path / "plain"),
        "not a tokenizer directory",
    )


def test_data_bad_val_fraction(corpus, tok_dir) -> None:
    res = run("data", "--data-files", corpus, "--tokenizer", tok_dir, "--val-fraction", "0.9")
    assert_error(res, "validation fraction must be in (0, 0.5)")


@pytest.mark.realdata
def test_real_tinystories_tokenizer_compresses(tinystories_dir, tmp_path) -> None:
    res = run(
        "tokenizer", "--data-files", tinystories_dir / "train.txt", "--output", tmp_path / "ts"
    )
    assert res.exit_code == 0, res.output
    tok = load_tokenizer(tmp_path / "ts")
    valid = (tinystories_dir / "valid.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in valid.split("<|endoftext|>") if s.strip()]
    n_tokens = sum(len(ids) for ids in tok.encode_batch(stories))
    assert sum(len(s.encode()) for s in stories) / n_tokens >= 3.9
