"""The generation engine: settings, each sampler on hand-made logits, streaming text, stop
strings, live settings, the sliding window, batches, reproducibility.

Real parts only: tiny real GPTs (random init for the mechanics; one trained for a second to
memorise a sentence with emoji and CJK, so greedy decoding writes known multi-byte text
through the byte tokenizer), and the real sentencepiece tokenizer of `tiny_checkpoint`.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch

from slm_tui.config import ModelConfig
from slm_tui.errors import GenerationError
from slm_tui.generation import (
    PRESETS,
    LiveSettings,
    SamplingSettings,
    apply_repetition_penalty,
    apply_temperature,
    generate,
    generate_batch,
    min_p_filter,
    prepare_prompt,
    preset,
    sample_from_logits,
    sample_next,
    top_k_filter,
    top_p_filter,
    window_keep,
)
from slm_tui.generation.text import TextStream
from slm_tui.model import GPT
from slm_tui.tokenizers.byte import ByteTokenizer

INF = float("inf")
MEMORISED = "Mia 猫 said 😀! The End. Then Tom 🦄 ran."
PLAIN = SamplingSettings(temperature=1.0, top_p=1.0, min_p=0.0, repetition_penalty=1.0)
GREEDY = SamplingSettings(temperature=0.0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def byte_tok() -> ByteTokenizer:
    return ByteTokenizer()


@pytest.fixture(scope="module")
def model() -> GPT:
    """Random-init byte-level GPT with a short context (32), so stories slide often."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=260, context_length=32, n_layer=2, n_head=2, d_model=32)
    return GPT(cfg).eval()


@pytest.fixture(scope="module")
def memorised(byte_tok) -> GPT:
    """A byte-level GPT that has memorised MEMORISED (greedy writes it, then EOS)."""
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=260, context_length=64, n_layer=2, n_head=4, d_model=64))
    ids = [byte_tok.bos_id, *byte_tok.encode(MEMORISED), byte_tok.eos_id]
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(100):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def _tokens(events) -> list[int]:
    return [e.token_id for e in events if e.kind == "token"]


def _text(events) -> str:
    return "".join(e.text for e in events)


# ---- settings ------------------------------------------------------------------------------
def test_defaults_and_presets_are_valid():
    s = SamplingSettings()
    assert s.validate(260) is s
    for name in PRESETS:
        preset(name)
    assert preset("greedy").greedy
    assert SamplingSettings(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingSettings(stop="END").stop == ("END",)


@pytest.mark.parametrize(
    "changes",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"temperature": "hot"},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"min_p": 1.0},
        {"min_p": -0.1},
        {"top_k": -1},
        {"top_k": 2.5},
        {"repetition_penalty": 0.0},
        {"repetition_window": -1},
        {"max_new_tokens": 0},
        {"seed": -1},
        {"seed": True},
        {"stop": ("",)},
        {"colour": "red"},
    ],
)
def test_bad_settings_are_one_line_errors(changes):
    with pytest.raises(GenerationError) as info:
        SamplingSettings().replace(**changes)
    assert "\n" not in str(info.value)
    assert next(iter(changes)) in str(info.value)


def test_top_k_larger_than_vocab_is_an_error():
    with pytest.raises(GenerationError, match="vocabulary"):
        SamplingSettings(top_k=261).validate(260)


def test_live_settings_update_bumps_version_and_rejects_bad_values():
    live = LiveSettings(SamplingSettings())
    assert live.version == 0
    live.update(temperature=0.3)
    settings, version = live.snapshot()
    assert version == live.version == 1 and settings.temperature == 0.3
    with pytest.raises(GenerationError):
        live.update(top_p=2.0)
    assert live.snapshot() == (settings, 1)  # a refused change leaves both as they were


