"""The one-row decode step in C (slm_tui/native): the same function as `GPT.forward` for every
model switch, in both weight modes (float32, and bf16 copies when the weights are bf16
values), the same greedy stories as the torch path, and a machine without a compiler falls
back to the torch path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import slm_tui.native as native
from slm_tui.decode import FusedDecoder
from slm_tui.generation import SamplingSettings, generate, generate_batch
from slm_tui.model import GPT
from tests.test_model import SWITCHES, VARIANTS, make, randomized

pytestmark = pytest.mark.skipif(
    native.unavailable() is not None, reason=f"no native step here: {native.unavailable()}"
)
DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "tinystories-demo"
GREEDY = SamplingSettings(temperature=0.0, repetition_penalty=1.0, max_new_tokens=60)


def bf16_valued(model: GPT) -> GPT:
    """Every weight rounded to a bfloat16 value (as a checkpoint stored in bf16 loads)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    return model


@pytest.mark.parametrize("weights", ["float32", "bf16"])
@pytest.mark.parametrize("switch", ["defaults", *SWITCHES, "gpt2", "gpt-neo", "plain-gelu"])
def test_native_step_matches_forward(switch: str, weights: str) -> None:
    if switch in VARIANTS:
        changes = VARIANTS[switch]
    elif switch == "plain-gelu":  # SWITCHES checks the tanh GELU; the exact one too
        changes = {"mlp": "gelu"}
    else:
        changes = {} if switch == "defaults" else {switch: SWITCHES[switch]}
    model = randomized(make(**changes)).eval()
    if weights == "bf16":
        bf16_valued(model)
    step = native.native_step(model)
    assert step is not None and step.bf16 == (weights == "bf16")
    vocab = model.cfg.vocab_size
    with torch.no_grad():
        # one row, no padding: the position is the cache length
        ids = torch.randint(0, vocab, (1, 9))
        a, b = model.new_cache(1), model.new_cache(1)
        model(ids, cache=a)
        model(ids, cache=b)
        for tok in (7, 3, 11):
            want, _ = model(torch.tensor([[tok]]), cache=a, last_only=True)
            got = step(torch.tensor([[tok]]), b)
            torch.testing.assert_close(got, want[:, -1], rtol=1e-4, atol=1e-4)
        assert a.length == b.length == 12
        torch.testing.assert_close(b.k[:, :, :, :12], a.k[:, :, :, :12], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.v[:, :, :, :12], a.v[:, :, :, :12], rtol=1e-4, atol=1e-5)
        # a row left among others' slots: 3 padding slots on its left, its own positions,
        # in row 0 of a cache with room for more rows (the strides of a shared cache)
        mask = torch.ones(1, 9, dtype=torch.bool)
        mask[0, :3] = False
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        ids = torch.randint(0, vocab, (1, 9))
        a, b = model.new_cache(1), model.new_cache(3).rows(1)
        for cache in (a, b):
            model(ids, cache=cache, positions=pos, key_mask=mask)
        full = torch.cat([mask, torch.ones(1, 1, dtype=torch.bool)], dim=1)
        want, _ = model(torch.tensor([[5]]), cache=a, positions=torch.tensor([[6]]),
                        key_mask=full, last_only=True)  # fmt: skip
        got = step(torch.tensor([[5]]), b, torch.tensor([[6]]), full)
        torch.testing.assert_close(got, want[:, -1], rtol=1e-4, atol=1e-4)


def _greedy(model, tok, prompt: str, settings: SamplingSettings = GREEDY) -> list[int]:
    return [e.token_id for e in generate(model, tok, prompt, settings) if e.kind == "token"]


def test_greedy_stories_of_the_demo_are_the_same_as_the_torch_path(monkeypatch):
    from slm_tui.checkpoint.io import load_checkpoint

    loaded = load_checkpoint(DEMO, "cpu")
    model, tok = loaded.model.eval(), loaded.tokenizer
    assert native.native_step(model).bf16  # the demo is stored in bf16: the bf16 path
    prompts = ["Once upon a time", "Tom and his dog", "The sun was hot. Lily"]
    fast = [_greedy(model, tok, p) for p in prompts]
    monkeypatch.setenv("SLM_TUI_NATIVE", "0")
    assert native.native_step(model) is None
    slow = [_greedy(model, tok, p) for p in prompts]
    assert fast == slow and all(len(ids) > 20 for ids in fast)


