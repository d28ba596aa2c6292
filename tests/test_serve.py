"""`slm-serve` judged from outside: a real uvicorn server on a loopback port, the official
`openai` client for the happy paths, raw HTTP (httpx) for every bad input, and a real
`slm-serve` subprocess for SIGTERM.

The model is the tiny random checkpoint of conftest.py; EOS is switched off in its
tokenizer where a test needs stories to run to their length (a random model may end one
at any token).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from openai import OpenAI

from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.serve.app import Server, create_app

MODEL = "tiny"


NO_EOS = {"ignore_eos": True}  # stories run to max_tokens: no EOS from the random model


class Running:
    """A real server in a thread on a free loopback port."""

    def __init__(self, checkpoint: Path, *, max_body: int = 1 << 20, port: int = 0,
                 **options) -> None:  # fmt: skip
        loaded = load_checkpoint(checkpoint)
        self.server = Server(loaded, model_name=MODEL, **options)
        app = create_app(self.server, max_body=max_body)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.uvicorn.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def client(self, **kw) -> OpenAI:
        kw.setdefault("api_key", "unused")
        return OpenAI(base_url=f"{self.url}/v1", max_retries=0, timeout=60, **kw)

    def post(self, path: str, body, **kw) -> httpx.Response:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        headers = {"content-type": "application/json", **kw.pop("headers", {})}
        return httpx.post(self.url + path, content=body, headers=headers, timeout=60, **kw)

    def close(self, *, abruptly: bool = False) -> None:
        """Stop (`abruptly`: without letting the requests in flight finish)."""
        self.uvicorn.should_exit = True
        self.uvicorn.force_exit = abruptly
        self.thread.join(30)


# The contract fixtures run the engine as `slm-serve` does, in a process of its own.
@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    running = Running(tiny_checkpoint, max_batch=16, max_queue=64, max_tokens_cap=400,
                      engine="process")  # fmt: skip
    yield running
    running.close()


@pytest.fixture(scope="module")
def served_no_eos(tiny_checkpoint):
    running = Running(tiny_checkpoint, max_batch=16, max_tokens_cap=100_000, engine="process")
    yield running
    running.close()


@pytest.fixture(scope="module")
def served_in_thread(tiny_checkpoint):
    """The engine in the server's own process (`--engine thread`): a test can pace its steps."""
    running = Running(tiny_checkpoint, max_batch=16, max_tokens_cap=100_000, engine="thread")
    yield running
    running.close()


# ---- the happy paths, through the official client --------------------------------------------
def test_models_and_a_completion_with_usage(served):
    client = served.client()
    assert [m.id for m in client.models.list().data] == [MODEL]
    done = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, seed=3)
    choice = done.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.text, str)
    assert done.usage.prompt_tokens > 1 and done.usage.completion_tokens <= 12
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_streaming_joined_equals_the_plain_response_and_seeds_reproduce(served_no_eos):
    client = served_no_eos.client()
    args = dict(model=MODEL, prompt="The dog", max_tokens=30, seed=11, temperature=1.0)
    plain = client.completions.create(extra_body=NO_EOS, **args)
    again = client.completions.create(extra_body=NO_EOS, **args)
    assert plain.choices[0].text == again.choices[0].text  # same seed, same story
    parts, usage = [], None
    for chunk in client.completions.create(
        extra_body=NO_EOS, **args, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        parts += [c.text for c in chunk.choices]
    assert "".join(parts) == plain.choices[0].text
    assert usage is not None and usage.completion_tokens == 30
    other = client.completions.create(extra_body=NO_EOS, **{**args, "seed": 12})
    assert other.choices[0].text != plain.choices[0].text


def test_n_choices_and_prompt_lists_reproduce_one_by_one(served_no_eos):
    client = served_no_eos.client()
    many = client.completions.create(
        extra_body=NO_EOS, model=MODEL, prompt=["Once", "A cat"], n=2, max_tokens=8, seed=100
    )
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    for k, choice in enumerate(many.choices):  # choice k is seed + k of its prompt
        prompt = ["Once", "A cat"][k // 2]
        alone = client.completions.create(
            extra_body=NO_EOS, model=MODEL, prompt=prompt, max_tokens=8, seed=100 + k
        )
        assert choice.text == alone.choices[0].text


def test_chat_streams_deltas_and_equals_its_completion(served_no_eos):
    client = served_no_eos.client()
    messages = [
        {"role": "system", "content": "You write stories."},  # dropped: no instructions
        {"role": "user", "content": "Once upon a time"},
        {"role": "assistant", "content": "there was a dog."},
        {"role": "user", "content": "The dog"},
    ]
    chat = client.chat.completions.create(
        extra_body=NO_EOS, model=MODEL, messages=messages, max_tokens=10, seed=5
    )
    assert chat.choices[0].message.role == "assistant"
    story = "Once upon a time\nthere was a dog.\nThe dog"  # the documented story prompt
    same = client.completions.create(
        extra_body=NO_EOS, model=MODEL, prompt=story, max_tokens=10, seed=5
    )
    assert chat.choices[0].message.content == same.choices[0].text
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            extra_body=NO_EOS, model=MODEL, messages=messages, max_tokens=10, seed=5, stream=True
        )
        if c.choices
    )
    assert streamed == chat.choices[0].message.content