# ---- samplers on hand-made logits -------------------------------------------------------------
def test_repetition_penalty_divides_positive_multiplies_negative_once():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    history = torch.tensor([[-1, 0, 1, 0, 0]])  # -1 is padding: token 0 is not penalised by it
    out = apply_repetition_penalty(logits, history, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert apply_repetition_penalty(logits, history, 1.0) is logits
    unpadded = torch.tensor([[1, 0, 1]])
    assert apply_repetition_penalty(logits, unpadded, 2.0, may_pad=False).tolist() == out.tolist()
    # rows are independent
    two = apply_repetition_penalty(logits.repeat(2, 1), torch.tensor([[3], [-1]]), 2.0)
    assert two.tolist() == [[2.0, -1.0, 0.5, 1.5], [2.0, -1.0, 0.5, 3.0]]


def test_top_k_keeps_the_k_largest_sorted_with_ids():
    values, ids = top_k_filter(torch.tensor([[1.0, 5.0, 3.0, 4.0]]), 2)
    assert values.tolist() == [[5.0, 4.0]] and ids.tolist() == [[1, 3]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    keep = lambda p: torch.isfinite(top_p_filter(logits, p, is_sorted=True)).tolist()[0]  # noqa: E731
    assert keep(0.7) == [True, True, False, False]  # 0.5 < 0.7 <= 0.8
    assert keep(0.45) == [True, False, False, False]  # the top token alone reaches it
    assert keep(0.96) == [True, True, True, True]
    assert top_p_filter(logits, 1.0) is logits
    # unsorted input: same decision, original order
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isfinite(top_p_filter(shuffled, 0.7)).tolist() == [[False, True, False, True]]
    assert top_p_filter(shuffled, 0.7)[0, 1] == shuffled[0, 1]  # kept values unchanged


def test_min_p_is_relative_to_the_top_token():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isfinite(min_p_filter(logits, 0.2)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(min_p_filter(logits, 0.7)).tolist() == [[True, False, False, False]]
    assert min_p_filter(logits, 0.0) is logits


def test_temperature_divides_logits():
    logits = torch.tensor([[2.0, -4.0, -INF]])
    assert apply_temperature(logits, 2.0).tolist() == [[1.0, -2.0, -INF]]
    assert apply_temperature(logits, 1.0) is logits


def test_inverse_cdf_sampling_follows_the_distribution_and_skips_removed():
    logits = torch.tensor([[0.5, 0.3, 0.2, 0.0]]).log()  # last entry removed (-inf)
    pick = lambda u: sample_from_logits(logits, torch.tensor([[u]])).item()  # noqa: E731
    assert [pick(0.0), pick(0.49), pick(0.51), pick(0.79), pick(0.81)] == [0, 0, 1, 1, 2]
    assert pick(1.0 - 1e-9) == 2 and pick(1.0) == 2  # never the removed tail


def _frequencies(logits: torch.Tensor, settings: SamplingSettings, n: int = 2000) -> list[float]:
    """Sample n rows with evenly spread uniforms: the exact distribution, no noise."""
    rows = logits.repeat(n, 1)
    uniform = ((torch.arange(n) + 0.5) / n).unsqueeze(1)
    ids = sample_next(rows, settings, torch.empty(n, 0, dtype=torch.long), uniform)
    return (torch.bincount(ids, minlength=logits.size(1)).float() / n).tolist()


def test_pipeline_order_filters_before_temperature():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    freq = _frequencies(probs.log(), PLAIN.replace(top_p=0.7, temperature=5.0))
    # top-p chose {0, 1} on the untempered distribution; temperature 5 flattens the two
    expected = torch.softmax(probs[0, :2].log() / 5.0, dim=0).tolist()
    assert freq[2:] == [0.0, 0.0]
    assert freq[0] == pytest.approx(expected[0], abs=1e-3)
    # min-p then temperature
    freq = _frequencies(probs.log(), PLAIN.replace(min_p=0.2, temperature=0.5))
    t = torch.softmax(probs[0, :3].log() / 0.5, dim=0).tolist()
    assert freq[:3] == pytest.approx(t, abs=1e-3) and freq[3] == 0.0


def test_pipeline_top_k_returns_vocabulary_ids():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]])
    freq = _frequencies(logits, PLAIN.replace(top_k=2))
    expected = torch.softmax(torch.tensor([3.0, 2.0]), dim=0).tolist()
    assert freq[1] == pytest.approx(expected[0], abs=1e-3)
    assert freq[3] == pytest.approx(expected[1], abs=1e-3)
    assert freq[0] == freq[2] == freq[4] == 0.0


