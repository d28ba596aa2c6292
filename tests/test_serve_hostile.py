"""`slm-serve` against hostile clients, judged from outside: a real uvicorn server (the
protocol and config `slm-serve` runs) on a loopback port, raw sockets for what no polite
client sends, httpx and the official `openai` client for the rest, and real `slm-serve`
subprocesses at a real open-file limit.

The model is the tiny random checkpoint of conftest.py. Deadlines are set short here (1-2 s)
so that the tests are quick; every wait on the server is bounded by a generous liveness
deadline, never a timing assertion.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.serve.app import Server, create_app
from slm_tui.serve.connections import Limits, uvicorn_config

MODEL = "tiny"
LIVENESS = 60.0  # seconds any one wait on the server may take before the test fails


class Tok:
    """The real tokenizer, counting its `encode` calls; EOS switched off with `eos=False`
    (every story then runs to max_tokens)."""

    def __init__(self, tok, *, eos: bool = True) -> None:
        self._tok = tok
        self.encoded = 0
        if not eos:
            self.eos_id = -1

    def encode(self, text: str) -> list[int]:
        self.encoded += 1
        return self._tok.encode(text)

    def __getattr__(self, name):
        return getattr(self._tok, name)


class Records(logging.Handler):
    """Every record the server logs (uvicorn's loggers and asyncio's)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR or r.exc_info]