def test_logprobs_come_with_top_alternatives(served_no_eos):
    client = served_no_eos.client()
    done = client.completions.create(
        extra_body=NO_EOS, model=MODEL, prompt="Once", max_tokens=6, seed=1, logprobs=3
    )
    lp = done.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert all(len(top) <= 3 and lp_value <= 0 for top, lp_value in zip(lp.top_logprobs,
               lp.token_logprobs, strict=True))  # fmt: skip
    assert lp.text_offset[0] == 0
    chat = client.chat.completions.create(extra_body=NO_EOS,
        model=MODEL, messages=[{"role": "user", "content": "Once"}], max_tokens=4, seed=1,
        logprobs=True, top_logprobs=2,
    )  # fmt: skip
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 2 for t in content)
    assert all(bytes(t.bytes).decode("utf-8", "replace") == t.token for t in content)


def test_stop_string_across_tokens(served_no_eos):
    client = served_no_eos.client()
    full = client.completions.create(
        extra_body=NO_EOS, model=MODEL, prompt="Tom", max_tokens=40, seed=9
    )
    text = full.choices[0].text
    stop = text[10:16]  # six characters from the middle: most likely several tokens
    assert len(stop) == 6 and text.find(stop) >= 0
    cut = client.completions.create(
        extra_body=NO_EOS, model=MODEL, prompt="Tom", max_tokens=40, seed=9, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.find(stop)]


# ---- continuous batching ------------------------------------------------------------------------
def test_sixteen_streams_at_once_all_finish_and_a_seeded_one_matches_its_solo_run(served_no_eos):
    client = served_no_eos.client()
    solo = client.completions.create(
        extra_body=NO_EOS, model=MODEL, prompt="Lily", max_tokens=40, seed=77
    )

    def stream(i: int) -> str:
        seed = 77 if i == 0 else 1000 + i
        prompt = "Lily" if i == 0 else f"Story {i} begins"
        parts = []
        for chunk in client.completions.create(
            extra_body=NO_EOS, model=MODEL, prompt=prompt, max_tokens=40 + i, seed=seed, stream=True
        ):
            parts += [c.text for c in chunk.choices]
        return "".join(parts)

    with ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(stream, range(16)))
    assert all(texts)
    # Among 15 others that joined at other steps, the seeded request writes the same story.
    assert texts[0] == solo.choices[0].text
    stats = served_no_eos.server.scheduler.stats
    assert stats.steps < stats.tokens_generated  # rows shared steps: a batch, not a queue


