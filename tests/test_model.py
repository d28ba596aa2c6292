"""The transformer: shapes, parameter counts of the presets, KV-cache equivalence with the full
forward (the generation engine depends on it), left-padded batches, the fused one-token
decode step against `forward` for every switch of the config, learning, tied weights."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from slm_tui.config import ModelConfig
from slm_tui.model import GPT, mlp_hidden_size
from slm_tui.presets import load_config

V = 97


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Models this small are faster on one thread, and two threads on a loaded 2-core box
    # spin-wait each other into 10x slowdowns.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(**changes) -> GPT:
    fields = dict(vocab_size=V, context_length=48, n_layer=2, n_head=4, d_model=32)
    fields.update(changes)
    torch.manual_seed(0)
    return GPT(ModelConfig(**fields)).eval()


VARIANTS = {
    "rope-mha": {},
    "rope-gqa": {"n_kv_head": 2},
    "rope-mqa": {"n_kv_head": 1},
    "learned-mha": {"positions": "learned"},
    "learned-gqa": {"positions": "learned", "n_kv_head": 2},
    # the seed notebook's GPT-2 blocks
    "gpt2": {
        "positions": "learned",
        "norm": "layernorm",
        "mlp": "gelu",
        "bias": True,
        "dropout": 0.1,
    },
    # GPT-Neo (the TinyStories paper's models): GPT-2's blocks with the tanh GELU, unscaled
    # attention scores, and a local layer (window 3) before a global one
    "gpt-neo": {
        "positions": "learned",
        "norm": "layernorm",
        "mlp": "gelu_tanh",
        "bias": True,
        "scale_attention": False,
        "attention_windows": [3, 0],
    },
}


def test_shapes_and_dtypes() -> None:
    model = make()
    idx = torch.randint(0, V, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, V) and logits.dtype == torch.float32 and loss is None
    logits, _ = model(idx, last_only=True)
    assert logits.shape == (3, 1, V)
    full, _ = model(idx)
    torch.testing.assert_close(logits[:, 0], full[:, -1])

    targets = torch.randint(0, V, (3, 10))
    targets[0, :4] = -1  # ignored positions
    _, mean = model(idx, targets)
    _, total = model(idx, targets, reduction="sum")
    _, each = model(idx, targets, reduction="none")
    assert mean.shape == () and each.shape == (3, 10)
    assert torch.all(each[0, :4] == 0)
    torch.testing.assert_close(total, mean * 26)
    torch.testing.assert_close(each.sum(), total)
    # A fresh model predicts roughly uniformly: loss near ln(V).
    assert abs(mean.item() - math.log(V)) < 0.5


def test_bf16_autocast_still_returns_float32_logits() -> None:
    model = make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(torch.randint(0, V, (2, 8)), torch.randint(0, V, (2, 8)))
    assert logits.dtype == torch.float32 and torch.isfinite(loss)


def test_preset_parameter_counts() -> None:
    counts = {}
    for name in ("tiny", "small", "seed-gpt"):
        cfg = load_config(name).model
        cfg.vocab_size = 4096
        counts[name] = GPT(cfg).num_params()
    assert 1.0e6 < counts["tiny"] < 2.0e6  # minutes on 2 CPU cores
    assert 14.0e6 < counts["small"] < 17.0e6  # "about 15M"
    # seed-gpt: 6 x 384 GPT-2 blocks, learned positions of 128, tied 4096-vocab head.
    d, L, T = 384, 6, 128
    block = (3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d) + 4 * d
    assert counts["seed-gpt"] == L * block + 4096 * d + T * d + 2 * d
    # seed-notebook: the same blocks with GPT-2's 50,257-token vocabulary, as the notebook's
    # "about 30M parameters"; its MLP is the exact GELU, its attention scaled, all global.
    seed = load_config("seed-notebook").model
    assert seed.vocab_size is None and load_config("seed-notebook").tokenizer.kind == "gpt2"
    seed.vocab_size = 50257
    assert GPT(seed).num_params() == L * block + 50257 * d + T * d + 2 * d  # 30.0M
    assert (seed.mlp, seed.scale_attention, seed.attention_windows) == ("gelu", True, [])


def test_num_params_and_flops() -> None:
    tied, untied = make(), make(tie_embeddings=False)
    assert untied.num_params() - tied.num_params() == V * 32
    assert tied.num_params(non_embedding=True) == untied.num_params(non_embedding=True) - V * 32
    learned = make(positions="learned")
    assert learned.num_params() - learned.num_params(non_embedding=True) == (V + 48) * 32
    # 6N (N = every matmul weight, head included) + 12·L·T·d
    n = tied.num_params(non_embedding=True) + V * 32
    assert tied.flops_per_token(16) == 6 * n + 12 * 2 * 16 * 32
    assert tied.flops_per_token() == tied.flops_per_token(48)


def test_mlp_hidden_sizes() -> None:
    assert mlp_hidden_size(ModelConfig(d_model=384)) == 1024
    assert mlp_hidden_size(ModelConfig(d_model=128)) == 352  # 8/3·128 rounded up to 32
    assert mlp_hidden_size(ModelConfig(d_model=128, mlp="gelu")) == 512
    assert mlp_hidden_size(ModelConfig(d_model=128, mlp_hidden=200)) == 200


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kv_cache_matches_full_forward(variant: str) -> None:
    model = make(**VARIANTS[variant])
    idx = torch.randint(0, V, (2, 30))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache(2)
        pieces = [model(idx[:, :9], cache=cache)[0], model(idx[:, 9:16], cache=cache)[0]]
        for t in range(16, 30):  # then one token at a time
            pieces.append(model(idx[:, t : t + 1], cache=cache, last_only=True)[0])
    assert cache.length == 30
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)

    cache.reset()  # the same tensors serve a new sequence
    with torch.no_grad():
        again, _ = model(idx[:, :5], cache=cache)
    assert cache.length == 5
    torch.testing.assert_close(again, full[:, :5], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["rope-gqa", "learned-mha", "gpt2", "gpt-neo"])
def test_left_padded_batch_matches_single_rows(variant: str) -> None:
    model = make(**VARIANTS[variant])
    lengths = [12, 5, 9]
    rows = [torch.randint(0, V, (n,)) for n in lengths]
    width = max(lengths)
    idx = torch.zeros(3, width, dtype=torch.long)  # pad id 0: its value must not matter
    mask = torch.zeros(3, width, dtype=torch.bool)
    for i, r in enumerate(rows):
        idx[i, width - len(r) :] = r
        mask[i, width - len(r) :] = True
    positions = mask.long().cumsum(1) - 1
    steps = 4
    nxt = torch.randint(0, V, (3, steps))
    with torch.no_grad():
        cache = model.new_cache(3)
        prefill, _ = model(idx, cache=cache, positions=positions, key_mask=mask, last_only=True)
        decoded = []
        for s in range(steps):
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], dim=1)
            pos = positions[:, -1:] + 1 + s
            decoded.append(model(nxt[:, s : s + 1], cache=cache, positions=pos, key_mask=mask)[0])
        for i, r in enumerate(rows):
            alone, _ = model(torch.cat([r, nxt[i]]).unsqueeze(0))
            torch.testing.assert_close(prefill[i, -1], alone[0, len(r) - 1], atol=1e-5, rtol=1e-4)
            got = torch.cat([d[i] for d in decoded])
            torch.testing.assert_close(got, alone[0, len(r) :], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(prefill).all()


# One value per ModelConfig field that changes what the model computes. The fused decode
# step is checked against `forward` under each; a field added to ModelConfig without an entry here
# fails `test_every_model_switch_is_covered`, so the fused step cannot silently fall behind.
SWITCHES = {
    "vocab_size": 61,
    "context_length": 40,
    "n_layer": 3,
    "n_head": 2,
    "n_kv_head": 1,
    "d_model": 48,
    "mlp": "gelu_tanh",
    "mlp_hidden": 40,
    "norm": "layernorm",
    "positions": "learned",
    "rope_theta": 50.0,
    "bias": True,
    "tie_embeddings": False,
    "dropout": 0.1,
    "attention_dropout": 0.2,
    "scale_attention": False,
    # make() builds 2 layers: the first local with a window shorter than the test's
    # sequences (9-12 tokens), the second global
    "attention_windows": [4, 0],
}


def test_local_layers_see_only_their_window() -> None:
    """Two local layers of window 3: a position's logits depend on itself and the 4 tokens
    before it (2 steps back per layer), not on anything earlier; global layers see it all."""
    model = randomized(make(attention_windows=[3, 3]))
    ids = torch.randint(0, V, (1, 20))
    changed = ids.clone()
    changed[0, 10] = (ids[0, 10] + 1) % V
    with torch.no_grad():
        a, b = model(ids)[0][0], model(changed)[0][0]
    moved = [t for t in range(20) if not torch.allclose(a[t], b[t])]
    assert moved == [10, 11, 12, 13, 14]
    wide = randomized(make(attention_windows=[0, 3]))
    with torch.no_grad():
        a, b = wide(ids)[0][0], wide(changed)[0][0]
    assert all(not torch.allclose(a[t], b[t]) for t in range(10, 20))


def test_every_model_switch_is_covered() -> None:
    assert set(SWITCHES) == {f.name for f in dataclasses.fields(ModelConfig)}


def randomized(model: GPT) -> GPT:
    """Every parameter random (gains, biases included), so each one shows in the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("switch", ["defaults", *SWITCHES, "gpt2", "gpt-neo", "plain-gelu"])