class Running:
    """A real server in a thread on a free loopback port, configured as `slm-serve` is."""

    def __init__(
        self, checkpoint: Path, *, eos: bool = True, limits: Limits | None = None, **options
    ) -> None:
        loaded = load_checkpoint(checkpoint)
        self.tok = loaded.tokenizer = Tok(loaded.tokenizer, eos=eos)
        self.server = Server(loaded, model_name=MODEL, **options)
        limits = limits or Limits()
        app = create_app(self.server, body_timeout=limits.body_timeout)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.uvicorn = uvicorn.Server(uvicorn_config(app, limits=limits))
        self.log = Records()  # (after the config: it sets up uvicorn's loggers)
        for name in ("uvicorn", "uvicorn.error", "asyncio"):
            logging.getLogger(name).addHandler(self.log)
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [sock]})
        self.thread.start()
        _until(lambda: self.uvicorn.started, "the server did not start")

    def post(self, path: str, body, **kw) -> httpx.Response:
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        headers = {"content-type": "application/json", **kw.pop("headers", {})}
        return httpx.post(self.url + path, content=body, headers=headers, timeout=60, **kw)

    def health(self) -> dict:
        answer = httpx.get(self.url + "/health", timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def metric(self, name: str) -> float:
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=LIVENESS)

    def close(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(30)
        for name in ("uvicorn", "uvicorn.error", "asyncio"):
            logging.getLogger(name).removeHandler(self.log)


def _until(condition, message: str, timeout: float = LIVENESS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (the connection stays open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _error(answer: httpx.Response, status: int, param: str | None, *needles: str) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    for needle in needles:
        assert needle in error["message"], error
    return error


def _raw_head(path: str, body: bytes, length: int | None = None) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    running = Running(tiny_checkpoint, max_batch=16, max_queue=64, max_tokens_cap=400)
    yield running
    running.close()


# ---- read deadlines and the connection bound (item 10) -----------------------------------------
def test_half_sent_requests_are_closed_at_their_deadline_and_health_keeps_answering(
    tiny_checkpoint,
):
    running = Running(tiny_checkpoint, limits=Limits(header_timeout=1.0, body_timeout=1.0))
    try:
        silent = running.connect()  # sends nothing at all
        half_head = running.connect()
        half_head.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-a: ")
        body = json.dumps({"model": MODEL, "prompt": "Once", "max_tokens": 2}).encode()
        half_body = running.connect()
        half_body.sendall(_raw_head("/v1/completions", body) + body[:10])
        assert running.health()["status"] == "ok"  # served meanwhile

        assert _read_all(silent) == b""  # closed, nothing to answer
        late = _read_all(half_head)
        assert late.startswith(b"HTTP/1.1 408 ")
        error = json.loads(late.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "request_timeout" and "head" in error["message"]
        late = _read_all(half_body)  # the head was whole: the app answers, and closes
        assert late.startswith(b"HTTP/1.1 408 ") and b"connection: close" in late.lower()
        error = json.loads(late.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "request_timeout" and "body" in error["message"]

        # One byte at a time (slowloris): cut off before the head is whole, not fed forever.
        head = _raw_head("/v1/completions", body)
        drip = running.connect()
        sent = 0
        with pytest.raises(OSError):  # a broken pipe or a reset, once the server has closed
            for byte in head:
                drip.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
            drip.sendall(body)
            drip.recv(1)  # (not reached on a server with a deadline)
        assert sent < len(head)

        # The next request on a kept-alive connection has the same deadline.
        kept = running.connect()
        kept.sendall(_raw_head("/v1/completions", body) + body)
        assert _read_response(kept).startswith(b"HTTP/1.1 200 ")
        kept.sendall(b"GET /health HTTP/1.1\r\nHo")
        assert _read_all(kept).startswith(b"HTTP/1.1 408 ")

        # And after all that the server is as it was.
        assert running.post("/v1/completions", body).status_code == 200
        assert running.log.errors() == []
    finally:
        running.close()


def test_a_flood_of_idle_connections_cannot_lock_out_health(tiny_checkpoint):
    limits = Limits(header_timeout=60.0, max_connections=20)
    running = Running(tiny_checkpoint, limits=limits)
    try:
        flood = []
        for i in range(60):  # three times the bound, each holding half a request
            s = running.connect()
            s.sendall(b"GET /health HTTP/1.1\r\nX-a: " if i % 2 else b"GE")
            flood.append(s)
        for _ in range(5):  # each new client closes the one idle longest, not itself
            assert running.health()["status"] == "ok"
        _until(lambda: len(running.uvicorn.server_state.connections) <= 20, "over the bound")

        def closed() -> list[int]:
            gone = []
            for i, s in enumerate(flood):
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        gone.append(i)
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    gone.append(i)
            return gone

        _until(lambda: len(closed()) >= 40, "the flood was not closed for room")
        assert closed()[:40] == list(range(40))  # the ones idle longest went first
        for s in flood:
            s.close()
        assert running.log.errors() == []
    finally:
        running.close()


def test_busy_connections_are_never_closed_for_room_and_a_new_one_gets_503(tiny_checkpoint):
    running = Running(tiny_checkpoint, eos=False, limits=Limits(max_connections=2),
                      max_tokens_cap=100_000)  # fmt: skip
    try:
        body = {"model": MODEL, "prompt": "Once", "max_tokens": 100_000, "stream": True}
        streams = []
        for _ in range(2):
            s = running.connect()
            raw = json.dumps(body).encode()
            s.sendall(_raw_head("/v1/completions", raw) + raw)
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
            streams.append(s)
        refused = running.connect()
        answer = _read_all(refused)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == (
            "too_many_connections"
        )
        for s in streams:  # both streams are still running
            s.settimeout(LIVENESS)
            assert b"data: " in s.recv(65536)
            s.close()
        _until(lambda: running.server.scheduler.stats.active_rows == 0, "rows not freed")
        assert running.health()["status"] == "ok"
    finally:
        running.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], nofile: int) -> tuple[subprocess.Popen, str]:
    """A real `slm-serve` (or `python -c` server) process whose open-file limit is `nofile`,
    soft and hard (as `ulimit -n` sets it)."""
    port = _free_port()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [sys.executable, *[a.replace("PORT", str(port)) for a in args]],
        stderr=subprocess.PIPE, text=True, preexec_fn=limit,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        return _answers(url)

    _until(up, "the server did not start", timeout=120)
    return proc, url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=30).is_success
    except httpx.TransportError:
        return False


def _flood(url: str, n: int) -> list[socket.socket]:
    port = int(url.rsplit(":", 1)[1])
    flood = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(LIVENESS)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        flood.append(s)
    return flood


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return stderr


def test_slm_serve_at_a_low_open_file_limit_keeps_answering_health(tiny_checkpoint):
    proc, url = _start(
        ["-m", "slm_tui.cli.serve", "--checkpoint", str(tiny_checkpoint), "--port", "PORT",
         "--device", "cpu", "--model-name", MODEL], nofile=256,
    )  # fmt: skip
    flood = []
    try:
        flood = _flood(url, 300)  # more half-sent requests than the process can hold files
        for _ in range(5):
            answer = httpx.get(url + "/health", timeout=30)
            assert answer.status_code == 200 and answer.json()["status"] == "ok"
    finally:
        for s in flood:
            s.close()
        stderr = _stop(proc)
    # 256 files: 192 for connections, 48 of them for a burst of accepts.
    assert "holds 144 connections, not 1000" in stderr  # the warning, once
    assert "cannot accept" not in stderr  # never out of files
    assert "Traceback" not in stderr and len(stderr.splitlines()) < 10, stderr


# A server with more connections allowed than open files, so that accept() itself fails:
# asyncio would log a traceback for every failed accept.
_OVERCOMMITTED = """
import sys, uvicorn
from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.serve.app import Server, create_app
from slm_tui.serve.connections import Limits, uvicorn_config
server = Server(load_checkpoint(sys.argv[1], "cpu"), model_name="tiny")
limits = Limits(header_timeout=3.0, max_connections=10_000)
uvicorn.Server(uvicorn_config(create_app(server), port=int(sys.argv[2]), limits=limits)).run()
"""


def test_out_of_open_files_is_one_line_not_a_traceback_storm(tiny_checkpoint):
    proc, url = _start(["-c", _OVERCOMMITTED, str(tiny_checkpoint), "PORT"], nofile=128)
    flood = []
    try:
        flood = _flood(url, 200)  # past the limit: the kernel queues the rest unaccepted
        time.sleep(2)  # (the failing accepts happen now; each would have been a traceback)
        for s in flood:
            s.close()
        # The header deadline freed the files: the server answers again.
        _until(lambda: _answers(url), "no recovery")
    finally:
        for s in flood:
            s.close()
        stderr = _stop(proc)
    assert "cannot accept connections" in stderr and "Too many open files" in stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) < 10, stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--header-timeout", "0"), ("--body-timeout", "nan"), ("--body-timeout", "-1"),
     ("--max-connections", "0")],
)  # fmt: skip
def test_bad_deadline_and_connection_flags_are_one_line(flag, value):
    from typer.testing import CliRunner

    from slm_tui.cli.serve import app

    result = CliRunner().invoke(app, [flag, value])
    assert result.exit_code == 2 and flag in result.stderr, result.output
    assert result.stderr.count("\n") == 1


