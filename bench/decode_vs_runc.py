"""Batch-1 greedy decode on one CPU thread: llama2.c's run.c beside our engine, same weights.

The peer is karpathy/llama2.c's `run.c` (github.com/karpathy/llama2.c; none of its code is in
this repository): built here from `--runc-src` (its run.c, or a checkout) with llama2.c's
`make runfast` flags minus OpenMP (`gcc -Ofast -march=native`, one thread), cached in
~/.cache/slm-tui/bench/runc/; it runs the checkpoint's `slm-train export --format hf` folder
converted by bench/_llama2c.py (vocabulary renumbered for run.c's fixed ids, q/k rows permuted
for its RoPE layout; see there). Without `--runc-src` (or $SLM_LLAMA2C) the run.c row is
skipped and the command to get it printed.

Rows, one function each in `ROWS`, measured on the same prompt and positions. A new decode
path is one more function: a step, as `row_fused_step` does it
(`_step_row(ctx, "fast step", lambda: make_step(ctx.model))`), checked and timed like the
others; once the engine decodes through it, the generate() row measures it end to end.
- run.c: "decode tok/s" is its own "achieved tok/s" (forwards after the first over their
  time, a millisecond clock); "whole run" is new tokens over the process's wall time, timed
  here (start-up, and the prompt fed one token at a time, included).
- generate(): our engine end to end, greedy (temperature 0, repetition penalty 1, no top-p or
  min-p), `ignore_eos` so both sides write the same number of tokens; decode tok/s from the
  token events' timestamps (first to last), whole run = new tokens / the call's wall time
  (prompt encoding and prefill included).
- FusedDecoder step / GPT.forward step: the model's decode step alone (what
  bench/decode_step.py times), feeding the story's own tokens at its own positions.

Correctness first: every row's greedy tokens are printed as run.c prints them and compared
byte for byte with what run.c wrote; the first differing token is named. Both sides get the
same prompt ids: run.c's encoder always adds a dummy-prefix space (Llama 2's tokenizer has
one, ours not), so our engine is given " " + prompt, and run.c's own `encode` (a harness
compiled against its run.c) is checked to give the same ids. The story stays inside the
context (prompt + new tokens - 1 <= context_length): run.c cannot slide a window. run.c
also stops where it samples its BOS (our model may, after an EOS); `ignore_eos` keeps ours
going, so the texts compare up to there.

Repeats are interleaved (a burst of load on the shared machine hits every row) and each
row keeps its best. The load average is recorded beside the figures.

Run: `.venv/bin/python bench/decode_vs_runc.py --runc-src ../llama2.c` (or `--quick`);
writes bench/results/decode_vs_runc.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _llama2c import (
    CFLAGS,
    GET_LLAMA2C,
    RUNC_BOS,
    Converted,
    ConvertError,
    build,
    cache_dir,
    compiler,
    convert,
    find_run_c,
    render,
    runc_prompt_ids,
    source_version,
)
from _machine import cpu_name
from rich.console import Console
from rich.table import Table

from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.generation import SamplingSettings, generate
from slm_tui.generation.engine import prepare_prompt

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "decode_vs_runc.json"
SLM_TRAIN = Path(sys.executable).parent / "slm-train"


@dataclass
class Timing:
    decode_tok_s: float  # one token per forward, steady state
    run_tok_s: float | None = None  # new tokens / wall time of the whole call


@dataclass
class Row:
    name: str
    once: Callable[[], Timing]  # one timed repeat
    ids: list[int]  # the greedy tokens it wrote (our ids); [] for run.c, which gives text
    what: str  # how it is measured, for the JSON
    text: bytes | None = None  # run.c: what it printed (the reference)


@dataclass
class Ctx:
    model: object
    tok: object
    prompt: str  # what our engine is given: " " + the prompt (run.c's dummy prefix)
    prompt_ids: list[int]  # ours, BOS first
    new_tokens: int
    ref_ids: list[int] = field(default_factory=list)  # generate()'s greedy tokens
    conv: Converted | None = None
    run: Path | None = None  # the run.c binary
    runc_args: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def greedy(new_tokens: int) -> SamplingSettings:
    return SamplingSettings(temperature=0.0, repetition_penalty=1.0, top_p=1.0, min_p=0.0,
                            top_k=0, ignore_eos=True, seed=0, max_new_tokens=new_tokens)  # fmt: skip


def generate_events(ctx: Ctx) -> tuple[list, float]:
    """One greedy story through `generate()`: its token events and the call's wall time."""
    t = time.perf_counter()
    story = generate(ctx.model, ctx.tok, ctx.prompt, greedy(ctx.new_tokens))
    events = [e for e in story if e.kind == "token"]
    return events, time.perf_counter() - t