def test_the_decoder_uses_it_for_one_row_and_batches_agree(tiny_checkpoint):
    from slm_tui.checkpoint.io import load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint, "cpu")
    model, tok = loaded.model.eval(), loaded.tokenizer
    calls = []
    original = native.NativeStep.__call__
    native.NativeStep.__call__ = lambda self, *a: (calls.append(1), original(self, *a))[1]
    try:
        settings = GREEDY.replace(ignore_eos=True, max_new_tokens=40)
        alone = _greedy(model, tok, "Once", settings)
        assert calls  # the engine's one-row steps went through C
        (batched,) = generate_batch(model, tok, ["Once"], settings, seeds=[0])
        two = generate_batch(model, tok, ["Once", "A cat sat on"], settings, 2, seeds=[0, 1])
    finally:
        native.NativeStep.__call__ = original
    assert batched.token_ids == two[0].token_ids  # rows in C alone or in torch together
    assert alone == batched.token_ids


def test_without_a_compiler_the_torch_path_writes_the_same_story(tiny_checkpoint, monkeypatch):
    from slm_tui.checkpoint.io import load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint, "cpu")
    model, tok = loaded.model.eval(), loaded.tokenizer
    want = _greedy(model, tok, "Once upon")
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert native.native_step(model) is None
    assert "no C compiler" in native.unavailable()
    step = FusedDecoder(model)
    assert _greedy(model, tok, "Once upon") == want
    assert step._look_native and step._native is None  # not looked up until a one-row step


@pytest.mark.parametrize(
    "switch",
    ["defaults", "n_kv_head", "rope-gqa", "gpt-neo", "attention_windows", "scale_attention"],
)
def test_batched_step_attends_in_c_over_each_rows_own_slots(switch: str, monkeypatch) -> None:
    """Several rows of different lengths (the server's continuous batching): the batched
    step's attention in C reads each row's own slots and gives `GPT.forward`'s logits; the
    masked torch attention (SLM_TUI_BATCH_C=0) gives the same."""
    if switch in VARIANTS:
        changes = VARIANTS[switch]
    else:
        changes = {} if switch == "defaults" else {switch: SWITCHES[switch]}
    model = randomized(make(**changes)).eval()
    vocab = model.cfg.vocab_size
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the C loop's condition
    lengths = [9, 4, 1, 7]  # left-padded, right-aligned in shared slots, as Decoder keeps them
    width = max(lengths)
    ids = torch.randint(0, vocab, (len(lengths), width))
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for r, n in enumerate(lengths):
        mask[r, width - n :] = True
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    results = {}
    for use_c in ("1", "0"):
        monkeypatch.setenv("SLM_TUI_BATCH_C", use_c)
        step = FusedDecoder(model)
        with torch.no_grad():
            a, b = model.new_cache(len(lengths)), model.new_cache(6).rows(len(lengths))
            for cache in (a, b):
                model(ids, cache=cache, positions=pos, key_mask=mask)
            km, p = mask, pos[:, -1:]
            got = []
            for tok in (7, 3, 11):
                km = torch.cat([km, torch.ones(len(lengths), 1, dtype=torch.bool)], dim=1)
                p = p + 1
                idx = torch.full((len(lengths), 1), tok)
                want, _ = model(idx, cache=a, positions=p, key_mask=km, last_only=True)
                out = step(idx, b, p, km)
                torch.testing.assert_close(out, want[:, -1], rtol=1e-4, atol=1e-4)
                got.append(out)
        assert step._batch_c is (use_c == "1")
        results[use_c] = torch.stack(got)
    torch.testing.assert_close(results["1"], results["0"], rtol=1e-4, atol=1e-4)


def test_batched_step_keeps_the_masked_attention_for_rows_with_holes(monkeypatch) -> None:
    """A key mask with a hole inside a row (not the engine's layout) is not read as a run of
    slots: the masked torch attention answers, as `forward` does."""
    model = randomized(make()).eval()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 2] = False  # a hole
    a, b = model.new_cache(2), model.new_cache(2)
    step = FusedDecoder(model)
    with torch.no_grad():
        for cache in (a, b):
            model(ids, cache=cache, key_mask=mask)
        km = torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], dim=1)
        p = torch.tensor([[6], [5]])
        assert step._own_slots(torch.zeros(2, 1, dtype=torch.long), b, km, 6) is None
        want, _ = model(torch.tensor([[4], [4]]), cache=a, positions=p, key_mask=km,
                        last_only=True)  # fmt: skip
        torch.testing.assert_close(step(torch.tensor([[4], [4]]), b, p, km), want[:, -1],
                                   rtol=1e-4, atol=1e-4)  # fmt: skip
