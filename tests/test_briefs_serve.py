"""Briefs over HTTP: `slm-serve` takes `brief` in /v1/completions (and /v1/chat/completions),
turns a chat message that asks for a story into a brief, refuses a bad brief with a 400
naming `brief`; `ServerModel` (so `slm-generate --server`) sends the brief in the body.

A real server on a loopback port (tests/test_serve.py's `Running`) over the tiny random
checkpoint, the official `openai` client (`extra_body={"brief": ...}`) and raw httpx for bad
input. The model is random: a brief is judged by what reaches it (the same story as the
block written into the prompt by hand, the prompt's token count), not by what it writes."""

from __future__ import annotations

import pytest

from slm_tui.briefs import Brief, format_brief
from slm_tui.generation import SamplingSettings, prepare_prompt
from slm_tui.handle import ServerModel
from slm_tui.tokenizers import load_tokenizer
from tests.test_serve import MODEL, NO_EOS, Running, _error

DRAGON = {"words": ["dragon", "finds", "cake"], "name": "Max", "features": []}
BRIEF = {"words": ["dog", "ball"], "name": "Lily", "features": ["dialogue"]}


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    running = Running(tiny_checkpoint, max_batch=8, max_tokens_cap=1000)
    yield running
    running.close()


def _complete(client, prompt: str, brief=None, strength=None, **kw):
    extra = {**NO_EOS, **({"brief": brief} if brief is not None else {})}
    if strength is not None:
        extra["brief_strength"] = strength
    args = {"model": MODEL, "max_tokens": 12, "seed": 7, **kw}
    return client.completions.create(prompt=prompt, extra_body=extra, **args)


def test_a_completion_with_a_brief_reads_its_block_and_returns_the_story(served, tiny_checkpoint):
    client = served.client()
    done = _complete(client, "Once upon a time", BRIEF, strength=0)  # the model alone
    by_hand = _complete(client, format_brief(Brief.from_dict(BRIEF)) + "Once upon a time")
    assert done.choices[0].text == by_hand.choices[0].text  # the story only: no block
    guided = _complete(client, "Once upon a time", BRIEF)  # the guide on (the default)
    assert guided.choices[0].text != done.choices[0].text
    tok = load_tokenizer(tiny_checkpoint / "tokenizer")
    ids, _ = prepare_prompt(tok, "Once upon a time", 64, brief=Brief.from_dict(BRIEF))
    assert done.usage.prompt_tokens == len(ids)
    assert done.choices[0].text != _complete(client, "Once upon a time").choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL,
            prompt="Once upon a time",
            max_tokens=12,
            seed=7,
            stream=True,
            extra_body={**NO_EOS, "brief": BRIEF},
        )
        if c.choices
    )
    assert streamed == guided.choices[0].text
    # a list of prompts and n > 1: every choice has the brief
    many = _complete(client, ["Once", "The dog"], BRIEF, n=2, seed=20)
    for k, choice in enumerate(many.choices):
        alone = _complete(client, ["Once", "The dog"][k // 2], BRIEF, seed=20 + k)
        assert choice.text == alone.choices[0].text


def test_a_chat_that_asks_for_a_story_gets_one_from_its_brief(served):
    client = served.client()
    message = "a story about a dragon named Max who finds a cake"
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": message}], max_tokens=12, seed=7,
        extra_body=NO_EOS,
    )  # fmt: skip
    story = chat.choices[0].message.content
    # the story written from the brief alone, no seed text (the request is not story text)
    assert story == _complete(client, "", DRAGON).choices[0].text
    assert story != _complete(client, message).choices[0].text
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": message}],
            max_tokens=12,
            seed=7,
            stream=True,
            extra_body=NO_EOS,
        )
        if c.choices
    )
    assert streamed == story
    # a conversation: the last user message decides, the story so far is not continued
    turns = [
        {"role": "user", "content": "Once upon a time"},
        {"role": "assistant", "content": "there was a dog."},
        {"role": "user", "content": message},
    ]
    again = client.chat.completions.create(
        model=MODEL, messages=turns, max_tokens=12, seed=7, extra_body=NO_EOS
    )
    assert again.choices[0].message.content == story


def test_chats_without_a_usable_request_continue_the_story(served):
    client = served.client()
    for text in ("tell me a story", "Lily went to the park. She saw a dog."):
        chat = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=12, seed=7,
            extra_body=NO_EOS,
        )  # fmt: skip
        assert chat.choices[0].message.content == _complete(client, text).choices[0].text
    # the body's own brief: the messages are the story so far, as in /v1/completions
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "The dog"}], max_tokens=12, seed=7,
        extra_body={**NO_EOS, "brief": BRIEF},
    )  # fmt: skip
    assert chat.choices[0].message.content == _complete(client, "The dog", BRIEF).choices[0].text


@pytest.mark.parametrize(
    ("brief", "needle"),
    [
        ({"features": ["funny"]}, "unknown brief feature 'funny'"),
        ({"words": ["a", "b", "c", "d", "e", "f", "g"]}, "at most 6 words"),
        ({"words": ["two words"]}, "one word of letters"),
        ({"words": "dog"}, "must be a list"),
        ({"name": "lily"}, "capitalised"),
        ({"colour": "red"}, "unknown brief key"),
        ("dog", "brief"),
        ({"words": ["\ud800"]}, "brief word"),
    ],
    ids=["feature", "too-many", "not-a-word", "words-string", "name", "key", "string", "surrogate"],
)
def test_a_bad_brief_is_a_400_naming_it(served, brief, needle):
    for path, body in (
        ("/v1/completions", {"model": MODEL, "prompt": "a", "brief": brief}),
        ("/v1/chat/completions", {"model": MODEL, "brief": brief,
                                  "messages": [{"role": "user", "content": "a"}]}),
    ):  # fmt: skip
        error = _error(served.post(path, body), 400, needle)
        assert error["param"] == "brief" and "\n" not in error["message"]
    ok = served.post("/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 2})
    assert ok.is_success


def test_a_server_handle_sends_the_brief(served):
    client = served.client()
    handle = ServerModel.connect(served.url)
    settings = SamplingSettings(max_new_tokens=12, seed=7, brief=BRIEF, **NO_EOS)
    (result,) = handle.generate_batch(["Once upon a time"], settings, seeds=[7])
    assert result.text == _complete(client, "Once upon a time", BRIEF).choices[0].text
    assert result.prompt == "Once upon a time"
    alone = settings.replace(brief_strength=0)  # sent as brief_strength: the guide off
    streamed = "".join(e.text for e in handle.stream("Once upon a time", alone))
    block = format_brief(Brief.from_dict(BRIEF))
    plain = settings.replace(brief=None)
    assert streamed == "".join(e.text for e in handle.stream(block + "Once upon a time", plain))
    per_prompt = [settings, settings.replace(brief=None)]
    both = handle.generate_batch(["Once", "Once"], per_prompt, seeds=[3, 3])
    assert both[0].text == _complete(client, "Once", BRIEF, seed=3).choices[0].text
    assert both[1].text == _complete(client, "Once", seed=3).choices[0].text