# ---- rows: one function each; None skips the row ---------------------------------------------
def row_runc(ctx: Ctx) -> Row | None:
    if ctx.run is None:
        return None
    cmd = [str(ctx.run), *ctx.runc_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ids = ctx.conv.to_runc(ctx.ref_ids)
    written = ids.index(RUNC_BOS) if RUNC_BOS in ids else len(ids)  # run.c stops at its BOS

    def once() -> Timing:
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env, check=True)
        wall = time.perf_counter() - t
        m = re.search(rb"achieved tok/s: ([0-9.]+)", proc.stderr)
        if not m:
            raise RuntimeError(f"run.c printed no tok/s: {proc.stderr[-200:]!r}")
        return Timing(float(m.group(1)), written / wall)

    out = subprocess.run(cmd, capture_output=True, env=env, check=True).stdout
    what = "its own achieved tok/s; whole run: new tokens / process wall time"
    return Row("run.c (llama2.c)", once, [], what, text=out.removesuffix(b"\n"))


def row_generate(ctx: Ctx) -> Row:
    def once() -> Timing:
        events, wall = generate_events(ctx)
        steady = (len(events) - 1) / (events[-1].elapsed - events[0].elapsed)
        return Timing(steady, len(events) / wall)

    what = "token events' timestamps, first to last; whole run: new tokens / call"
    return Row("slm-tui generate()", once, [e.token_id for e in generate_events(ctx)[0]], what)


def _step_row(ctx: Ctx, name: str, make_step: Callable[[], Callable]) -> Row:
    """A decode step alone, `make_step()(tok (1, 1), cache) -> logits (1, V)`: the prompt
    prefilled by `GPT.forward`, then generate()'s tokens fed one by one."""
    model = ctx.model
    prompt = torch.tensor([ctx.prompt_ids])
    feed = [torch.tensor([[i]]) for i in ctx.ref_ids[:-1]]

    @torch.inference_mode()
    def once() -> Timing:
        step, cache = make_step(), model.new_cache(1)
        model(prompt, cache=cache, last_only=True)
        t = time.perf_counter()
        for tok in feed:
            step(tok, cache)
        return Timing(len(feed) / (time.perf_counter() - t))

    @torch.inference_mode()
    def greedy_ids() -> list[int]:
        step, cache = make_step(), model.new_cache(1)
        logits = model(prompt, cache=cache, last_only=True)[0][:, -1]
        ids = [int(logits.argmax())]
        while len(ids) < ctx.new_tokens:
            ids.append(int(step(torch.tensor([[ids[-1]]]), cache).argmax()))
        return ids

    return Row(name, once, greedy_ids(), "decode steps alone, the story's tokens and positions")


def row_fused_step(ctx: Ctx) -> Row:
    return _step_row(ctx, "FusedDecoder step", ctx.model.fused_decoder)


def row_forward_step(ctx: Ctx) -> Row:
    model = ctx.model

    def make_step():
        return lambda tok, cache: model(tok, cache=cache, last_only=True)[0][:, -1]

    return _step_row(ctx, "GPT.forward step", make_step)


ROWS: list[Callable[[Ctx], Row | None]] = [
    row_runc,
    row_generate,
    row_fused_step,
    row_forward_step,
]


