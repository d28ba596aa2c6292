"""Hostile `slm-train export` and `import` arguments and folders (reliability probe, turn 3):

- export never writes over what it reads: an `--output` that is the checkpoint, lies inside
  it, or holds it (the run folder of `latest/`), seen through a symlink too, is one line and
  exit code 2 with `--force` given, and nothing on disk changes;
- import refuses a RoPE base that is NaN, infinite, zero or negative (and so does any
  config: `--set model.rope_theta=-5`), reads tokenizer.json and the JSON files transformers
  reads with a size bound checked before anything reads them, and meets deeply nested JSON
  (config.json, model.safetensors.index.json, tokenizer.json, tokenizer_config.json) and a
  FIFO with one line, not a RecursionError traceback or a hang.

Every folder is built by the test from the tiny checkpoint (conftest) and its own HF export.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slm_tui.cli.train import app
from slm_tui.errors import ConfigError
from slm_tui.presets import load_config

BIN = Path(sys.executable).parent


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root`: file contents' sha1, symlink targets, folders."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha1(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


# ---- export onto its own source ------------------------------------------------------------
@pytest.fixture
def run(tiny_checkpoint, tmp_path) -> Path:
    """tmp/work/run/{latest,best}: a run folder holding two copies of the tiny checkpoint."""
    folder = tmp_path / "work" / "run"
    for kind in ("latest", "best"):
        shutil.copytree(tiny_checkpoint, folder / kind)
    (folder / "latest" / "trainer_state.pt").write_bytes(b"the optimizer state: keep me")
    return folder


OVERLAPS = {
    # name: (--checkpoint, --output, --format, words of the refusal), relative to tmp/work
    "output is the checkpoint": ("run/latest", "run/latest", "slm", "is the checkpoint"),
    "hf onto the checkpoint": ("run/latest", "run/latest", "hf", "is the checkpoint"),
    "output inside it": ("run/latest", "run/latest/tokenizer", "slm", "is inside the checkpoint"),
    "gguf inside it": ("run/latest", "run/latest/model.gguf", "gguf", "is inside"),
    "output holds it": ("run/latest", "run", "slm", "holds the checkpoint"),
    "the run folder's own latest": ("run", "run/latest", "slm", "is inside the checkpoint"),
    "through a symlink": ("run/latest", "link-to-latest", "slm", "is the checkpoint"),
    "a symlink to the run": ("run/latest", "link-to-run", "hf", "holds the checkpoint"),
    "checkpoint named by a symlink": ("link-to-latest", "run/latest", "slm", "is the checkpoint"),
}


@pytest.mark.parametrize("case", OVERLAPS)
def test_export_refuses_an_output_that_overlaps_its_checkpoint_even_with_force(case, run):
    work = run.parent
    (work / "link-to-latest").symlink_to(run / "latest")
    (work / "link-to-run").symlink_to(run)
    before = tree(work)
    checkpoint, output, fmt, words = OVERLAPS[case]
    res = invoke("export", "--checkpoint", work / checkpoint, "--output", work / output,
                 "--format", fmt, "--force")  # fmt: skip
    one_error_line(res, words, str(work / output))
    assert tree(work) == before  # nothing written, nothing replaced, nothing left behind


def test_export_beside_its_checkpoint_still_works(run):
    work = run.parent
    # A sibling whose name starts like the checkpoint's is not inside it.
    res = invoke("export", "--checkpoint", run / "latest", "--output", run / "latest-slim")
    assert res.exit_code == 0, res.output
    assert (run / "latest-slim" / "model.safetensors").is_file()
    assert (run / "latest" / "trainer_state.pt").read_bytes() == b"the optimizer state: keep me"
    res = invoke("export", "--checkpoint", run / "latest", "--output", work / "elsewhere",
                 "--format", "hf")  # fmt: skip
    assert res.exit_code == 0, res.output


# ---- import: the RoPE base ------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf(tiny_checkpoint, tmp_path_factory) -> Path:
    pytest.importorskip("transformers")  # what import checks the tokenizer against
    dest = tmp_path_factory.mktemp("hostile-hf") / "hf"
    res = invoke("export", "--checkpoint", tiny_checkpoint, "--output", dest, "--format", "hf")
    assert res.exit_code == 0, res.output
    return dest


@pytest.fixture
def folder(hf, tmp_path) -> Path:
    copy = tmp_path / "hf"
    shutil.copytree(hf, copy)
    return copy


def set_rope_theta(folder: Path, raw: str) -> None:
    """rope_theta as raw JSON text (NaN and Infinity are what Python's json writes)."""
    config = json.loads((folder / "config.json").read_text())
    config["rope_theta"] = config["rope_parameters"]["rope_theta"] = "@@"
    (folder / "config.json").write_text(json.dumps(config).replace('"@@"', raw))


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "0", "-5.0", "1e999"])
def test_import_refuses_a_rope_base_that_is_not_a_positive_finite_number(folder, tmp_path, raw):
    set_rope_theta(folder, raw)
    dest = tmp_path / "out"
    one_error_line(invoke("import", "--from", "hf", folder, "--output", dest), "rope_theta")
    assert not dest.exists()