def test_fused_decoder_matches_forward(switch: str) -> None:
    """The fused one-token step computes what `forward` does for one new token: same logits, same cache
    entries, for one row and for left-padded rows with their own positions."""
    if switch in VARIANTS:
        changes = VARIANTS[switch]
    elif switch == "plain-gelu":  # SWITCHES checks the tanh GELU; the exact one too
        changes = {"mlp": "gelu"}
    else:
        changes = {} if switch == "defaults" else {switch: SWITCHES[switch]}
    model = randomized(make(**changes))
    step = model.fused_decoder()
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
        # left-padded rows: row 0 has 3 padding slots, so its positions lag its slots
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[0, :3] = False
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        a, b = model.new_cache(2), model.new_cache(2)
        ids = torch.randint(0, vocab, (2, 9))
        for cache in (a, b):
            model(ids, cache=cache, positions=pos, key_mask=mask)
        nxt, step_pos = torch.tensor([[5], [6]]), torch.tensor([[6], [9]])
        full_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], dim=1)
        want, _ = model(nxt, cache=a, positions=step_pos, key_mask=full_mask, last_only=True)
        got = step(nxt, b, step_pos, full_mask)
        torch.testing.assert_close(got, want[:, -1], rtol=1e-4, atol=1e-4)


def test_fused_decoder_refuses_training_mode_dropout_and_a_full_cache() -> None:
    model = make(dropout=0.1).train()
    with pytest.raises(ValueError, match="eval"):
        model.fused_decoder()
    model.eval()
    cache = model.new_cache(1, max_len=2)
    model(torch.tensor([[1, 2]]), cache=cache)
    with pytest.raises(ValueError, match="do not fit"):
        model.fused_decoder()(torch.tensor([[3]]), cache)