# ---- set-up, checks, measurement -------------------------------------------------------------
def setup_runc(ctx: Ctx, args, console: Console) -> None:
    """Export and convert the checkpoint (always: the text check prints ids as run.c does),
    then build run.c and check its prompt ids against ours."""
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as t:
        hf = Path(t) / "hf"
        export = [str(SLM_TRAIN), "export", "--checkpoint", str(args.checkpoint),
                  "--format", "hf", "--output", str(hf)]  # fmt: skip
        subprocess.run(export, check=True, capture_output=True)
        try:
            ctx.conv = convert(hf, cache / "weights")
        except ConvertError as exc:
            ctx.notes.append(f"run.c row skipped: {exc}")
            return
    run_c = find_run_c(args.runc_src)
    if run_c is None:
        where = f" ({args.runc_src} has no run.c)" if args.runc_src else ""
        ctx.notes.append(f"run.c row skipped: no llama2.c source{where}; get it with "
                         f"`{GET_LLAMA2C}` and pass --runc-src llama2.c")  # fmt: skip
        return
    ctx.run, encode = build(run_c, cache)
    steps = len(ctx.prompt_ids) - 1 + ctx.new_tokens  # forwards: the prompt one by one, then new
    ctx.runc_args = [str(ctx.conv.model_bin), "-z", str(ctx.conv.tokenizer_bin), "-t", "0",
                     "-s", "1", "-n", str(steps), "-i", args.prompt]  # fmt: skip
    theirs = ctx.conv.to_ours(runc_prompt_ids(encode, ctx.conv, args.prompt))
    if theirs != ctx.prompt_ids:
        ctx.notes.append(f"prompt ids differ: run.c {theirs}, ours {ctx.prompt_ids}")
    else:
        console.print(f"prompt ids, run.c's encode and ours (BOS first): {theirs}")
    console.print(f"[dim]run.c: {ctx.run} {' '.join(ctx.runc_args)}[/]", soft_wrap=True)


def check_text(ctx: Ctx, row: Row, want: bytes, want_from: str) -> str:
    """'identical', or where `row`'s greedy text first departs from `want` (the detail goes
    to the notes printed under the table)."""
    if ctx.conv is None:
        return "identical ids" if row.ids == ctx.ref_ids else "ids differ"
    runc_prompt = ctx.conv.to_runc(ctx.prompt_ids)
    ids = ctx.conv.to_runc(row.ids)
    got = render(ctx.conv.pieces, runc_prompt + ids)
    if got == want:
        return "identical"
    for k in range(len(ids)):
        part = render(ctx.conv.pieces, runc_prompt + ids[: k + 1])
        if not want.startswith(part):
            start = len(render(ctx.conv.pieces, runc_prompt + ids[:k]))
            ctx.notes.append(
                f"{row.name}: new token {k} is id {row.ids[k]} {ctx.conv.pieces[ids[k]]!r}; "
                f"{want_from} wrote {want[start : start + 24]!r}"
            )
            return f"differs at token {k}"
    ctx.notes.append(f"{row.name}: {want_from} wrote more: {want[len(got) : len(got) + 24]!r}")
    return "shorter"


def check_rows(ctx: Ctx, rows: list[Row]) -> tuple[dict[str, str], bytes]:
    """Each row's text check against run.c's output (or generate()'s, without run.c)."""
    runc = next((r for r in rows if r.text is not None), None)
    if runc is not None:
        want, want_from = runc.text, "run.c"
    elif ctx.conv is not None:
        ids = ctx.conv.to_runc(ctx.prompt_ids + ctx.ref_ids)
        want, want_from = render(ctx.conv.pieces, ids), "generate()"
    else:
        want, want_from = ctx.tok.decode(ctx.ref_ids).encode("utf-8"), "generate()"
    checks = {r.name: "reference" if r is runc else check_text(ctx, r, want, want_from)
              for r in rows}  # fmt: skip
    return checks, want


