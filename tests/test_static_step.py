"""The fixed-shape decode step a GPU replays as CUDA graphs (`FusedDecoder.static`,
`GraphedSteps`): the same function as `GPT.forward` for every model switch, and a decoder
running it (rows joining, leaving, sliding, padded into batch buckets) writes exactly the
stories of the ordinary step. On a CPU the step runs without graphs (the same kernels a
graph would replay); with a CUDA GPU visible the captured graphs (`SLM_TUI_CUDA_GRAPHS=1`,
opt-in until a GPU run has checked them) are checked against the eager steps too."""

from __future__ import annotations

import pytest
import torch

from slm_tui.config import ModelConfig
from slm_tui.decode import GraphedSteps, bucket
from slm_tui.generation import SamplingSettings
from slm_tui.generation.engine import Decoder
from slm_tui.model import GPT
from tests.test_model import SWITCHES, VARIANTS, make, randomized

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def changes_of(switch: str) -> dict:
    if switch in VARIANTS:
        return VARIANTS[switch]
    return {} if switch == "defaults" else {switch: SWITCHES[switch]}


@pytest.mark.parametrize("switch", ["defaults", *SWITCHES, "gpt2", "gpt-neo"])
def test_the_static_step_matches_forward(switch: str) -> None:
    model = randomized(make(**changes_of(switch))).eval()
    step = model.fused_decoder(native=False)
    vocab, S = model.cfg.vocab_size, model.cfg.context_length
    with torch.no_grad():
        # two rows: row 0 left-padded by 3 slots (its positions lag its slots), row 1 full
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[0, :3] = False
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        ids = torch.randint(0, vocab, (2, 9))
        a, b = model.new_cache(2), model.new_cache(2)
        for cache in (a, b):
            model(ids, cache=cache, positions=pos, key_mask=mask)
        key_mask = torch.zeros(2, S, dtype=torch.bool)
        key_mask[:, :9] = mask
        for n, (t0, t1) in enumerate(((5, 6), (7, 8), (9, 10))):
            slot = 9 + n
            key_mask[:, slot] = True
            nxt, step_pos = torch.tensor([[t0], [t1]]), torch.tensor([6 + n, 9 + n])
            want, _ = model(nxt, cache=a, positions=step_pos.view(2, 1),
                            key_mask=key_mask[:, : slot + 1], last_only=True)  # fmt: skip
            got = step.static(nxt, b.k, b.v, torch.tensor([slot]), step_pos, key_mask)
            torch.testing.assert_close(got, want[:, -1], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b.k[:, :, :, :12], a.k[:, :, :, :12], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.v[:, :, :, :12], a.v[:, :, :, :12], rtol=1e-4, atol=1e-5)


def _rows_joining_and_leaving(model: GPT, static: bool | None, device: str) -> dict[str, list[int]]:
    """A scripted continuous batch: rows join at different steps (with different lengths),
    leave, and slide past a 32-token context; every row's tokens."""
    greedy = SamplingSettings(temperature=0.0)
    sampled = SamplingSettings(top_k=20)
    jobs = {  # tag: (prompt ids, settings, seed, step it joins, tokens it writes)
        "a": (list(range(2, 18)), sampled, 1, 2, 70),
        "b": ([2, 40], greedy, 2, 0, 15),
        "c": (list(range(30, 57)), sampled, 3, 10, 40),
        "d": ([2], sampled, 4, 30, 60),
        "e": ([2, 9, 9], greedy, 5, 31, 45),
    }
    decoder = Decoder(model, capacity=2, static=static)  # grows when a third row joins
    written: dict[str, list[int]] = {}
    with torch.inference_mode():
        for step in range(120):
            joining = [t for t, job in jobs.items() if job[3] == step]
            if joining:
                decoder.add([jobs[t][0] for t in joining], [jobs[t][2] for t in joining],
                            tags=joining)  # fmt: skip
                written.update((t, []) for t in joining)
            if not decoder.batch:
                break
            ids = decoder.sample([jobs[t][1] for t in decoder.tags]).tolist()
            done = []
            for t, tok in zip(decoder.tags, ids, strict=True):
                written[t].append(tok)
                if len(written[t]) == jobs[t][4]:
                    done.append(t)
            by_tag = dict(zip(decoder.tags, ids, strict=True))
            decoder.finish(done)
            if decoder.batch:
                toks = [by_tag[t] for t in decoder.tags]
                decoder.advance(torch.tensor(toks, device=device), toks)
    return written


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["rope-gqa", "gpt-neo"])
def test_a_decoder_on_the_static_step_writes_what_the_ordinary_step_writes(variant, device):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=260, context_length=32, n_layer=2, n_head=4, d_model=32,
                      **{k: v for k, v in VARIANTS[variant].items() if k != "dropout"})  # fmt: skip
    if cfg.attention_windows:
        cfg.attention_windows = [5, 0]
    model = GPT(cfg).to(device).eval()
    want = _rows_joining_and_leaving(model, static=False, device=device)
    got = _rows_joining_and_leaving(model, static=True, device=device)
    assert got == want
    assert all(len(ids) > 10 for ids in got.values())


def test_rows_past_the_batch_in_a_bucket_change_nothing() -> None:
    """Three rows run in the bucket of four: whatever the fourth row of the cache holds."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=61, context_length=16, n_layer=2, n_head=2,
                            d_model=16)).eval()  # fmt: skip
    assert (bucket(3), bucket(4), bucket(5), bucket(3000)) == (4, 4, 8, 3000)
    steps = GraphedSteps(model.fused_decoder(native=False), capture=False)
    outs = []
    for garbage in (0.0, 1e3):
        cache = model.new_cache(4)
        ids = torch.randint(0, 61, (3, 5), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            model(ids, cache=cache.rows(3))
            cache.k[:, 3].fill_(garbage)
            cache.v[:, 3].fill_(garbage)
            key_mask = torch.zeros(3, 16, dtype=torch.bool)
            key_mask[:, :6] = True
            outs.append(steps(torch.tensor([[1], [2], [3]]), cache, 3, 5, torch.full((3,), 5),
                              key_mask))  # fmt: skip
    assert outs[0].shape == (3, 61) and torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replays_equal_the_eager_step(monkeypatch) -> None:
    """The same stories, token for token, replayed from CUDA graphs and run eagerly (the
    fixed-shape step, and the ordinary one)."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=260, context_length=32, n_layer=2, n_head=4,
                            d_model=32)).cuda().eval()  # fmt: skip
    monkeypatch.setenv("SLM_TUI_CUDA_GRAPHS", "1")
    graphed = _rows_joining_and_leaving(model, static=None, device="cuda")
    monkeypatch.setenv("SLM_TUI_CUDA_GRAPHS", "0")
    eager = _rows_joining_and_leaving(model, static=True, device="cuda")
    ordinary = _rows_joining_and_leaving(model, static=None, device="cuda")
    assert graphed == eager == ordinary