def test_greedy_is_argmax_after_the_penalty():
    logits = torch.tensor([[1.0, 3.0, 2.5]])
    s = GREEDY.replace(repetition_penalty=2.0)
    assert sample_next(logits, s, torch.tensor([[1]]), torch.zeros(1, 1)).item() == 2
    assert sample_next(logits, GREEDY, torch.tensor([[1]]), torch.zeros(1, 1)).item() == 1


# ---- text stream ------------------------------------------------------------------------------
def test_text_stream_holds_bytes_until_whole_characters():
    stream = TextStream()
    deltas = [stream.push(bytes([b])) for b in "a😀猫".encode()]
    assert deltas == ["a", "", "", "", "😀", "", "", "猫"]
    assert stream.flush() == ""


def test_stop_string_across_token_boundaries():
    stream = TextStream()
    pieces = ["Hello wor", "ld", "!"]
    out = [stream.push(p.encode(), ("world",)) for p in pieces[:2]]
    assert out == ["Hello ", ""] and stream.stopped and stream.stop_string == "world"
    # a held prefix that never completes is released at the end
    stream = TextStream()
    assert stream.push(b"The E", ("The End",)) == ""
    assert stream.push(b"gg", ("The End",)) == "The Egg"
    assert stream.push(b" The", ("The End",)) == " "
    assert stream.flush() == "The"


def test_byte_fallback_pieces_of_a_real_tokenizer_stream_as_whole_characters(tiny_checkpoint):
    from slm_tui.tokenizers import load_tokenizer

    tok = load_tokenizer(tiny_checkpoint / "tokenizer")
    text = "Lily saw a 🦄 and a 猫 ✨ by the tree."  # characters the tokenizer never saw
    ids = tok.encode(text)
    stream = TextStream()
    deltas = [stream.push(tok.token_bytes(i)) for i in ids] + [stream.flush()]
    assert "".join(deltas) == text == tok.decode(ids)
    assert "" in deltas  # some bytes were held
    for d in deltas:
        d.encode("utf-8")  # every delta is valid text: no lone surrogates or split characters
        assert "\ufffd" not in d


# ---- the engine -------------------------------------------------------------------------------
def test_streaming_emits_whole_utf8_characters(memorised, byte_tok):
    events = list(generate(memorised, byte_tok, "", GREEDY))
    assert _text(events) == MEMORISED
    assert events[-1].kind == "done" and events[-1].finish_reason == "eos"
    assert events[-1].token_id == byte_tok.eos_id
    deltas = [e.text for e in events if e.kind == "token"]
    assert deltas.count("") == 3 + 2 + 3  # 😀, 猫, 🦄: held bytes before each completes
    assert "😀" in deltas and "猫" in deltas and "🦄" in deltas
    tok_event = events[0]
    assert tok_event.prob is not None and 0 < tok_event.prob <= 1
    assert tok_event.top[0].token_id == tok_event.token_id  # greedy picks the top alternative
    assert tok_event.top[0].prob == pytest.approx(tok_event.prob)
    assert sum(a.prob for a in tok_event.top) <= 1 + 1e-6
    assert tok_event.ttft is not None and tok_event.tokens_per_s > 0


def test_stop_strings_spanning_tokens_end_the_story(memorised, byte_tok):
    events = list(generate(memorised, byte_tok, "", GREEDY.replace(stop=("The End", "猫 s"))))
    assert events[-1].finish_reason == "stop"
    assert _text(events) == "Mia "  # "猫 s" spans five byte tokens and comes first
    events = list(generate(memorised, byte_tok, "", GREEDY.replace(stop=("The End",))))
    assert _text(events) == "Mia 猫 said 😀! "


