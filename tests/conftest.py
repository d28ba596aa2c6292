"""Shared fixtures. Real TinyStories text is read from ../shared/data/tinystories (or
$SLM_TINYSTORIES_DIR) and tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tinystories_dir() -> Path | None:
    env = os.environ.get("SLM_TINYSTORIES_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "tinystories")
    for c in candidates:
        if (c / "train.txt").is_file() and (c / "valid.txt").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def tinystories_dir() -> Path:
    d = _tinystories_dir()
    if d is None:
        pytest.skip("real TinyStories text not found (../shared/data/tinystories)")
    return d


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    # Nothing is downloaded in tests: the hub is off, local files stand in for datasets.
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The speed probe's results (and inductor's kernels) go to the session's own folder.
    monkeypatch.setenv("SLM_TUI_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


# ---- a real tiny checkpoint (model + checkpoints helper) ----------------------------------
_NAMES = ["Lily", "Tom", "Max", "Sue", "Ben", "Mia"]
_THINGS = ["ball", "dog", "tree", "cake", "boat", "kite", "cat", "hat"]
_VERBS = ["saw", "liked", "found", "wanted", "lost", "made"]
_ENDS = ["It was fun.", "They were happy.", "She smiled.", "He laughed.", "The end."]


def _synthetic_stories(n: int, seed: int = 0) -> list[str]:
    """Small TinyStories-like documents with newlines, for training a tokenizer in tests."""
    import random

    rng = random.Random(seed)
    stories = []
    for _ in range(n):
        who, what = rng.choice(_NAMES), rng.choice(_THINGS)
        lines = [
            f"Once upon a time, {who} {rng.choice(_VERBS)} a {rng.choice(['big', 'red', 'little'])} {what}.",
            f'"Look at the {what}!" said {who}.',
            rng.choice(_ENDS),
        ]
        stories.append("\n".join(lines))
    return stories


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real, loadable checkpoint: a sentencepiece-bpe tokenizer (vocab 384) trained on 300
    synthetic stories, and a random-init GPT (2 layers, d_model 64, 4 heads, context 64).
    Its parent folder is a checkpoints root holding only this one. Do not modify it."""
    import torch

    from slm_tui.checkpoint.io import save_checkpoint
    from slm_tui.config import Config, ModelConfig
    from slm_tui.model import GPT
    from slm_tui.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("tiny-checkpoint")
    tok = train_tokenizer(
        "sentencepiece-bpe", _synthetic_stories(300), 384, root / "tokenizer", num_threads=1
    )
    cfg = Config()
    cfg.model = ModelConfig(
        vocab_size=tok.vocab_size, context_length=64, n_layer=2, n_head=4, d_model=64
    )
    torch.manual_seed(0)
    model = GPT(cfg.model)
    meta = {"step": 0, "tokens_seen": 0, "val_loss": None, "val_bpb": None}
    return save_checkpoint(root / "checkpoints" / "tiny-random", model, cfg, tok, meta)


# ---- the TUI (tui helper) ------------------------------------------------------------------
@pytest.fixture(scope="session")
def tui_checkpoints(tiny_checkpoint, tmp_path_factory) -> Path:
    """A checkpoints root for the TUI: two loadable copies of the tiny checkpoint ("alpha",
    "beta") and a "corrupt" one whose weights file is garbage. Do not modify it."""
    import shutil

    root = tmp_path_factory.mktemp("tui") / "checkpoints"
    for name in ("alpha", "beta", "corrupt"):
        shutil.copytree(tiny_checkpoint, root / name)
    (root / "corrupt" / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 8)
    return root


@pytest.fixture
def tui_env(tmp_path, monkeypatch) -> Path:
    """Per-test data and config folders for the TUI (history, preferences, keys.yaml), with
    remembered sampling settings of 24 new tokens so stories finish fast on 2 loaded cores."""
    import json

    monkeypatch.setenv("SLM_TUI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SLM_TUI_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "data").mkdir()
    prefs = {"sampling": {"max_new_tokens": 24}}
    (tmp_path / "data" / "settings.json").write_text(json.dumps(prefs))
    return tmp_path
