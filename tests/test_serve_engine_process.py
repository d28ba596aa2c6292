"""The engine in its own process (`slm-serve --engine process`, the default): what happens
when that process dies, that it never outlives the server, and the command's one-line
errors. The OpenAI contract itself runs on it in test_serve.py (its fixtures)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from test_serve import MODEL, NO_EOS, Running

pytest.importorskip("uvicorn")


def _until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone; without /proc (not
    # Linux) the orphaned child is reaped by init and the signal check says it
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return not os.path.isdir("/proc")


def test_an_engine_process_that_dies_ends_its_rows_with_an_error_and_the_server_says_so(
    tiny_checkpoint,
):
    running = Running(tiny_checkpoint, max_tokens_cap=100_000, engine="process")
    try:
        engine = running.server.scheduler
        body = {"model": MODEL, "prompt": "Once", "max_tokens": 100_000, "stream": True, **NO_EOS}
        lines = []
        with httpx.stream("POST", running.url + "/v1/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 6:
                    os.kill(engine.pid, signal.SIGKILL)  # mid-story
        assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
        error = next(line for line in lines if '"error"' in line)
        assert "the engine process ended" in error
        health = httpx.get(running.url + "/health").json()
        assert health["status"] == "stopped" and health["active_rows"] == 0
        after = running.post("/v1/completions", {"model": MODEL, "prompt": "a", "max_tokens": 2})
        assert after.status_code == 503
        assert "engine process has ended" in after.json()["error"]["message"]
    finally:
        running.close()


def test_the_engine_process_ends_with_the_server_even_when_the_server_is_killed(tiny_checkpoint):
    script = (
        "import sys, time\n"
        "from slm_tui.checkpoint.io import load_checkpoint\n"
        "from slm_tui.serve.app import Server\n"
        "s = Server(load_checkpoint(sys.argv[1], 'cpu'), model_name='tiny', engine='process')\n"
        "print(s.scheduler.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tiny_checkpoint)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        child = int(proc.stdout.readline())
        assert _alive(child)
        proc.kill()  # no shutdown code runs: only the closed socket tells the child
        proc.wait(10)
        _until(lambda: not _alive(child), "the engine process outlived the server", 20)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_seeded_request_writes_the_same_text_with_either_engine(tiny_checkpoint):
    body = {"model": MODEL, "prompt": "Once upon", "max_tokens": 30, "seed": 9, "n": 2,
            "logprobs": 2, **NO_EOS}  # fmt: skip
    answers = []
    for engine in ("thread", "process"):
        running = Running(tiny_checkpoint, engine=engine)
        try:
            answers.append(running.post("/v1/completions", body).json())
        finally:
            running.close()
    thread, process = answers
    assert [c["text"] for c in thread["choices"]] == [c["text"] for c in process["choices"]]
    assert thread["usage"] == process["usage"]
    for a, b in zip(thread["choices"], process["choices"], strict=True):
        assert a["logprobs"]["tokens"] == b["logprobs"]["tokens"]
        assert a["logprobs"]["token_logprobs"] == pytest.approx(b["logprobs"]["token_logprobs"])


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slm_tui.cli.serve", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_slm_serve_engine_errors_are_one_line(tiny_checkpoint):
    bad = _serve("--checkpoint", str(tiny_checkpoint), "--engine", "gpu")
    assert bad.returncode == 2 and "--engine must be process or thread" in bad.stderr
    assert bad.stderr.count("\n") == 1
    device = _serve("--checkpoint", str(tiny_checkpoint), "--device", "tpu", "--port", "1")
    assert device.returncode == 2 and "tpu" in device.stderr, device.stderr
    assert "Traceback" not in device.stderr and device.stderr.count("\n") == 1
