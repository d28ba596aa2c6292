"""Decode on a CUDA GPU: the engine's step replayed as CUDA graphs vs the same step run eagerly.

Rows, on the bundled demo model (or `--checkpoint`), new tokens with `ignore_eos` from
short prompts, inside the context:
- batch 1 streaming: `generate()` (the TUI's path: a "token" event per token, with its
  probability and five alternatives), tokens/s after the first token;
- `generate_batch` over `--rows` prompts at once (the path of slm-generate and training
  samples), aggregate tokens/s.
Each with CUDA graphs (`SLM_TUI_CUDA_GRAPHS=1`, opt-in until measured here) and without
(the engine's ordinary fused step, launched op by op), interleaved, best of `--repeats`.

Correctness first, printed before any timing: greedy tokens through graphs, through the
ordinary step and through `GPT.forward` (no fused step at all) are identical for a batch-1
story; every row of a seeded sampled batch is identical with and without graphs.

Without CUDA it says so and writes a `skipped` result. Writes bench/results/gpu_decode.json.
Run: `python bench/gpu_decode.py [--rows 256] [--new-tokens 100]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "bench" / "results" / "gpu_decode.json"
PROMPTS = ["Once upon a time", "The little dog", "Lily wanted to", "One day, Tom", "The sun"]


def with_graphs(on: bool) -> None:
    os.environ["SLM_TUI_CUDA_GRAPHS"] = "1" if on else "0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "tinystories-demo"))
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", type=Path, default=DEST)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script's logic")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from slm_tui.checkpoint.io import load_checkpoint
    from slm_tui.generation import SamplingSettings, generate, generate_batch
    from slm_tui.generation.engine import Decoder, prepare_prompt

    console = Console()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        why = f"no CUDA GPU visible to torch {torch.__version__}"
        console.print(f"skipped: {why}", highlight=False)
        args.output.write_text(json.dumps({"bench": "gpu_decode", "skipped": True,
                                           "reason": why}) + "\n")  # fmt: skip
        return 0
    loaded = load_checkpoint(args.checkpoint, args.device)
    model, tok = loaded.model.eval(), loaded.tokenizer
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)"
    n = args.new_tokens
    greedy = SamplingSettings(temperature=0.0, repetition_penalty=1.0, max_new_tokens=n,
                              ignore_eos=True)  # fmt: skip
    sampled = SamplingSettings(max_new_tokens=n, ignore_eos=True, seed=0)

    # -- correctness -------------------------------------------------------------------------
    def stream_ids(settings: SamplingSettings) -> list[int]:
        return [e.token_id for e in generate(model, tok, PROMPTS[0], settings) if e.kind == "token"]

    with_graphs(True)
    graphed = stream_ids(greedy)
    with_graphs(False)
    eager = stream_ids(greedy)
    ids, _ = prepare_prompt(tok, PROMPTS[0], model.cfg.context_length)
    plain = Decoder(model, [ids], [0], fused=False)  # GPT.forward, no fused step
    forward = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = plain.sample(greedy)
            forward.append(int(nxt.item()))
            plain.advance(nxt, [forward[-1]])
    prompts = [PROMPTS[i % len(PROMPTS)] + f" {i}" for i in range(args.rows)]
    with_graphs(True)
    batch_graphed = [r.token_ids for r in generate_batch(model, tok, prompts, sampled, args.rows)]
    with_graphs(False)
    batch_eager = [r.token_ids for r in generate_batch(model, tok, prompts, sampled, args.rows)]
    checks = {
        "greedy batch 1: graphs == eager step": graphed == eager,
        "greedy batch 1: graphs == GPT.forward": graphed == forward,
        f"sampled, {args.rows} rows, seeds 0..: graphs == eager, every row": batch_graphed
        == batch_eager,
    }
    for what, ok in checks.items():
        console.print(f"{'ok ' if ok else 'DIFFERENT'} {what}", highlight=False)

    # -- timing ---------------------------------------------------------------------------------
    def stream_rate() -> float:
        events = list(generate(model, tok, PROMPTS[0], greedy))
        first = next(e for e in events if e.kind == "token")
        last = events[-1]
        return (last.index - 1) / max(last.elapsed - first.elapsed, 1e-9)

    def batch_rate() -> float:
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        done = generate_batch(model, tok, prompts, sampled, args.rows)
        return sum(r.num_tokens for r in done) / (time.perf_counter() - start)

    best: dict[str, float] = {}
    for on in (True, False):  # warm-up (captures the graphs)
        with_graphs(on)
        stream_rate()
        batch_rate()
    for _ in range(args.repeats):
        for on in (True, False):
            with_graphs(on)
            label = "graphs" if on else "eager"
            for row, fn in (("batch 1 streaming", stream_rate), (f"{args.rows} rows", batch_rate)):
                key = f"{row} · {label}"
                best[key] = max(best.get(key, 0.0), fn())
    with_graphs(True)
    table = Table(title=f"decode on {gpu}, demo model, {n} new tokens, best of {args.repeats}")
    for col in ("path", "CUDA graphs", "eager step", "speedup"):
        table.add_column(col, justify="left" if col == "path" else "right")
    rows = []
    for row, target in (("batch 1 streaming", 2500), (f"{args.rows} rows", 150_000)):
        g, e = best[f"{row} · graphs"], best[f"{row} · eager"]
        table.add_row(row, f"{g:,.0f} tok/s", f"{e:,.0f} tok/s", f"{g / e:.2f}x")
        rows.append({"path": row, "graphs_tokens_per_s": g, "eager_tokens_per_s": e,
                     "target": target, "ok": g >= target})  # fmt: skip
    console.print(table)
    out = {
        "bench": "gpu_decode",
        "skipped": False,
        "gpu": gpu,
        "torch": torch.__version__,
        "checkpoint": args.checkpoint,
        "new_tokens": n,
        "checks": checks,
        "rows": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "headline": [
            {
                "what": f"decode on {gpu}: {r['path']} (CUDA graphs)",
                "value": f"{r['graphs_tokens_per_s']:,.0f} tok/s",
                "target": f">= {r['target']:,} tok/s",
                "ok": r["ok"],
            }
            for r in rows
        ],
    }
    args.output.write_text(json.dumps(out, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {args.output}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
