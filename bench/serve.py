"""`slm-serve` under load: 1, 4, 16 and 64 concurrent streaming clients, then a soak.

The real command is started as a subprocess on the demo model (or `--checkpoint`), on a free
loopback port; clients are asyncio tasks streaming `/v1/completions` (server-sent events)
with httpx, each running requests back to back (fixed seeds, `max_tokens` each). Per
level: aggregate generated tokens/s over the level's wall time (tokens counted from the
`include_usage` chunk), time to first token p50/p95, inter-token latency p50/p95 (gaps
between text chunks of one stream), errors, and the server's RSS before and after. The
single-client row is the baseline: continuous batching should make 16 clients much more
than 16 times slower each (target: aggregate >= 4x the single client, TTFT p95 < 250 ms).

Beside each level, the engine's own rate for the same rows: `generate_batch` over the same
prompts, seeds and settings, `min(clients, --max-batch)` rows at a time, on the server's
engine thread count, in this process before the server starts (nothing else running); the
ratio server / engine says how much the HTTP layer costs (target at 64 clients: >= 0.9x).

The clients are light on purpose (`--client raw`, the default): plain asyncio streams
speaking HTTP/1.1 keep-alive, reading the chunked SSE body and parsing only the usage
chunk, so on a 2-core machine the load generator takes as little CPU from the server as it
can; `--client httpx` uses httpx's streaming client instead (the earlier figures).

Soak: 64 clients, `--soak-requests` requests in all; every request must end with
`data: [DONE]` or a clear error (an OpenAI-shaped JSON error), none lost; RSS must grow
under 10%.

The server runs as `slm-serve` does by default, its engine in a process of its own
(`--engine thread`: in the HTTP process, for a before/after); RSS counts both processes,
and each level reports the cores each used over its wall time (HTTP: the HTTP process,
the engine thread included with `--engine thread`; engine: the engine process).

Run: `.venv/bin/python bench/serve.py` (`--quick`: smaller levels); writes
bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _machine import cpu_name
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "serve.json"
PROMPTS = ["Once upon a time", "The little dog", "Lily wanted to", "One day, Tom", "The sun"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def rss_mb(pid: int) -> float:
    """The server's resident memory, its engine process (a child) included."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of the server's HTTP process and of its engine
    process (its children; none with --engine thread)."""
    import psutil

    def used(p: psutil.Process) -> float:
        times = p.cpu_times()
        return times.user + times.system

    proc = psutil.Process(pid)
    return {"http": used(proc), "engine": sum(used(c) for c in proc.children(recursive=True))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """Stream one completion; its TTFT, inter-token gaps, tokens, and how it ended."""
    start = time.perf_counter()
    first, last, gaps, tokens, ended = None, None, [], 0, "lost"
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                body_text = (await r.aread()).decode()
                clear = "error" in json.loads(body_text or "{}")
                return {"ended": f"http {r.status_code}" if clear else "lost", "tokens": 0}
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    ended = "done"
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    ended = "error"
                    continue
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if any(c.get("text") for c in chunk.get("choices", [])):
                    now = time.perf_counter()
                    if first is None:
                        first = now - start
                    else:
                        gaps.append(now - last)
                    last = now
    except httpx.HTTPError as exc:
        return {"ended": f"transport {type(exc).__name__}", "tokens": 0}
    return {"ended": ended, "ttft": first, "gaps": gaps, "tokens": tokens}


class RawClient:
    """One keep-alive HTTP/1.1 connection, streaming completions with as little work per
    frame as reading needs: frames are found by their `\n\n`, a token frame is one whose
    text is not empty, and only the usage chunk is parsed."""

    def __init__(self, url: str) -> None:
        parts = httpx.URL(url)
        self.host, self.port, self.path = parts.host, parts.port, parts.raw_path.decode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, body: dict) -> dict:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, payload = self.reader, json.dumps(body).encode()
        start = time.perf_counter()
        self.writer.write(
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        first, last, gaps, tokens, ended, buf = None, None, [], 0, "lost", b""
        while True:  # chunked transfer encoding
            size = int((await reader.readline()).strip() or b"0", 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            buf += data[:-2]
            *frames, buf = buf.split(b"\n\n")
            for frame in frames:
                if frame.startswith(b"data: [DONE]"):
                    ended = "done"
                elif b'"usage": {' in frame:
                    tokens = json.loads(frame[6:])["usage"]["completion_tokens"]
                elif b'"error"' in frame:
                    ended = "error"
                elif b'"text": ""' not in frame:
                    now = time.perf_counter()
                    if first is None:
                        first = now - start
                    else:
                        gaps.append(now - last)
                    last = now
        if status != 200:
            return {"ended": f"http {status}", "tokens": 0}
        return {"ended": ended, "ttft": first, "gaps": gaps, "tokens": tokens}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def level(
    url: str, clients: int, requests_each: int, max_tokens: int, client_kind: str = "raw"
) -> dict:
    """`clients` concurrent clients, `requests_each` streamed requests each."""
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def run_client(c: int) -> list[dict]:
            out, raw = [], RawClient(url) if client_kind == "raw" else None
            try:
                for r in range(requests_each):
                    body = request(c, r, max_tokens)
                    out.append(await (raw.request(body) if raw else one_request(client, url, body)))
            finally:
                if raw is not None:
                    raw.close()
            return out

        start = time.perf_counter()
        results = [x for xs in await asyncio.gather(*map(run_client, range(clients))) for x in xs]
        wall = time.perf_counter() - start
    ttfts = [r["ttft"] * 1000 for r in results if r.get("ttft") is not None]
    gaps = [g * 1000 for r in results for g in r.get("gaps", [])]
    ended: dict[str, int] = {}
    for r in results:
        ended[r["ended"]] = ended.get(r["ended"], 0) + 1
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_ms_p50": pct(ttfts, 0.5),
        "ttft_ms_p95": pct(ttfts, 0.95),
        "itl_ms_p50": pct(gaps, 0.5),
        "itl_ms_p95": pct(gaps, 0.95),
        "ended": ended,
        "errors": sum(v for k, v in ended.items() if k != "done"),
        "lost": ended.get("lost", 0),
    }


def request(c: int, r: int, max_tokens: int) -> dict:
    """Request r of client c (the engine baseline writes the same rows)."""
    return {"model": "bench", "prompt": PROMPTS[(c + r) % len(PROMPTS)],
            "max_tokens": max_tokens, "seed": 1000 * c + r, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip


def engine_rate(checkpoint: str, clients: int, requests_each: int, max_tokens: int,
                max_batch: int, threads: int, device: str = "cpu") -> float:  # fmt: skip
    """The engine's own tokens/s over the level's rows (`generate_batch`, best of two)."""
    import torch

    from slm_tui.generation import DEFAULTS
    from slm_tui.handle import LocalModel

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = LocalModel.load(Path(checkpoint), device)
        jobs = [request(c, r, max_tokens) for c in range(clients) for r in range(requests_each)]
        prompts, seeds = [j["prompt"] for j in jobs], [j["seed"] for j in jobs]
        settings = DEFAULTS.replace(max_new_tokens=max_tokens)
        model.generate_batch(prompts[:2], settings, 2, seeds=seeds[:2])  # warm-up
        best = 0.0
        for _ in range(2):
            start = time.perf_counter()
            done = model.generate_batch(prompts, settings, min(clients, max_batch), seeds=seeds)
            best = max(best, sum(r.num_tokens for r in done) / (time.perf_counter() - start))
        return best
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "tinystories-demo"))
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--requests-each", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--soak-requests", type=int, default=320)
    ap.add_argument(
        "--threads", type=int, default=1, help="the server's engine threads (0: its default)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="levels 1,4,16, 2 requests each, a short soak"
    )
    ap.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw")
    ap.add_argument("--device", default="cpu", help="the server's and the baseline's device")
    ap.add_argument("--engine", choices=("process", "thread"), default="process",
                    help="the server's --engine")  # fmt: skip
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.levels, args.requests_each, args.soak_requests = "1,4,16", 2, 64
    levels = [int(x) for x in args.levels.split(",")]
    console = Console()
    engine = {}
    for clients in levels:  # before the server starts: the engine alone on the machine
        engine[clients] = engine_rate(args.checkpoint, clients, args.requests_each,
                                      args.max_tokens, args.max_batch, args.threads or 1,
                                      args.device)  # fmt: skip
        console.print(f"engine, {clients} rows: {engine[clients]:,.0f} tok/s", highlight=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/completions"
    command = [sys.executable, "-m", "slm_tui.cli.serve", "--checkpoint", args.checkpoint,
               "--port", str(port), "--model-name", "bench", "--max-batch", str(args.max_batch),
               "--max-queue", "1024", "--device", args.device,
               "--engine", args.engine]  # fmt: skip
    if args.threads and args.device == "cpu":
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").is_success:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {server.stderr.read()}")
            time.sleep(0.2)
        asyncio.run(level(url, 1, 1, 8, args.client))  # warm-up
        rows = []
        for clients in levels:
            before, cpu = rss_mb(server.pid), cpu_seconds(server.pid)
            row = asyncio.run(level(url, clients, args.requests_each, args.max_tokens, args.client))
            cpu = {k: (v - cpu[k]) / row["wall_s"] for k, v in cpu_seconds(server.pid).items()}
            row.update(rss_mb_before=before, rss_mb_after=rss_mb(server.pid),
                       cores_http=cpu["http"], cores_engine=cpu["engine"],
                       engine_tokens_per_s=engine[clients],
                       vs_engine=row["tokens_per_s"] / engine[clients])  # fmt: skip
            rows.append(row)
            console.print(f"{clients} clients: {row['tokens_per_s']:,.0f} tok/s", highlight=False)
        before = rss_mb(server.pid)
        soak_each = max(1, args.soak_requests // 64)
        soak = asyncio.run(level(url, 64, soak_each, args.max_tokens, args.client))
        soak.update(rss_mb_before=before, rss_mb_after=rss_mb(server.pid), soak=True)
    finally:
        server.terminate()
        server.wait(60)
    base = rows[0]["tokens_per_s"]
    cpu = cpu_name()
    table = Table(title=f"slm-serve (--engine {args.engine}), demo model, "
                        f"{args.max_tokens} tokens a request, {cpu}")  # fmt: skip
    for col in ("clients", "requests", "tok/s", "engine tok/s", "vs engine", "x 1 client",
                "TTFT p50/p95 ms", "ITL p50/p95 ms", "cores HTTP / engine", "errors",
                "RSS MB before→after"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in [*rows, soak]:
        table.add_row(
            f"{r['clients']}{' (soak)' if r.get('soak') else ''}",
            str(r["requests"]),
            f"{r['tokens_per_s']:,.0f}",
            f"{r['engine_tokens_per_s']:,.0f}" if "engine_tokens_per_s" in r else "",
            f"{r['vs_engine']:.2f}x" if "vs_engine" in r else "",
            f"{r['tokens_per_s'] / base:.1f}x",
            f"{r['ttft_ms_p50']:.0f} / {r['ttft_ms_p95']:.0f}",
            f"{r['itl_ms_p50']:.1f} / {r['itl_ms_p95']:.1f}",
            f"{r['cores_http']:.2f} / {r['cores_engine']:.2f}" if "cores_http" in r else "",
            f"{r['errors']} ({r['lost']} lost)",
            f"{r['rss_mb_before']:.0f} → {r['rss_mb_after']:.0f}",
        )
    console.print(table)
    at16 = next((r for r in rows if r["clients"] == 16), None)
    at64 = next((r for r in rows if r["clients"] == 64), None)
    growth = soak["rss_mb_after"] / soak["rss_mb_before"] - 1
    headline = []
    if at16 is not None:
        headline += [
            {"what": "16 streaming clients vs 1: aggregate tokens/s",
             "value": f"{at16['tokens_per_s'] / base:.1f}x ({at16['tokens_per_s']:,.0f} vs "
                      f"{base:,.0f} tok/s)",
             "target": ">= 4x", "ok": at16["tokens_per_s"] >= 4 * base},
            {"what": "time to first token p95 at 16 clients",
             "value": f"{at16['ttft_ms_p95']:.0f} ms", "target": "< 250 ms",
             "ok": at16["ttft_ms_p95"] < 250},
        ]  # fmt: skip
    if at64 is not None:
        headline += [
            {"what": "64 streaming clients: the server's aggregate vs the engine's own "
                     "generate_batch over the same rows",
             "value": f"{at64['vs_engine']:.2f}x ({at64['tokens_per_s']:,.0f} vs "
                      f"{at64['engine_tokens_per_s']:,.0f} tok/s)",
             "target": ">= 0.9x", "ok": at64["vs_engine"] >= 0.9},
            {"what": "time to first token p95 at 64 clients",
             "value": f"{at64['ttft_ms_p95']:.0f} ms", "target": "< 250 ms",
             "ok": at64["ttft_ms_p95"] < 250},
        ]  # fmt: skip
    headline.append(
        {"what": f"soak: 64 clients, {soak['requests']} requests: lost / RSS growth",
         "value": f"{soak['lost']} lost, {soak['errors']} errors, RSS {growth:+.1%}",
         "target": "0 lost, < 10%", "ok": soak["lost"] == 0 and growth < 0.10}
    )  # fmt: skip
    result = {"bench": "serve", "cpu": cpu, "checkpoint": args.checkpoint,
              "max_tokens": args.max_tokens, "levels": rows, "soak": soak,
              "server_threads": args.threads or "default", "quick": args.quick,
              "client": args.client, "max_batch": args.max_batch, "engine": args.engine,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "headline": headline}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