def test_cache_matches_full_forward_under_greedy(model, byte_tok):
    """KV-cache decoding gives the ids of re-running the whole window every token, also
    across slides (window rule: keep the last 3/4 context when it is full)."""
    prompt = "Once upon a time"
    ids, _ = prepare_prompt(byte_tok, prompt, 32)
    events = list(generate(model, byte_tok, prompt, GREEDY.replace(max_new_tokens=70)))
    got = _tokens(events)
    seq, start, ref = list(ids), 0, []
    C, keep = 32, window_keep(32)
    with torch.no_grad():
        while len(ref) < len(got) or (events[-1].finish_reason == "eos" and len(ref) == len(got)):
            if len(seq) - start > C:
                start = len(seq) - keep
            logits, _ = model(torch.tensor([seq[start:]]))
            nxt = int(logits[0, -1].argmax())
            if nxt == byte_tok.eos_id:
                break
            ref.append(nxt)
            seq.append(nxt)
    assert got == ref
    assert len(got) == 70  # well past the 32-token context: the story went on


def test_sliding_window_story_goes_on(model, byte_tok):
    events = list(generate(model, byte_tok, "x" * 100, PLAIN.replace(seed=3, max_new_tokens=90)))
    assert events[-1].finish_reason in ("length", "eos")
    assert events[-1].index == len(_tokens(events))
    ids, truncated = prepare_prompt(byte_tok, "x" * 100, 32)
    assert truncated and len(ids) == window_keep(32)


def test_empty_prompt_starts_from_bos(model, byte_tok):
    assert prepare_prompt(byte_tok, "", 32) == ([byte_tok.bos_id], False)
    events = list(generate(model, byte_tok, "", PLAIN.replace(seed=1, max_new_tokens=5)))
    assert events[-1].kind == "done"


def test_same_seed_same_story_whatever_ran_before(model, byte_tok):
    s = SamplingSettings(seed=42, max_new_tokens=40)
    first = list(generate(model, byte_tok, "The dog", s))
    torch.manual_seed(123)
    list(generate(model, byte_tok, "Something else", s.replace(seed=7)))
    torch.rand(10)
    again = list(generate(model, byte_tok, "The dog", s))
    assert _tokens(first) == _tokens(again) and _text(first) == _text(again)
    assert all(e.seed == 42 for e in first)
    # no seed: a fresh one is drawn, reported, and replays the story
    free = list(generate(model, byte_tok, "The dog", s.replace(seed=None)))
    replay = list(generate(model, byte_tok, "The dog", s.replace(seed=free[0].seed)))
    assert _tokens(free) == _tokens(replay)


def test_live_settings_apply_from_the_next_token(model, byte_tok):
    base = PLAIN.replace(seed=5, max_new_tokens=30)
    reference = _tokens(generate(model, byte_tok, "Hi", base))
    live = LiveSettings(base)
    stream = generate(model, byte_tok, "Hi", live)
    head = [next(stream) for _ in range(5)]
    assert [e.token_id for e in head] == reference[:5]
    assert all(e.settings_version == 0 for e in head)
    live.update(temperature=0.0, max_new_tokens=12)
    tail = list(stream)
    tokens = [e for e in tail if e.kind == "token"]
    assert all(e.settings_version == 1 for e in tail)
    assert all(e.token_id == e.top[0].token_id for e in tokens)  # greedy from token 6 on
    assert tail[-1].finish_reason == "length" and tail[-1].index == 12


def test_cancel_stops_at_once(model, byte_tok):
    cancel = threading.Event()
    stream = generate(model, byte_tok, "Hi", PLAIN.replace(seed=1), cancel=cancel)
    for _ in range(3):
        next(stream)
    cancel.set()
    done = next(stream)
    assert done.kind == "done" and done.finish_reason == "cancelled" and done.index == 3


def test_invalid_settings_raise_when_the_stream_starts(model, byte_tok):
    with pytest.raises(GenerationError, match="top_k"):
        next(generate(model, byte_tok, "Hi", SamplingSettings(top_k=1000)))