def test_import_keeps_an_ordinary_rope_base(folder, tmp_path):
    set_rope_theta(folder, "500000.0")
    res = invoke("import", "--from", "hf", folder, "--output", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "rope_theta: 500000.0" in (tmp_path / "out" / "config.yaml").read_text()


@pytest.mark.parametrize("value", ["-5", "0", "0.5", ".nan", ".inf", "1e999"])
def test_config_refuses_a_rope_base_that_would_train_into_nan(value):
    with pytest.raises(ConfigError, match=r"model\.rope_theta must be"):
        load_config("tiny", [f"model.rope_theta={value}"])


def test_slm_train_model_refuses_a_negative_rope_base_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    res = invoke("model", "--config", "tiny", "--set", "model.rope_theta=-5", "--output", out,
                 "--data-files", tmp_path / "missing.txt")  # fmt: skip
    one_error_line(res, "model.rope_theta must be at least 1")
    assert not out.exists()


# ---- import: bounded, flat JSON -------------------------------------------------------------
def sparse(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)  # no disk used, no memory: a reader that reads it whole would


def deep(path: Path, depth: int = 200_000, prefix: str = '{"x": ') -> None:
    path.write_text(prefix + "[" * depth + "]" * depth + "}")


def no_sentencepiece(folder: Path) -> None:
    (folder / "tokenizer.model").unlink()


HOSTILE = {
    # name: (damage, words of the refusal)
    "tokenizer.json of 2 GiB": (lambda f: sparse(f / "tokenizer.json", 2 << 30),
                                ["tokenizer.json is 2,147,483,648 bytes; more than"]),
    "tokenizer.json of 2 GiB, no SentencePiece model": (
        lambda f: (no_sentencepiece(f), sparse(f / "tokenizer.json", 2 << 30)),
        ["tokenizer.json is 2,147,483,648 bytes"]),
    "tokenizer_config.json of 1 GiB": (lambda f: sparse(f / "tokenizer_config.json", 1 << 30),
                                       ["tokenizer_config.json is 1,073,741,824 bytes"]),
    "special_tokens_map.json of 1 GiB": (
        lambda f: sparse(f / "special_tokens_map.json", 1 << 30), ["special_tokens_map.json"]),
    "config.json nested 200,000 deep": (
        lambda f: deep(f / "config.json", prefix='{"model_type": "llama", "x": '),
        ["config.json is corrupt (nested too deeply"]),
    "index nested 100,000 deep": (
        lambda f: ((f / "model.safetensors").unlink(),
                   deep(f / "model.safetensors.index.json", 100_000, '{"weight_map": ')),
        ["model.safetensors.index.json is corrupt (nested too deeply"]),
    "tokenizer.json nested, no SentencePiece model": (
        lambda f: (no_sentencepiece(f), deep(f / "tokenizer.json")),
        ["tokenizer.json is corrupt (nested too deeply"]),
    "tokenizer_config.json nested": (lambda f: deep(f / "tokenizer_config.json"),
                                     ["tokenizer_config.json is corrupt (nested too deeply"]),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE)
def test_import_reads_json_bounded_and_refuses_deep_nesting_in_one_line(case, folder, tmp_path):
    damage, words = HOSTILE[case]
    damage(folder)
    dest = tmp_path / "out"
    one_error_line(invoke("import", "--from", "hf", folder, "--output", dest), *words)
    assert not dest.exists()


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json"])
def test_import_refuses_a_fifo_where_transformers_would_read_a_file(folder, tmp_path, name):
    # A real process: a reader that opens the FIFO would wait forever (timeout = failure).
    (folder / name).unlink()
    os.mkfifo(folder / name)
    dest = tmp_path / "out"
    proc = subprocess.run([str(BIN / "slm-train"), "import", "--from", "hf", str(folder),
                           "--output", str(dest)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{name} is not a regular file" in lines[0], proc.stderr
    assert not dest.exists()
