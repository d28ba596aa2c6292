"""One decode step (one new token per row through the KV cache), three ways, side by side:

1. `GPT.forward` with a one-token chunk (the model's general path: ~35 small ops and ~12
   module calls per layer);
2. the model's `FusedDecoder` (`model.fused_decoder()`), what the generation engine uses:
   the same function with about half the ops, hand-fused in model.py;
3. `torch.compile` of a static-shape step built from the model's own blocks (module calls,
   `apply_rotary`, `attend`), attending over the whole preallocated cache with a mask so
   every step has the same shapes and compiles once; `--cpp-wrapper` also tries inductor's
   C++ wrapper. Its compile time is reported beside its step time.

The question it answers (issue: "does torch.compile make a hand-fused copy unnecessary?"):
keep whichever step is faster. Each figure is the best of `--repeats` interleaved rounds of
90 steps after a 30-token prefill, on one thread by default (a small model at batch 1 is
bound by per-op overhead; one thread is also stable on a shared machine). The compiled step
is checked against `GPT.forward` before it is timed.

Run: `.venv/bin/python bench/decode_step.py` (default: the bundled demo model);
writes bench/results/decode_step.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _machine import cpu_name  # noqa: E402

from slm_tui.checkpoint.io import load_checkpoint  # noqa: E402
from slm_tui.model import GPT, apply_rotary, attend  # noqa: E402

RESULTS = REPO / "bench" / "results" / "decode_step.json"
PREFILL, STEPS = 30, 90


def static_step(model: GPT):
    """A decode step with fixed shapes: every row writes cache slot `pos` and attends over
    all `max_len` slots, `valid` (B, max_len) masking the ones not written yet."""
    H, Hkv, hd = model.cfg.n_head, model.n_kv_head, model.head_dim

    def step(idx, pos, valid, cache_k, cache_v):
        B = idx.size(0)
        x = model.tok_emb(idx)  # (B, 1, C)
        cos, sin = model.rope_cos[pos].view(1, 1, -1), model.rope_sin[pos].view(1, 1, -1)
        mask = valid.view(B, 1, 1, -1)
        for i, block in enumerate(model.blocks):
            attn = block.attn
            qkv = attn.qkv(block.norm1(x)).view(B, 1, H + 2 * Hkv, hd).transpose(1, 2)
            qk = apply_rotary(qkv[:, : H + Hkv], cos, sin)
            cache_k[i].index_copy_(2, pos, qk[:, H:])
            cache_v[i].index_copy_(2, pos, qkv[:, H + Hkv :])
            y = attend(qk[:, :H], cache_k[i], cache_v[i], mask)
            x = x + attn.proj(y.transpose(1, 2).reshape(B, 1, -1))
            x = x + block.mlp(block.norm2(x))
        return model.lm_head(model.norm_f(x))[:, -1].float()

    return step


def prefilled(model: GPT, batch: int):
    torch.manual_seed(0)
    ids = torch.randint(0, model.cfg.vocab_size, (batch, PREFILL))
    cache = model.new_cache(batch)
    model(ids, cache=cache)
    return cache


def time_eager(model: GPT, batch: int, fused: bool) -> float:
    cache = prefilled(model, batch)
    tok = torch.full((batch, 1), 5)
    step = model.fused_decoder() if fused else None
    t = time.perf_counter()
    for _ in range(STEPS):
        if step is not None:
            step(tok, cache)
        else:
            model(tok, cache=cache, last_only=True)
    return (time.perf_counter() - t) / STEPS


def time_static(model: GPT, fn, batch: int) -> float:
    cache = prefilled(model, batch)
    tok = torch.full((batch, 1), 5)
    valid = torch.zeros(batch, cache.max_len, dtype=torch.bool)
    valid[:, :PREFILL] = True
    t = time.perf_counter()
    for i in range(STEPS):
        slot = PREFILL + i
        valid[:, slot] = True
        fn(tok, torch.tensor([slot]), valid, cache.k, cache.v)
    return (time.perf_counter() - t) / STEPS


def check_static(model: GPT, fn, batch: int) -> float:
    """Largest logit difference between `fn` and GPT.forward over a few steps."""
    a, b = prefilled(model, batch), prefilled(model, batch)
    valid = torch.zeros(batch, a.max_len, dtype=torch.bool)
    valid[:, :PREFILL] = True
    worst = 0.0
    for i in range(4):
        tok = torch.full((batch, 1), 7 + i)
        want = model(tok, cache=a, last_only=True)[0][:, -1]
        valid[:, PREFILL + i] = True
        got = fn(tok, torch.tensor([PREFILL + i]), valid, b.k, b.v)
        worst = max(worst, float((want - got).abs().max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "tinystories-demo"))
    ap.add_argument("--batches", default="1,16", help="batch sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpp-wrapper", action="store_true", help="also compile with cpp_wrapper")
    ap.add_argument(
        "--quick", action="store_true", help="two rounds (for `make bench ARGS=--quick`)"
    )
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    if model.rope_cos is None:
        raise SystemExit("the static-shape step is written for rotary positions")
    variants = {"compiled": {}}
    if args.cpp_wrapper:
        variants["compiled, cpp_wrapper"] = {"options": {"cpp_wrapper": True}}
    rows = []
    with torch.inference_mode():
        for batch in (int(b) for b in args.batches.split(",")):
            compiled, compile_s, max_diff = {}, {}, {}
            for name, kw in variants.items():
                fn = torch.compile(static_step(model), dynamic=False, fullgraph=True, **kw)
                t = time.perf_counter()
                max_diff[name] = check_static(model, fn, batch)  # first call compiles
                compile_s[name] = time.perf_counter() - t
                compiled[name] = fn
            best: dict[str, float] = {}
            for _ in range(args.repeats):  # interleaved: load bursts hit every variant
                timings = {
                    "GPT.forward": time_eager(model, batch, fused=False),
                    "FusedDecoder": time_eager(model, batch, fused=True),
                    **{n: time_static(model, fn, batch) for n, fn in compiled.items()},
                }
                for k, v in timings.items():
                    best[k] = min(best.get(k, v), v)
            for name, seconds in best.items():
                rows.append(
                    {
                        "batch": batch,
                        "step": name,
                        "ms_per_step": seconds * 1e3,
                        "vs_forward": best["GPT.forward"] / seconds,
                        "compile_s": compile_s.get(name),
                        "max_logit_diff": max_diff.get(name),
                    }
                )
    cpu = cpu_name()
    table = Table(
        title=f"one decode step, {model.num_params() / 1e6:.2f}M-param model, "
        f"{args.threads} thread(s), {cpu}"
    )
    for col in ("batch", "step", "ms / step", "speed vs forward", "compile", "max |Δ logit|"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for r in rows:
        table.add_row(
            str(r["batch"]),
            r["step"],
            f"{r['ms_per_step']:.3f}",
            f"{r['vs_forward']:.2f}x",
            "" if r["compile_s"] is None else f"{r['compile_s']:.1f} s",
            "" if r["max_logit_diff"] is None else f"{r['max_logit_diff']:.1e}",
        )
    Console().print(table)
    result = {
        "bench": "decode_step",
        "checkpoint": str(args.checkpoint),
        "params": model.num_params(),
        "threads": args.threads,
        "cpu": cpu,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "rows": rows,
    }
    fused = {r["batch"]: r["ms_per_step"] for r in rows if r["step"] == "FusedDecoder"}
    result["headline"] = [
        {
            "what": f"decode step, batch {r['batch']}: {r['step']} vs the hand-fused step",
            "value": f"{r['ms_per_step']:.3f} vs {fused[r['batch']]:.3f} ms"
            + (f" (+{r['compile_s']:.0f} s compile)" if r["compile_s"] else ""),
            "target": "keep the faster",
            "ok": r["ms_per_step"] >= fused[r["batch"]],
        }
        for r in rows
        if r["step"].startswith("compiled")
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
