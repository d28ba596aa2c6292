"""The row driver (`generation/rows.py`): one per-token policy for `generate`, `generate_batch`
and the server's `Scheduler`, and `ignore_eos`.

A small byte-level GPT memorises one sentence, so greedy decoding writes it and then EOS:
every way a story ends (EOS, a stop string, max_new_tokens, cancellation) can be reached on
purpose, and the three drivers must end it the same way with the same text.
"""

from __future__ import annotations

import threading

import pytest
import torch

from slm_tui.config import ModelConfig
from slm_tui.generation import SamplingSettings, generate, generate_batch
from slm_tui.generation.rows import Row, Rows
from slm_tui.model import GPT
from slm_tui.serve.scheduler import Row as ServeRow
from slm_tui.serve.scheduler import Scheduler
from slm_tui.tokenizers.byte import ByteTokenizer

SENTENCE = "Tom had a red ball. The End."
GREEDY = SamplingSettings(temperature=0.0, repetition_penalty=1.0, max_new_tokens=200)


@pytest.fixture(scope="module")
def tok() -> ByteTokenizer:
    return ByteTokenizer()


@pytest.fixture(scope="module")
def memorised(tok) -> GPT:
    """Greedy decoding from "Tom" writes the rest of SENTENCE, then EOS."""
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=260, context_length=64, n_layer=2, n_head=4, d_model=64))
    ids = [tok.bos_id, *tok.encode(SENTENCE), tok.eos_id]
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(100):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def _stream(model, tok, prompt, settings) -> tuple[str, list[int], str]:
    events = list(generate(model, tok, prompt, settings))
    ids = [e.token_id for e in events if e.kind == "token"]
    return "".join(e.text for e in events), ids, events[-1].finish_reason


def _batch(model, tok, prompt, settings) -> tuple[str, list[int], str]:
    (result,) = generate_batch(model, tok, [prompt], settings, seeds=[settings.seed or 0])
    return result.text, result.token_ids, result.finish_reason


def _served(model, tok, prompt, settings) -> tuple[str, list[int], str]:
    events, done = [], threading.Event()

    def sink(event) -> None:
        events.append(event)
        if event.kind == "done":
            done.set()

    scheduler = Scheduler(model, tok, max_batch=4)
    ids = [tok.bos_id, *tok.encode(prompt)]
    scheduler.submit([ServeRow(ids=ids, settings=settings, seed=settings.seed or 0, sink=sink)])
    assert done.wait(30)
    scheduler.stop()
    assert scheduler.stats.active_rows == 0  # an idle engine reports no rows
    ids = [e.token_id for e in events if e.kind == "token"]
    return "".join(e.text for e in events), ids, events[-1].finish_reason


DRIVERS = (_stream, _batch, _served)


@pytest.mark.parametrize(
    ("changes", "reason", "text"),
    [
        ({}, "eos", SENTENCE[3:]),
        ({"max_new_tokens": 5}, "length", SENTENCE[3:8]),
        ({"stop": ("ball",)}, "stop", " had a red "),
        ({"ignore_eos": True, "max_new_tokens": 40}, "length", None),
    ],
)
def test_every_driver_ends_a_story_the_same_way(memorised, tok, changes, reason, text):
    settings = GREEDY.replace(**changes)
    outcomes = [drive(memorised, tok, "Tom", settings) for drive in DRIVERS]
    assert outcomes[0] == outcomes[1] == outcomes[2]
    got_text, ids, got_reason = outcomes[0]
    assert got_reason == reason
    if text is not None:
        assert got_text == text
    if changes.get("ignore_eos"):  # EOS is written like any token and the story goes on
        assert len(ids) == 40 and tok.eos_id in ids
        assert got_text.startswith(SENTENCE[3:])


def test_a_story_that_ends_by_length_runs_no_decode_step_for_its_last_token(memorised, tok):
    rows = Rows(memorised, tok, capacity=1)
    steps = []
    advance = rows.decoder.advance
    rows.decoder.advance = lambda *a: (steps.append(1), advance(*a))  # count decode steps
    row = Row(ids=[tok.bos_id, *tok.encode("Tom")], settings=GREEDY.replace(max_new_tokens=4),
              seed=0)  # fmt: skip
    rows.join([row])
    while not row.done:
        rows.step()
    assert row.finish_reason == "length" and row.index == 4
    assert len(steps) == 3  # tokens 2..4 needed one step each; nobody reads a 5th


def test_a_lower_max_tokens_set_mid_story_ends_it_at_the_next_step(memorised, tok):
    rows = Rows(memorised, tok, capacity=1)
    row = Row(ids=[tok.bos_id, *tok.encode("Tom")], settings=GREEDY, seed=0)
    rows.join([row])
    for _ in range(6):
        rows.step()
    row.settings = GREEDY.replace(max_new_tokens=3)  # a live change below what it has written
    ((_, event),) = rows.step()
    assert event.kind == "done" and event.finish_reason == "length" and event.index == 6
    assert len(rows) == 0


def test_a_cancelled_row_leaves_without_another_token_and_others_go_on(memorised, tok):
    rows = Rows(memorised, tok, capacity=2)
    a = Row(ids=[tok.bos_id, *tok.encode("Tom")], settings=GREEDY, seed=0)
    b = Row(ids=[tok.bos_id, *tok.encode("Tom")], settings=GREEDY, seed=0)
    rows.join([a, b])
    rows.step()
    a.cancelled.set()
    events = rows.step()
    assert [(r is a, e.kind, e.finish_reason) for r, e in events] == [
        (True, "done", "cancelled"),
        (False, "token", None),
    ]
    assert a.index == 1 and rows.active == [b]
    while not b.done:
        rows.step()
    assert b.finish_reason == "eos" and "".join(map(chr, b.token_ids)) == SENTENCE[3:]


def test_ignore_eos_must_be_a_boolean():
    from slm_tui.errors import GenerationError

    with pytest.raises(GenerationError, match="ignore_eos must be true or false"):
        SamplingSettings(ignore_eos=1)  # type: ignore[arg-type]


def test_every_per_row_field_of_the_decoder_is_declared(memorised, tok):
    """`finish` reorders the fields named in ROW_TENSORS/ROW_LISTS; a per-row field missing
    there would silently keep a finished row's values."""
    rows = Rows(memorised, tok, capacity=3)
    rows.join([Row(ids=[tok.bos_id, *tok.encode(p)], settings=GREEDY, seed=0)
               for p in ("Tom", "A", "Tom had")])  # fmt: skip
    rows.step()
    d = rows.decoder
    per_row = {
        name
        for name, value in vars(d).items()
        if (isinstance(value, list) and len(value) == d.batch)
        or (isinstance(value, torch.Tensor) and value.dim() and value.size(0) == d.batch)
    }
    assert per_row == set(d.ROW_TENSORS) | set(d.ROW_LISTS)