def test_batch_equals_single_generation(model, byte_tok):
    prompts = ["Once upon a time", "", "A", "The little dog ran to the park and saw", "x" * 50]
    s = SamplingSettings(seed=11, max_new_tokens=45, top_k=40, stop=("zz",))
    singles = [
        list(generate(model, byte_tok, p, s.replace(seed=11 + i))) for i, p in enumerate(prompts)
    ]
    for batch_size in (5, 2):
        results = generate_batch(model, byte_tok, prompts, s, batch_size=batch_size)
        for i, (p, r, events) in enumerate(zip(prompts, results, singles, strict=True)):
            assert r.seed == 11 + i and r.prompt == p
            assert r.token_ids == _tokens(events), (batch_size, i)
            assert r.text == _text(events)
            assert r.finish_reason == events[-1].finish_reason
            assert r.num_tokens == len(r.token_ids)
    assert results[4].prompt_truncated and not results[0].prompt_truncated


def test_fused_decode_steps_write_the_same_stories_as_the_model_forward(model, byte_tok):
    """The engine's decode steps go through the model's fused decoder; `fused=False` uses
    GPT.forward. Both write the same tokens: batches with padding, slides, a penalty."""
    from slm_tui.generation.engine import Decoder

    prompts = [[byte_tok.bos_id, *byte_tok.encode(p)] for p in ("Once", "A long prompt here", "")]
    s = SamplingSettings(seed=0, max_new_tokens=80, top_k=30)
    runs = []
    for fused in (True, False):
        decoder = Decoder(model, prompts, [1, 2, 3], fused=fused)
        out = []
        with torch.inference_mode():
            for _ in range(80):  # past the 32-token context: every row slides
                ids = decoder.sample(s)
                out.append(ids.tolist())
                decoder.advance(ids, out[-1])
        runs.append(out)
    assert runs[0] == runs[1]


def test_rows_that_join_and_leave_mid_story_write_what_they_write_alone(model, byte_tok):
    """Continuous batching: rows join between steps (prefilled, right-aligned with the
    others, shifting them when longer), leave at once, each with its own settings; every row
    writes exactly the story it writes alone."""
    from slm_tui.generation.engine import Decoder

    greedy = SamplingSettings(temperature=0.0, max_new_tokens=200)
    sampled = SamplingSettings(top_k=20, seed=0, max_new_tokens=200)
    jobs = {  # tag: (prompt, settings, seed, step it joins, tokens it writes)
        "a": ("Once upon a time", sampled, 1, 2, 70),  # longer than b: shifts it right
        "b": ("Hi", greedy, 2, 0, 15),
        "c": ("A much longer prompt than the others have", sampled, 3, 10, 40),
        "d": ("x", sampled, 4, 30, 60),
    }

    def alone(prompt, settings, seed, n):
        events = generate(model, byte_tok, prompt, settings.replace(seed=seed, max_new_tokens=n))
        return [e.token_id for e in events if e.kind == "token"]

    decoder = Decoder(model, capacity=2)  # the cache grows when a third row joins
    written: dict[str, list[int]] = {}
    with torch.inference_mode():
        for step in range(100):
            joining = [t for t, job in jobs.items() if job[3] == step]
            if joining:
                contexts = [prepare_prompt(byte_tok, jobs[t][0], 32)[0] for t in joining]
                decoder.add(contexts, [jobs[t][2] for t in joining], tags=joining)
                written.update((t, []) for t in joining)
            if not decoder.batch:
                break
            ids = decoder.sample([jobs[t][1] for t in decoder.tags]).tolist()
            done = []
            for t, tok in zip(decoder.tags, ids, strict=True):
                if tok == byte_tok.eos_id:
                    done.append(t)
                    continue
                written[t].append(tok)
                if len(written[t]) == jobs[t][4]:
                    done.append(t)
            by_tag = dict(zip(decoder.tags, ids, strict=True))
            decoder.finish(done)
            if decoder.batch:
                toks = [by_tag[t] for t in decoder.tags]
                decoder.advance(torch.tensor(toks), toks)
    for t, (prompt, settings, seed, _, n) in jobs.items():
        assert written[t] == alone(prompt, settings, seed, n), t


