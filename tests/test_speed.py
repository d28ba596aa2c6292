"""train.dtype / train.compile auto: what the machine's flags decide, the measured probe and
its cache, explicit values winning, and the math-attention training graph."""

from __future__ import annotations

import json
import os

import pytest
import torch

from slm_tui.config import ModelConfig
from slm_tui.model import GPT
from slm_tui.presets import load_config
from slm_tui.trainer import speed
from slm_tui.trainer.step import LossOnly

CPU = torch.device("cpu")
SMALL = ModelConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, d_model=16)


def _tc(*overrides: str):
    return load_config("tiny", list(overrides)).train


def test_amx_picks_bf16_with_math_attention_and_compile_only_for_long_runs():
    amx = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    short = speed.choose(_tc(), CPU, SMALL, 4, 20, flags=amx)
    assert (short.dtype, short.compile, short.math_attention) == ("bfloat16", False, True)
    assert "AMX-BF16 in the CPU flags" in short.why and "20 steps are too few" in short.why
    long = speed.choose(_tc(), CPU, SMALL, 4, 5000, flags=amx)
    if speed.cxx_compiler():
        assert long.compile and "5,000 steps repay compiling" in long.why
    else:
        assert not long.compile and "no C++ compiler" in long.why
    assert long.describe().startswith("bf16 autocast + ")


def test_no_bf16_instructions_picks_float32_without_measuring(monkeypatch, tmp_path):
    monkeypatch.setenv("SLM_TUI_CACHE_DIR", str(tmp_path / "cache"))
    choice = speed.choose(_tc(), CPU, SMALL, 4, 20, flags=frozenset({"avx2", "fma"}))
    assert (choice.dtype, choice.math_attention) == ("float32", False)
    assert "no bf16 instructions" in choice.why
    assert not (tmp_path / "cache").exists()  # nothing measured, nothing cached


def test_explicit_values_win():
    amx = frozenset({"amx_bf16"})
    choice = speed.choose(_tc("train.dtype=float32", "train.compile=false"), CPU, SMALL, 4,
                          10_000, flags=amx)  # fmt: skip
    assert (choice.dtype, choice.compile, choice.math_attention) == ("float32", False, False)
    assert choice.why == "train.dtype float32; train.compile false"
    forced = speed.choose(_tc("train.dtype=bfloat16"), CPU, SMALL, 4, 1, flags=frozenset())
    assert forced.dtype == "bfloat16" and forced.math_attention


def test_inconclusive_flags_are_measured_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("SLM_TUI_CACHE_DIR", str(tmp_path / "cache"))
    zen4 = frozenset({"avx512f", "avx512_bf16"})
    first = speed.choose(_tc(), CPU, SMALL, 4, 20, flags=zen4)
    assert "AVX512-BF16: measured bf16" in first.why and "(cached)" not in first.why
    cache = json.loads((tmp_path / "cache" / speed.PROBE_FILE).read_text())
    (entry,) = cache.values()
    assert entry["float32"] > 0 and entry["bfloat16"] > 0
    want = "bfloat16" if entry["float32"] > entry["bfloat16"] * speed.PROBE_MARGIN else "float32"
    assert first.dtype == want
    again = speed.choose(_tc(), CPU, SMALL, 4, 20, flags=zen4)
    assert again.dtype == first.dtype and "(cached)" in again.why
    # Unknown flags (no /proc/cpuinfo) are measured too; a torn cache file is measured again.
    (tmp_path / "cache" / speed.PROBE_FILE).write_text("{not json")
    unknown = speed.choose(_tc(), CPU, SMALL, 4, 20, flags=None)
    assert "unknown CPU flags: measured" in unknown.why and "(cached)" not in unknown.why
    assert json.loads((tmp_path / "cache" / speed.PROBE_FILE).read_text())


def test_the_probe_leaves_the_global_rng_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("SLM_TUI_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    speed.probe("test cpu", frozenset({"avx512_bf16"}), SMALL, 2)
    assert torch.equal(torch.get_rng_state(), before)


def test_math_attention_trains_the_same_loss():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, context_length=16, n_layer=2, n_head=2, d_model=32))
    idx = torch.randint(0, 64, (3, 17))
    x, y = idx[:, :-1], idx[:, 1:]
    flash, math_ = LossOnly(model)(x, y), LossOnly(model, math_attention=True)(x, y)
    assert math_.item() == pytest.approx(flash.item(), abs=1e-5)


def test_compiled_runs_keep_inductor_kernels_in_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SLM_TUI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    speed.use_inductor_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    speed.use_inductor_cache()  # a user's own setting wins
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"