def test_cache_limits() -> None:
    model = make()
    with pytest.raises(ValueError, match="context"):
        model.new_cache(1, 49)
    cache = model.new_cache(1, 8)
    with torch.no_grad():
        model(torch.zeros(1, 6, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="do not fit"):
            model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="do not fit"):
            model(torch.zeros(1, 49, dtype=torch.long))


def test_vocab_size_required() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(ModelConfig())


@pytest.mark.parametrize("variant", ["rope-gqa", "gpt2"])
def test_overfits_a_tiny_batch(variant: str) -> None:
    model = make(**VARIANTS[variant]).train()
    torch.manual_seed(1)
    batch = torch.randint(0, V, (4, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_tied_weights_are_one_tensor() -> None:
    model = make()
    assert model.lm_head.weight is model.tok_emb.weight
    with torch.no_grad():
        model.tok_emb.weight[5].fill_(0.5)
    assert torch.all(model.lm_head.weight[5] == 0.5)
    untied = make(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()


def test_residual_projections_are_scaled_down() -> None:
    model = make(n_layer=8, d_model=128, vocab_size=500)
    block = model.blocks[0]
    std_qkv = block.attn.qkv.weight.std().item()
    std_out = block.attn.proj.weight.std().item()
    assert abs(std_qkv - 0.02) < 0.002
    assert abs(std_out - 0.02 / math.sqrt(16)) < 0.001
    assert abs(block.mlp.proj.weight.std().item() - 0.02 / 4) < 0.001


def test_dropout_only_in_training() -> None:
    model = make(**VARIANTS["gpt2"])
    idx = torch.randint(0, V, (2, 10))
    a, b = model(idx)[0], model(idx)[0]
    torch.testing.assert_close(a, b)
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])


def test_attention_dropout_is_its_own_knob() -> None:
    """model.attention_dropout: None follows model.dropout; 0 keeps residual dropout on and
    the attention probabilities whole (on a CPU the costly part); alone it still drops."""
    idx = torch.randint(0, V, (2, 10))
    follows = make(dropout=0.1)
    assert all(b.attn.dropout == 0.1 for b in follows.layers)
    resid_only = make(dropout=0.1, attention_dropout=0.0).train()
    assert all(b.attn.dropout == 0.0 for b in resid_only.layers)
    assert not torch.allclose(resid_only(idx)[0], resid_only(idx)[0])  # residuals still drop
    attn_only = make(dropout=0.0, attention_dropout=0.5).train()
    assert not torch.allclose(attn_only(idx)[0], attn_only(idx)[0])
    attn_only.eval()
    torch.testing.assert_close(attn_only(idx)[0], attn_only(idx)[0])


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_attention_dropout_out_of_range_is_refused(value: float) -> None:
    from slm_tui.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.attention_dropout"):
        ModelConfig(vocab_size=V, attention_dropout=value).validate()