def measure(rows: list[Row], repeats: int) -> dict[str, Timing]:
    """Each row's best over `repeats` interleaved rounds (a burst of load hits every row)."""
    best: dict[str, Timing] = {}
    for _ in range(repeats):
        for r in rows:
            t = r.once()
            b = best.setdefault(r.name, t)
            b.decode_tok_s = max(b.decode_tok_s, t.decode_tok_s)
            if t.run_tok_s is not None:
                b.run_tok_s = max(b.run_tok_s or 0.0, t.run_tok_s)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "tinystories-demo")
    ap.add_argument("--runc-src", default=os.environ.get("SLM_LLAMA2C"),
                    help="karpathy/llama2.c's run.c, or a checkout of it ($SLM_LLAMA2C)")  # fmt: skip
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=str(cache_dir()), help="run.c binaries, converted weights")
    ap.add_argument("--quick", action="store_true", help="three rounds")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 3)
    console = Console()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    loaded = load_checkpoint(args.checkpoint, "cpu")
    model, tok = loaded.model.eval(), loaded.tokenizer
    context = model.cfg.context_length
    prompt = " " + args.prompt  # run.c's dummy prefix
    prompt_ids, _ = prepare_prompt(tok, prompt, context)
    new = min(args.new_tokens, context + 1 - len(prompt_ids))  # no sliding window
    if new < args.new_tokens:
        console.print(f"[yellow]{len(prompt_ids)} prompt ids + {args.new_tokens} new tokens do "
                      f"not fit the context of {context}: {new} new tokens[/]")  # fmt: skip
    ctx = Ctx(model, tok, prompt, prompt_ids, new)
    setup_runc(ctx, args, console)
    ctx.ref_ids = [e.token_id for e in generate_events(ctx)[0]]
    rows = [r for r in (make(ctx) for make in ROWS) if r is not None]
    checks, want = check_rows(ctx, rows)
    best = measure(rows, args.repeats)
    load_after = os.getloadavg()[0]

    runc = next((r for r in rows if r.text is not None), None)
    ref = best[runc.name] if runc else None
    cpu = cpu_name()
    table = Table(title=f"batch-1 greedy decode, {args.threads} thread, "
                  f"{model.num_params() / 1e6:.2f}M params, {args.prompt!r} + {new} tokens "
                  f"(context {context}), best of {args.repeats}; {cpu}")  # fmt: skip
    table.caption = "decode: one token per forward, steady state; run: new tokens / wall time"
    for col in ("row", "decode tok/s", "ms/token", "vs run.c", "run tok/s", "text"):
        left = col in ("row", "text")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    out_rows = []
    for r in rows:
        b = best[r.name]
        ratio = b.decode_tok_s / ref.decode_tok_s if ref else None
        table.add_row(r.name, f"{b.decode_tok_s:,.0f}", f"{1e3 / b.decode_tok_s:.3f}",
                      "" if ratio is None else f"{ratio:.2f}x",
                      "" if b.run_tok_s is None else f"{b.run_tok_s:,.0f}", checks[r.name])  # fmt: skip
        out_rows.append({"row": r.name, "decode_tok_s": b.decode_tok_s,
                         "ms_per_token": 1e3 / b.decode_tok_s, "vs_runc": ratio,
                         "whole_run_tok_s": b.run_tok_s, "text": checks[r.name],
                         "measured": r.what})  # fmt: skip
    console.print(table)
    for note in ctx.notes:
        console.print(f"[yellow]{note}[/]")
    console.print(f"load average {load_before:.1f} before, {load_after:.1f} after, "
                  f"{os.cpu_count()} CPUs")  # fmt: skip
    ours = best["slm-tui generate()"]
    if ref:
        headline = [
            {"what": "batch-1 greedy decode, 1 thread: generate() vs run.c, same weights",
             "value": f"{ours.decode_tok_s:,.0f} vs {ref.decode_tok_s:,.0f} tok/s "
                      f"({ours.decode_tok_s / ref.decode_tok_s:.2f}x)",
             "target": ">= 1.0x run.c", "ok": ours.decode_tok_s >= ref.decode_tok_s},
            {"what": f"greedy text of generate() vs run.c ({new} tokens)",
             "value": checks["slm-tui generate()"], "target": "identical",
             "ok": checks["slm-tui generate()"] == "identical"},
        ]  # fmt: skip
    else:
        headline = [{"what": "batch-1 greedy decode, 1 thread: generate()",
                     "value": f"{ours.decode_tok_s:,.0f} tok/s (run.c not built)",
                     "target": ">= 1.0x run.c", "ok": None}]  # fmt: skip
    run_c = find_run_c(args.runc_src)
    runc_info = runc and {"source": str(run_c), **source_version(run_c), "compiler": compiler(),
                          "flags": " ".join(CFLAGS), "threads": 1,
                          "header": list(ctx.conv.header), "args": ctx.runc_args}  # fmt: skip
    result = {
        "bench": "decode_vs_runc",
        "checkpoint": str(args.checkpoint),
        "params": model.num_params(),
        "prompt": args.prompt,
        "prompt_ids": ctx.prompt_ids,
        "new_tokens": new,
        "threads": args.threads,
        "repeats": args.repeats,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_average": [load_before, load_after],
        "torch": torch.__version__,
        "runc": runc_info or None,
        "notes": ctx.notes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "rows": out_rows,
        "text": want.decode("utf-8", "replace"),
        "headline": headline,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
