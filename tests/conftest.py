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
def _few_threads(monkeypatch):
    # CI has 2 cores; keep each test's torch from oversubscribing them.
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