# ---- /health and /metrics when the work is done (issue 20, item 4) -----------------------------
def test_an_idle_server_reports_no_active_rows(served):
    done = served.post(
        "/v1/completions", {"model": MODEL, "prompt": ["Once", "Tom"], "n": 3, "max_tokens": 5}
    )
    assert done.status_code == 200 and len(done.json()["choices"]) == 6
    chat = served.post(
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
    )
    assert chat.status_code == 200
    # The rows ended in the engine's last step and no step follows: still 0 now, not 1 or 6.
    health = served.health()
    assert (health["active_rows"], health["queued_rows"]) == (0, 0)
    assert served.metric("slm_active_rows") == 0 and served.metric("slm_queue_depth") == 0
    assert served.metric("slm_rows_finished_total") >= 7


# ---- a plain request whose client leaves (item 13) ----------------------------------------------
def test_a_plain_request_whose_client_disconnects_is_cancelled(tiny_checkpoint):
    running = Running(tiny_checkpoint, eos=False, max_tokens_cap=100_000)
    try:
        stats = running.server.scheduler.stats
        for path, body in (
            ("/v1/completions", {"prompt": "Once"}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Once"}]}),
        ):
            raw = json.dumps({"model": MODEL, "max_tokens": 100_000, **body}).encode()
            client = running.connect()
            client.sendall(_raw_head(path, raw) + raw)
            start = stats.tokens_generated
            _until(lambda: stats.tokens_generated > start + 20, "the row never ran")  # noqa: B023
            client.close()  # mid-story, without reading a byte
            # Cancelled at the next step: a row left alone would write 100,000 tokens.
            _until(lambda: stats.active_rows == 0, "the row decoded on after the client left")
            assert stats.tokens_generated - start < 100_000
        assert running.metric('slm_requests_total{path="/v1/completions",status="499"}') == 1
        assert running.post("/v1/completions", {"model": MODEL, "prompt": "A",
                                                "max_tokens": 3}).status_code == 200  # fmt: skip
        assert running.log.errors() == []  # not a traceback for a client that left
    finally:
        running.close()


# ---- types and the API key (item 20) -----------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/completions", "n", True),
        ("/v1/completions", "temperature", True),
        ("/v1/completions", "max_tokens", True),
        ("/v1/completions", "seed", False),
        ("/v1/completions", "top_k", True),
        ("/v1/completions", "logprobs", True),
        ("/v1/completions", "stream", "yes"),
        ("/v1/completions", "stream", 1),
        ("/v1/completions", "echo", "no"),
        ("/v1/chat/completions", "logprobs", "yes"),
        ("/v1/chat/completions", "top_logprobs", True),
        ("/v1/chat/completions", "stream", "true"),
    ],
)
def test_a_boolean_is_not_a_number_and_a_string_is_not_a_boolean(served, path, field, value):
    body = {"model": MODEL, "max_tokens": 2}
    body |= {"prompt": "a"} if path == "/v1/completions" else {
        "messages": [{"role": "user", "content": "a"}]}  # fmt: skip
    _error(served.post(path, {**body, field: value}), 400, field, field)