def test_a_client_that_disconnects_frees_its_row(served_no_eos):
    body = {"model": MODEL, "prompt": "Once", "max_tokens": 100_000, "stream": True, **NO_EOS}
    with httpx.stream("POST", served_no_eos.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        for i, _ in enumerate(r.iter_lines()):
            if i > 5:
                break  # leave mid-story: the context manager closes the connection
    scheduler = served_no_eos.server.scheduler
    deadline = time.monotonic() + 10
    while scheduler.stats.active_rows:
        assert time.monotonic() < deadline, "the row was not freed"
        time.sleep(0.05)
    ok = served_no_eos.post("/v1/completions", {"model": MODEL, "prompt": "A", "max_tokens": 3})
    assert ok.status_code == 200


# ---- bad input: OpenAI-shaped errors, and the server goes on -----------------------------------
def _error(response: httpx.Response, status: int, *needles: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for needle in needles:
        assert needle in error["message"] or needle == error["param"], error
    return error


@pytest.mark.parametrize(
    ("body", "status", "needles"),
    [
        ("{not json", 400, ["not valid JSON"]),
        ({"model": MODEL}, 400, ["prompt"]),
        ({"model": MODEL, "prompt": "a", "max_tokens": "many"}, 400, ["max_tokens"]),
        ({"model": MODEL, "prompt": "a", "temperature": -1}, 400, ["temperature"]),
        ({"model": MODEL, "prompt": "a", "top_p": 1.5}, 400, ["top_p"]),
        ({"model": MODEL, "prompt": "a", "max_tokens": 0}, 400, ["max_tokens"]),
        ({"model": MODEL, "prompt": "a", "max_tokens": 401}, 400, ["cap of 400"]),
        ({"model": MODEL, "prompt": "a", "top_k": 10**6}, 400, ["top_k"]),
        ({"model": MODEL, "prompt": "a", "n": 0}, 400, ["n"]),
        ({"model": MODEL, "prompt": "a", "presence_penalty": 0.5}, 400, ["presence_penalty"]),
        ({"model": "gpt-4", "prompt": "a"}, 404, ["gpt-4"]),
        ({"model": MODEL, "prompt": "word " * 200}, 400, ["context is 64"]),
    ],
    ids=[
        "malformed",
        "no-prompt",
        "wrong-type",
        "temperature",
        "top-p",
        "zero-tokens",
        "over-cap",
        "top-k",
        "n",
        "unsupported",
        "unknown-model",
        "too-long",
    ],
)
def test_bad_completion_requests(served, body, status, needles):
    _error(served.post("/v1/completions", body), status, *needles)
    assert served.post(
        "/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 2}
    ).is_success


def test_bad_chat_requests_and_unknown_routes(served):
    _error(served.post("/v1/chat/completions", {"model": MODEL, "messages": []}), 400, "messages")
    system_only = {"model": MODEL, "messages": [{"role": "system", "content": "hi"}]}
    _error(served.post("/v1/chat/completions", system_only), 400, "messages")
    _error(httpx.get(served.url + "/v1/nothing"), 404)
    _error(httpx.get(served.url + "/v1/models/gpt-4"), 404, "gpt-4")


def test_body_over_the_limit_is_413(tiny_checkpoint):
    running = Running(tiny_checkpoint, max_body=2000)
    try:
        big = {"model": MODEL, "prompt": "x" * 5000}
        _error(running.post("/v1/completions", big), 413)
        chunked = (json.dumps(big).encode()[i : i + 100] for i in range(0, 5100, 100))
        _error(running.post("/v1/completions", chunked), 413)  # no length declared
        assert running.post(
            "/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 1}
        ).is_success
    finally:
        running.close()


def test_api_key_is_required_and_checked(tiny_checkpoint):
    running = Running(tiny_checkpoint, api_key="s3cret")
    try:
        body = {"model": MODEL, "prompt": "a", "max_tokens": 2}
        _error(running.post("/v1/completions", body), 401, "API key")
        _error(running.post("/v1/completions", body, headers={"authorization": "Bearer nope"}), 401)
        _error(httpx.get(running.url + "/metrics"), 401)
        assert httpx.get(running.url + "/health").is_success  # health needs no key
        client = running.client(api_key="s3cret")
        assert client.completions.create(model=MODEL, prompt="a", max_tokens=2).choices
    finally:
        running.close()


@pytest.mark.parametrize("engine", ["thread", "process"])
def test_full_queue_is_429_with_retry_after(tiny_checkpoint, engine):
    running = Running(tiny_checkpoint, max_batch=1, max_queue=1, max_tokens_cap=100_000,
                      engine=engine)  # fmt: skip
    try:
        slow = {"model": MODEL, "prompt": "a", "max_tokens": 3000, **NO_EOS}

        def post(_):
            return running.post("/v1/completions", slow)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(post, range(4)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(429) >= 1 and 200 in statuses
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        _error(refused, 429, "busy")
    finally:
        running.close()


def test_metrics_count_requests_tokens_rows_and_queue(served):
    served.post("/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 2})
    text = httpx.get(served.url + "/metrics").text
    assert 'slm_requests_total{path="/v1/completions",status="200"}' in text
    for name in ("slm_generated_tokens_total", "slm_active_rows", "slm_queue_depth"):
        assert f"\n{name} " in text


# ---- the command: SIGTERM drains -------------------------------------------------------------
def test_sigterm_finishes_the_streams_in_flight_then_exits_0(tiny_checkpoint, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "slm_tui.cli.serve", "--checkpoint", str(tiny_checkpoint),
         "--port", str(port), "--device", "cpu", "--drain-seconds", "60", "--model-name", MODEL],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health").is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        body = {"model": MODEL, "prompt": "a", "max_tokens": 200, "stream": True, "seed": 1}
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if not lines:
                    proc.send_signal(signal.SIGTERM)  # mid-stream
                lines.append(line)
        assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
        assert proc.wait(60) == 0
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(url + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


# ---- the clients: slm-generate --server ------------------------------------------------------
def _generate(*args):
    from typer.testing import CliRunner

    from slm_tui.cli.generate import app as generate_app

    return CliRunner().invoke(generate_app, [str(a) for a in args])


def test_slm_generate_on_the_server_writes_what_it_writes_locally(served, tiny_checkpoint):
    common = ["--prompt", "Once upon a time", "--prompt", "Tom", "--num-samples", "2",
              "--seed", "40", "--max-new-tokens", "24", "--format", "jsonl"]  # fmt: skip
    local = _generate("--checkpoint", tiny_checkpoint, "--device", "cpu", *common)
    remote = _generate("--server", served.url, *common)
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    rows = [json.loads(line) for line in remote.stdout.splitlines()]
    want = [json.loads(line) for line in local.stdout.splitlines()]
    assert [r["seed"] for r in rows] == [40, 41, 42, 43]
    for r, w in zip(rows, want, strict=True):  # the same engine on both ends: the same stories
        assert (r["prompt"], r["text"], r["seed"], r["finish_reason"], r["tokens"]) == (
            w["prompt"], w["text"], w["seed"], w["finish_reason"], w["tokens"])  # fmt: skip
    streamed = _generate("--server", served.url, "--model", MODEL, "--prompt", "Tom",
                         "--seed", "42", "--max-new-tokens", "24", "--stream")  # fmt: skip
    assert streamed.exit_code == 0
    assert streamed.stdout == rows[2]["prompt"] + rows[2]["text"] + "\n"


def test_slm_generate_server_errors_are_one_line(served, tiny_checkpoint):
    down = _generate("--server", "http://127.0.0.1:9", "--prompt", "a")
    assert down.exit_code == 2 and "cannot reach http://127.0.0.1:9/v1" in down.stderr
    assert down.stderr.count("\n") == 1
    unknown = _generate("--server", served.url, "--model", "gpt-4", "--prompt", "a")
    assert unknown.exit_code == 2 and "404" in unknown.stderr and "gpt-4" in unknown.stderr
    both = _generate("--server", served.url, "--checkpoint", tiny_checkpoint, "--prompt", "a")
    assert both.exit_code == 2 and "not both" in both.stderr
    bad = _generate("--server", "ftp://x", "--prompt", "a")
    assert bad.exit_code == 2 and "http://" in bad.stderr


# ---- the clients: slm-tui --server -----------------------------------------------------------
async def _until(pilot, condition, timeout: float = 30.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


async def test_the_tui_writes_stories_on_a_server(served_in_thread, tui_env, monkeypatch):
    from slm_tui.generation import SamplingSettings
    from slm_tui.generation.remote import Remote
    from slm_tui.tui.app import SlmApp
    from slm_tui.tui.widgets.sampling_panel import SamplingPanel
    from slm_tui.tui.widgets.status_bar import StatusBar

    app = SlmApp(server=served_in_thread.url, rescan=False, demo=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await _until(pilot, lambda: app.loaded is not None)
        assert app.loaded.info.name == MODEL
        assert served_in_thread.url in app.query_one(StatusBar).plain_text
        assert "on the server" in str(app.query_one("#inspector").render())
        panel = app.query_one(SamplingPanel)
        panel.settings = panel.settings.replace(ignore_eos=True)  # stories run to max tokens
        panel.set_values({"seed": 21, "max_new_tokens": 20})
        await pilot.pause()
        app.write("Once upon a time")
        await _until(pilot, lambda: not app.current.streaming)
        story = app.current
        want = Remote(served_in_thread.url).complete(
            MODEL, "Once upon a time", SamplingSettings(seed=21, max_new_tokens=20, ignore_eos=True)
        )
        assert story.text == want.text and story.num_tokens == 20
        first = story.tokens[0]  # the token view's probabilities come from logprobs
        assert first.prob is not None and first.top and first.top[0].prob >= first.top[-1].prob
        # A sampling change mid-story applies from the next token (a continued request).
        # The tiny model's 64-token context ends a story within ~60 steps, which a fast engine
        # finishes before a slow machine's UI has made the change: pace the engine (20 ms a
        # step) so the story is still running when the change arrives.
        scheduler = served_in_thread.server.scheduler
        step = scheduler._step

        def paced(joining):
            step(joining)
            time.sleep(0.02)

        monkeypatch.setattr(scheduler, "_step", paced)
        app.query_one(SamplingPanel).set_values({"seed": 22, "max_new_tokens": 400})
        await pilot.pause()
        app.write("The dog")
        await _until(pilot, lambda: app.current.num_tokens >= 3)
        app.query_one(SamplingPanel).set_values({"temperature": 0.0})

        def applied() -> bool:
            return any(entry[0] == app.current.id for entry in app.applied_log)

        await _until(pilot, lambda: applied() or not app.current.streaming)
        await pilot.press("escape")
        await _until(pilot, lambda: not app.current.streaming)
        assert applied() and app.applied_log[-1][3] == {"temperature": 0.0}
        version, index = app.applied_log[-1][1], app.applied_log[-1][2]
        tokens = app.current.tokens
        assert all(t.settings_version >= version for t in tokens[index - 1 :])


async def test_the_tui_waits_for_a_server_that_is_down_and_survives_one_that_goes(
    tiny_checkpoint, tui_env
):
    from slm_tui.tui.app import SlmApp
    from slm_tui.tui.widgets.status_bar import StatusBar

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    app = SlmApp(server=f"http://127.0.0.1:{port}", demo=False)  # rescans every 2 s
    async with app.run_test(size=(100, 30)) as pilot:
        await _until(pilot, lambda: app.scanned)
        status = app.query_one(StatusBar)
        assert "cannot reach" in status.plain_text and app.loaded is None
        assert "cannot reach" in str(app.query_one("#empty").render())
        running = Running(tiny_checkpoint, port=port, max_tokens_cap=100_000)
        try:
            await _until(pilot, lambda: app.loaded is not None)  # the retry found it
            panel = app.query_one("#sampling")
            panel.settings = panel.settings.replace(ignore_eos=True)
            panel.set_values({"max_new_tokens": 100_000})
            app.write("Once")
            await _until(pilot, lambda: app.current.num_tokens >= 3)
        finally:
            running.close(abruptly=True)  # the server goes away mid-story
        await _until(pilot, lambda: not app.current.streaming)
        assert app.current.finish_reason == "error" and "server" in (app.current.error or "")
        assert app.is_running and "error" in status.plain_text  # shown; the app goes on
