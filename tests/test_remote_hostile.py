"""The `--server` clients (slm_tui/generation/remote.py, `slm-generate --server`) against a
hostile server (tests/hostile_http.py: a real HTTP server on a loopback port): a stream
stops at max_new_tokens whatever the server sends; every read is bounded in size and in
time; cancelling closes the socket; the API key never follows a redirect; a wrongly shaped
answer, URL or key is one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import threading
import time

import pytest
from typer.testing import CliRunner

from slm_tui.cli.generate import app as generate_app
from slm_tui.generation import SamplingSettings
from slm_tui.generation.remote import Remote, RemoteError
from slm_tui.generation.remote_http import BODY_LIMIT, LINE_LIMIT
from tests.hostile_http import HostileServer, Reply, drip, endless, stall

MiB = 1 << 20


@pytest.fixture
def hostile():
    with HostileServer() as server:
        yield server


def wait_for(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "slm-remote-watch"]


def settings(n: int = 16) -> SamplingSettings:
    return SamplingSettings(max_new_tokens=n, seed=1)


# ---- a stream ends at max_new_tokens -----------------------------------------------------
def test_a_stream_stops_at_max_new_tokens_whatever_the_server_sends(hostile):
    hostile.script["endless"] = endless  # 200,000 tokens whatever max_tokens says
    events = list(Remote(hostile.url("endless")).stream("m", "Once", settings(16)))
    tokens = [e for e in events if e.kind == "token"]
    assert len(tokens) == 16 and events[-1].kind == "done"
    assert events[-1].finish_reason == "length" and events[-1].index == 16
    wait_for(lambda: hostile.open_connections == 0)  # the client hung up: nothing read on
    assert hostile.requests[-1]["sent"] < 4 * MiB


# ---- bounded reads -----------------------------------------------------------------------
def flood(prefix: bytes, status: int = 200, megabytes: int = 48):
    """An answer that starts with `prefix` and then sends `megabytes` MB of one long line."""

    def behaviour(reply: Reply) -> None:
        if reply.models and not prefix.startswith(b'{"data'):
            return reply.models_list(["m"])
        reply.start(status, "application/json")
        reply.chunk(prefix)
        for _ in range(megabytes * 16):
            reply.chunk(b"a" * (1 << 16))
        reply.write(b"0\r\n\r\n")

    return behaviour


@pytest.mark.parametrize(
    ("what", "prefix", "status", "call", "message"),
    [
        ("models", b'{"data": [{"id": "m"}], "pad": "', 200, "models", "longer than 16 MiB"),
        ("answer", b'{"choices": [{"text": "', 200, "complete", "longer than 16 MiB"),
        ("error body", b"e", 500, "complete", "500"),
        ("stream line", b'data: {"choices": [{"text": "', 200, "stream", "longer than 1 MiB"),
    ],
)
def test_every_answer_is_read_with_a_bound(hostile, what, prefix, status, call, message):
    hostile.script["flood"] = flood(prefix, status)
    remote = Remote(hostile.url("flood"))
    with pytest.raises(RemoteError) as caught:
        if call == "models":
            remote.models()
        elif call == "complete":
            remote.complete("m", "Once", settings())
        else:
            list(remote.stream("m", "Once", settings()))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    # The client stopped reading near its bound (socket buffers aside), far below 48 MB.
    wait_for(lambda: hostile.open_connections == 0)
    assert hostile.requests[-1]["sent"] < BODY_LIMIT + 8 * MiB, what
    assert LINE_LIMIT < BODY_LIMIT


# ---- deadlines and cancellation ----------------------------------------------------------
def test_a_server_that_drips_is_given_up_on_at_the_deadline(hostile):
    hostile.script["drip"] = drip  # a byte every 0.2 s: a per-read timeout never fires
    remote = Remote(hostile.url("drip"), timeout=1.0)
    with pytest.raises(RemoteError, match="no answer within 1 s"):
        list(remote.stream("m", "Once", settings()))
    with pytest.raises(RemoteError, match="no answer within 1 s"):
        remote.models()
    wait_for(lambda: hostile.open_connections == 0)
    assert not watchers()


def test_cancelling_closes_the_socket_at_once(hostile):
    hostile.script["stall"] = stall  # headers, then silence for 30 s
    cancel = threading.Event()
    stream = Remote(hostile.url("stall"), timeout=25.0).stream(
        "m", "Once", settings(), cancel=cancel
    )
    threading.Timer(0.3, cancel.set).start()
    events = list(stream)  # returns once the socket is shut, long before the 25 s
    assert [e.kind for e in events] == ["done"] and events[-1].finish_reason == "cancelled"
    wait_for(lambda: hostile.open_connections == 0, timeout=5.0)
    assert not watchers()


def test_slm_generate_cancels_the_other_requests_when_one_fails(hostile):
    """--batch-size 4 on a server that stalls three requests and refuses one: the command
    ends on the refusal instead of waiting on the stalled ones."""
    calls, lock = [], threading.Lock()

    def one_fails(reply: Reply) -> None:
        if reply.models:
            return reply.models_list(["m"])
        with lock:
            calls.append(1)
            last = len(calls) == 4
        if last:
            return reply.send(400, {"error": {"message": "bad prompt"}})
        reply.start(ctype="application/json")
        reply.wait(30)

    hostile.script["mixed"] = one_fails
    args = ["--server", hostile.url("mixed"), "--prompt", "a", "--num-samples", "4"]
    result = CliRunner().invoke(generate_app, [*args, "--batch-size", "4"])
    assert result.exit_code == 2 and "bad prompt" in result.output
    wait_for(lambda: hostile.open_connections == 0, timeout=5.0)
    assert not watchers()


# ---- redirects ---------------------------------------------------------------------------
@pytest.mark.parametrize("code", [302, 307])
def test_the_api_key_never_goes_to_another_origin(hostile, code):
    with HostileServer() as other:
        target = other.url("ok")

        def redirect(reply: Reply) -> None:
            rest = "/v1/models" if reply.models else "/v1/completions"
            reply.send(code, b"", {"Location": target + rest})

        hostile.script["redirect"] = redirect
        remote = Remote(hostile.url("redirect"), api_key="SECRET-KEY")
        for call in (remote.models, lambda: remote.complete("m", "a", settings())):
            with pytest.raises(RemoteError, match="redirects") as caught:
                call()
            assert target in str(caught.value)
        with pytest.raises(RemoteError, match="redirects"):
            list(remote.stream("m", "a", settings()))
        assert hostile.requests and all(
            r["authorization"] == "Bearer SECRET-KEY" for r in hostile.requests
        )
        assert other.requests == []  # nothing reached the other origin, the key least of all


# ---- shapes: one line, exit 2 ------------------------------------------------------------
SSE_SHAPES = {
    "list": b"data: [1, 2]\n\n",
    "string": b'data: "x"\n\n',
    "choice is a string": b'data: {"choices": ["x"]}\n\n',
    "text is a number": b'data: {"choices": [{"text": 5}]}\n\n',
    "error is a string": b'data: {"error": "boom"}\n\n',
    "choices is an object": b'data: {"choices": {"a": 1}}\n\n',
    "a number": b"data: 7\n\n",
    "null": b"data: null\n\n",
    "finish_reason is a list": b'data: {"choices": [{"text": "a", "finish_reason": [1]}]}\n\n',
    "not JSON": b"data: {not json\n\n",
}
JSON_SHAPES = {
    "a list": b"[1, 2]",
    "null": b"null",
    "choices is an object": b'{"choices": {"a": 1}}',
    "text is null": b'{"choices": [{"text": null}]}',
    "usage is a string": b'{"choices": [{"text": "a"}], "usage": "lots"}',
    "completion_tokens is a string": (
        b'{"choices": [{"text": "a"}], "usage": {"completion_tokens": "many"}}'
    ),
}
# logprobs only decorate the token view: a wrong shape there leaves them out, the story goes on
LOGPROB_SHAPES = {
    "log-probability 1000": b'"token_logprobs": [1000.0], "top_logprobs": [{"a": 1000.0}]',
    "alternatives as a list": b'"token_logprobs": [-1.0], "top_logprobs": [[1, 2]]',
    "strings": b'"token_logprobs": "zz", "top_logprobs": "zz"',
    "NaN and Infinity": b'"token_logprobs": [NaN], "top_logprobs": [{"b": Infinity}]',
}


def shaped(line: bytes | None = None, body: bytes | None = None):
    def behaviour(reply: Reply) -> None:
        if reply.models:
            return reply.models_list(["m"])
        if body is not None:
            return reply.send(200, body)
        reply.start()
        reply.chunk(line or b"")
        reply.end()

    return behaviour


def generate(*args: str):
    return CliRunner().invoke(generate_app, [*args, "--prompt", "Once", "--max-new-tokens", "8"])


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("shape", list(SSE_SHAPES))
def test_slm_generate_stream_on_a_misshapen_event_is_one_line(hostile, shape):
    hostile.script["shape"] = shaped(line=SSE_SHAPES[shape])
    result = generate("--server", hostile.url("shape"), "--stream")
    one_line_error(result)
    assert result.stdout == "Once\n"  # the story's line ends before the error is said


@pytest.mark.parametrize("shape", list(JSON_SHAPES))
def test_slm_generate_on_a_misshapen_answer_is_one_line(hostile, shape):
    hostile.script["shape"] = shaped(body=JSON_SHAPES[shape])
    one_line_error(generate("--server", hostile.url("shape")))


@pytest.mark.parametrize("shape", list(LOGPROB_SHAPES))
def test_misshapen_logprobs_are_left_out_and_the_story_goes_on(hostile, shape):
    lp = b'"logprobs": {"tokens": ["a"], ' + LOGPROB_SHAPES[shape] + b"}"
    hostile.script["shape"] = shaped(
        line=b'data: {"choices": [{"text": "a", ' + lp + b', "finish_reason": "stop"}]}\n\n'
    )
    events = list(Remote(hostile.url("shape")).stream("m", "Once", settings()))
    token, done = events
    assert token.text == "a" and done.finish_reason == "eos"
    assert token.prob is None or 0.0 <= token.prob <= 1.0
    assert all(0.0 <= alt.prob <= 1.0 for alt in token.top)
    result = generate("--server", hostile.url("shape"), "--stream")
    assert result.exit_code == 0 and result.stdout.startswith("Oncea"), result.output


def test_models_without_string_ids_are_one_line(hostile):
    hostile.script["ids"] = lambda reply: reply.send(200, {"data": [{"id": {"x": 1}}]})
    assert "model 0" in one_line_error(generate("--server", hostile.url("ids")))
    hostile.script["nolist"] = lambda reply: reply.send(200, {"data": {"id": "m"}})
    assert "model list" in one_line_error(generate("--server", hostile.url("nolist")))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:abc",
        "http://[::1",
        "http://127.0.0.1:8000/ v1",
        "http://127.0.0.1:8000/v1\x01",
        "http://höst:8000",
        "http://:8000",
        "http://127.0.0.1:99999",
    ],
)
def test_slm_generate_on_a_url_urllib_refuses_is_one_line(url):
    assert "--server" in one_line_error(generate("--server", url))


@pytest.mark.parametrize("key", ["a\r\nX-Injected: 1", "tab\tkey", "nul\x00"])
def test_an_api_key_with_a_control_character_is_one_line(hostile, key):
    assert "--api-key" in one_line_error(generate("--server", hostile.url("ok"), "--api-key", key))
    assert hostile.requests == []  # refused before anything was sent


def test_a_non_latin1_api_key_is_sent_as_utf8(hostile):
    result = generate("--server", hostile.url("ok"), "--api-key", "ключ")
    assert result.exit_code == 0, result.output
    sent = hostile.requests[-1]["authorization"]
    # http.server decodes header bytes as latin-1: the raw bytes are the key's UTF-8
    assert sent.encode("latin-1") == "Bearer ключ".encode()


def test_an_honest_server_still_works_end_to_end(hostile):
    remote = Remote(hostile.url("ok"), api_key="k")
    assert remote.models() == ["m"]
    assert remote.complete("m", "a", settings()).text == "Once upon a time"
    events = list(remote.stream("m", "a", settings()))
    assert "".join(e.text for e in events) == "Once upon a time"
    assert events[-1].finish_reason == "eos"
    rows = generate("--server", hostile.url("ok"), "--format", "jsonl")
    assert rows.exit_code == 0 and json.loads(rows.stdout)["text"] == "Once upon a time"
    assert not watchers()