def test_numbers_and_booleans_of_the_right_type_are_still_taken(served):
    body = {"model": MODEL, "prompt": "a", "max_tokens": 2, "temperature": 1, "top_p": 1,
            "n": 2, "stream": False, "echo": False, "seed": 0}  # fmt: skip
    assert served.post("/v1/completions", body).status_code == 200
    options = {"include_usage": True}
    streamed = served.post("/v1/completions", {**body, "stream": True, "stream_options": options})
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    _error(served.post("/v1/completions", {**body, "stream": True,
                                           "stream_options": {"include_usage": 1}}),
           400, "stream_options.include_usage")  # fmt: skip


def test_a_non_ascii_api_key_matches_the_bytes_clients_send(tiny_checkpoint):
    running = Running(tiny_checkpoint, api_key="clé")
    try:
        body = {"model": MODEL, "prompt": "a", "max_tokens": 2}

        def post(key: bytes) -> int:
            headers = {"authorization": b"Bearer " + key}
            return running.post("/v1/completions", body, headers=headers).status_code

        assert post("clé".encode()) == 200  # UTF-8: curl, browsers, most clients
        assert post("clé".encode("latin-1")) == 200  # the header's historical charset
        for wrong in (b"cle", b"cl\xc3", "clé".encode() + b"x", b"x", "Clé".encode()):
            assert post(wrong) == 401
        assert running.server.requests[("/v1/completions", 401)] == 5
    finally:
        running.close()


# ---- text that is not Unicode (item 14) ---------------------------------------------------------
PROMPT = {"model": MODEL, "max_tokens": 2}
CHAT = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    ("path", "body", "param", "where"),
    [
        ("/v1/completions", {**PROMPT, "prompt": "Once LONE upon"}, "prompt",
         "prompt holds a lone surrogate (U+D800 at character 5)"),
        ("/v1/completions", {**PROMPT, "prompt": ["fine", "LONE"]}, "prompt",
         "prompt[1] holds a lone surrogate (U+D800 at character 0)"),
        ("/v1/chat/completions", {**CHAT, "messages": [*CHAT["messages"],
         {"role": "assistant", "content": "a LONE"}]}, "messages",
         "messages[1].content holds a lone surrogate (U+D800"),
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [
         {"type": "text", "text": "LONE"}]}]}, "messages", "messages[0].content"),
    ],
    ids=["prompt", "prompt-list", "chat", "chat-parts"],
)  # fmt: skip
def test_a_lone_surrogate_is_a_400_naming_where_it_is(served, path, body, param, where):
    raw = json.dumps(body)
    before = len(served.log.records)
    _error(served.post(path, raw.replace("LONE", "\\ud800")), 400, param, where,
           "not valid Unicode")  # fmt: skip
    _error(served.post(path, raw.replace("LONE", "\\udfff")), 400, param, "(U+DFFF")
    assert [r.getMessage() for r in served.log.records[before:]] == []  # no traceback
    # A surrogate pair is one character (an emoji), and fine.
    assert served.post(path, raw.replace("LONE", "\\ud83d\\ude00")).status_code == 200


# ---- more choices than the queue holds (item 17) -----------------------------------------------
def test_more_choices_than_the_queue_can_ever_hold_is_400_before_tokenizing(tiny_checkpoint):
    running = Running(tiny_checkpoint, max_queue=8)
    try:
        encoded = running.tok.encoded
        huge = {"model": MODEL, "prompt": ["a"] * 170_000, "max_tokens": 1}
        _error(running.post("/v1/completions", huge), 400, "prompt",
               "170000 choices", "queues at most 8")  # fmt: skip
        _error(running.post("/v1/completions", {"model": MODEL, "prompt": ["a", "b", "c"],
                                                "n": 3}), 400, "prompt", "9 choices")  # fmt: skip
        _error(running.post("/v1/completions", {"model": MODEL, "prompt": "a", "n": 9}),
               400, "n", "9 choices")  # fmt: skip
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "a"}], "n": 16}
        _error(running.post("/v1/chat/completions", chat), 400, "n", "16 choices")
        assert running.tok.encoded == encoded  # refused before any prompt was tokenized
        # Exactly what the queue holds is served.
        full = {"model": MODEL, "prompt": ["a", "b"], "n": 4, "max_tokens": 2}
        assert len(running.post("/v1/completions", full).json()["choices"]) == 8
        # A prompt too long for the context is still refused naming it (tokenized off the
        # event loop: ~1 MB of text).
        long = {"model": MODEL, "prompt": "word " * 190_000}
        _error(running.post("/v1/completions", long), 400, "prompt", "context is 64")
        assert running.health()["status"] == "ok"
    finally:
        running.close()
