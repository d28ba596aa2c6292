"""`slm-serve` under load: 1, 4, 16 and 64 concurrent streaming clients, then a soak.

The real command is started as a subprocess on the demo model (or `--checkpoint`), on a free
loopback port; clients are asyncio tasks streaming `/v1/completions` (server-sent events)
with httpx, each running requests back to back (fixed seeds, `max_tokens` each). Per
level: aggregate generated tokens/s over the level's wall time (tokens counted from the
`include_usage` chunk), time to first token p50/p95, inter-token latency p50/p95 (gaps
between text chunks of one stream), errors, and the server's RSS before and after. The
single-client row is the baseline: continuous batching should make 16 clients much more
than 16 times slower each (target: aggregate >= 4x the single client, TTFT p95 < 250 ms).

Soak: 64 clients, `--soak-requests` requests in all; every request must end with
`data: [DONE]` or a clear error (an OpenAI-shaped JSON error), none lost; RSS must grow
under 10%.

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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


async def level(url: str, clients: int, requests_each: int, max_tokens: int) -> dict:
    """`clients` concurrent clients, `requests_each` streamed requests each."""
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def run_client(c: int) -> list[dict]:
            out = []
            for r in range(requests_each):
                body = {"model": "bench", "prompt": PROMPTS[(c + r) % len(PROMPTS)],
                        "max_tokens": max_tokens, "seed": 1000 * c + r, "stream": True,
                        "stream_options": {"include_usage": True}}  # fmt: skip
                out.append(await one_request(client, url, body))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "tinystories-demo"))
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--requests-each", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--soak-requests", type=int, default=320)
    ap.add_argument(
        "--threads", type=int, default=0, help="the server's torch threads (0: its default)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="levels 1,4,16, 2 requests each, a short soak"
    )
    ap.add_argument("--max-batch", type=int, default=16, help="the server's --max-batch")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.levels, args.requests_each, args.soak_requests = "1,4,16", 2, 64
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/completions"
    command = [sys.executable, "-m", "slm_tui.cli.serve", "--checkpoint", args.checkpoint,
               "--port", str(port), "--model-name", "bench", "--max-batch", str(args.max_batch),
               "--max-queue", "64", "--device", "cpu"]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO)
    console = Console()
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
        asyncio.run(level(url, 1, 1, 8))  # warm-up
        rows = []
        for clients in (int(x) for x in args.levels.split(",")):
            before = rss_mb(server.pid)
            row = asyncio.run(level(url, clients, args.requests_each, args.max_tokens))
            row.update(rss_mb_before=before, rss_mb_after=rss_mb(server.pid))
            rows.append(row)
            console.print(f"{clients} clients: {row['tokens_per_s']:,.0f} tok/s", highlight=False)
        before = rss_mb(server.pid)
        soak_each = max(1, args.soak_requests // 64)
        soak = asyncio.run(level(url, 64, soak_each, args.max_tokens))
        soak.update(rss_mb_before=before, rss_mb_after=rss_mb(server.pid), soak=True)
    finally:
        server.terminate()
        server.wait(60)
    base = rows[0]["tokens_per_s"]
    cpu = cpu_name()
    table = Table(title=f"slm-serve, demo model, {args.max_tokens} tokens a request, {cpu}")
    for col in ("clients", "requests", "tok/s", "x 1 client", "TTFT p50/p95 ms",
                "ITL p50/p95 ms", "errors", "RSS MB before→after"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in [*rows, soak]:
        table.add_row(
            f"{r['clients']}{' (soak)' if r.get('soak') else ''}",
            str(r["requests"]),
            f"{r['tokens_per_s']:,.0f}",
            f"{r['tokens_per_s'] / base:.1f}x",
            f"{r['ttft_ms_p50']:.0f} / {r['ttft_ms_p95']:.0f}",
            f"{r['itl_ms_p50']:.1f} / {r['itl_ms_p95']:.1f}",
            f"{r['errors']} ({r['lost']} lost)",
            f"{r['rss_mb_before']:.0f} → {r['rss_mb_after']:.0f}",
        )
    console.print(table)
    at16 = next((r for r in rows if r["clients"] == 16), None)
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
    headline.append(
        {"what": f"soak: 64 clients, {soak['requests']} requests: lost / RSS growth",
         "value": f"{soak['lost']} lost, {soak['errors']} errors, RSS {growth:+.1%}",
         "target": "0 lost, < 10%", "ok": soak["lost"] == 0 and growth < 0.10}
    )  # fmt: skip
    result = {"bench": "serve", "cpu": cpu, "checkpoint": args.checkpoint,
              "max_tokens": args.max_tokens, "levels": rows, "soak": soak,
              "server_threads": args.threads or "default", "quick": args.quick,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "headline": headline}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