def test_the_penalty_history_stays_bounded_and_grows_for_a_larger_window(model, byte_tok):
    from slm_tui.generation.engine import HISTORY_KEEP, Decoder

    decoder = Decoder(model, [[byte_tok.bos_id, 65]], [0])
    s = SamplingSettings(seed=0, repetition_window=64)
    with torch.inference_mode():
        for _ in range(700):  # a long story: the history keeps only what a window can use
            ids = decoder.sample(s)
            decoder.advance(ids, ids.tolist())
        assert decoder.hist.size(1) <= decoder.window_kept + HISTORY_KEEP
        ids = decoder.sample(s.replace(repetition_window=400))  # a larger window, mid-story
        seq = decoder.seqs[0]
        kept = decoder.hist[0, decoder.hist_len - 400 : decoder.hist_len].tolist()
        assert kept == seq[-400:]


def test_events_carry_the_display_piece_and_a_model_in_training_mode_is_refused(
    tiny_checkpoint,
):
    from slm_tui.checkpoint.io import load_checkpoint
    from slm_tui.generation import Event

    loaded = load_checkpoint(tiny_checkpoint)
    tok = loaded.tokenizer
    events = list(
        generate(loaded.model, tok, "Once upon", PLAIN.replace(seed=2, max_new_tokens=12))
    )
    for e in events[:-1]:
        assert e.kind == "token" and e.piece == tok.token_text(e.token_id)
    failed = Event.failed("boom", seed=4)
    assert (failed.kind, failed.finish_reason, failed.error, failed.seed) == (
        "done",
        "error",
        "boom",
        4,
    )
    with pytest.raises(TypeError):
        Event("token", 1, 2)  # keyword-only: a new field never shifts a caller's arguments
    loaded.model.train()
    with pytest.raises(GenerationError, match="eval mode"):
        next(generate(loaded.model, tok, "Once", PLAIN))


def test_batch_greedy_rows_stop_on_their_own(memorised, byte_tok):
    prompts = ["", "Mia 猫 said", "Then Tom"]
    results = generate_batch(memorised, byte_tok, prompts, GREEDY.replace(max_new_tokens=200))
    assert results[0].text == MEMORISED and results[0].finish_reason == "eos"
    for p, r in zip(prompts, results, strict=True):
        assert r.text == _text(generate(memorised, byte_tok, p, GREEDY.replace(max_new_tokens=200)))
    seen = []
    generate_batch(memorised, byte_tok, prompts, GREEDY, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3)


def test_batch_seeds_and_errors(model, byte_tok):
    s = SamplingSettings(max_new_tokens=3)
    results = generate_batch(model, byte_tok, ["a", "b"], s, seeds=[9, 9])
    assert [r.seed for r in results] == [9, 9]
    with pytest.raises(GenerationError):
        generate_batch(model, byte_tok, ["a"], s, seeds=[1, 2])
    with pytest.raises(GenerationError):
        generate_batch(model, byte_tok, ["a"], s, batch_size=0)
    assert math.isfinite(results[0].seed)


@pytest.mark.parametrize("min_p", [0.0, 0.05])
def test_nucleus_on_the_vocabulary_head_equals_a_full_sort(min_p):
    """Top-p without top-k works on the head of the vocabulary when it can; a row's picks
    are the same as with a full sort (forced here by a flat row in the same batch)."""
    torch.manual_seed(0)
    peaked = torch.randn(1, 4096) * 4.0  # a trained-model-like, peaked distribution
    flat = torch.randn(1, 4096) * 0.01  # its nucleus is most of the vocabulary
    s = PLAIN.replace(top_p=0.9, min_p=min_p, temperature=0.7)
    n = 512
    uniform = ((torch.arange(n) + 0.5) / n).unsqueeze(1)
    empty = torch.empty(n, 0, dtype=torch.long)
    alone = sample_next(peaked.repeat(n, 1), s, empty, uniform)
    mixed = sample_next(torch.cat([peaked.repeat(n, 1), flat]), s, torch.empty(n + 1, 0,
                        dtype=torch.long), torch.cat([uniform, torch.zeros(1, 1)]))  # fmt: skip
    assert torch.equal(alone, mixed[:n])
    assert len(set(alone.tolist())) > 1  # it did sample, not pick one token
