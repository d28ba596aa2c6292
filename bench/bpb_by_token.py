"""Where a model's bits go: the same checkpoint on two corpora side by side, its loss split
by the token it had to predict. It answers "why is this text dearer than that text": a
piece the model prices far higher on one corpus than the other (a layout it never saw,
mis-encoded characters) stands at the top of the table.

Both corpora are read as `slm-train eval` reads them (every story as BOS + ids + EOS, one
stream, windows of the model's context with stride the context, every token after the
first a target once; the model in float32 on the CPU), so the totals are `eval`'s loss
(up to its bf16 arithmetic). For each target piece: how often it occurs in each corpus, its
mean nats in each, and its share of B's bits. `if priced as in A` is the bits per byte B
would have if the pieces that cost more there were priced at A's mean (a piece A never has
keeps B's price): how much of the gap those pieces are.

The project used it on the bundled demo (v4) with A = dev.txt, B = valid.txt: the blank
line piece ("\\n\\n") never occurs in dev.txt, occurs 1,676 times in valid.txt at 14.5 nats
each, 10.2% of its bits (docs/demo-model.md, "v5"). valid.txt is the figure reported once;
reading it like this makes what it says a validation figure, and the docs say so.

Run: `.venv/bin/python bench/bpb_by_token.py --checkpoint DIR --a dev.txt --b valid.txt
[--top 15]`; writes bench/results/bpb_by_token.json (or `--output`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent
LN2 = math.log(2.0)


def per_token(model, tok, path: Path, batch: int) -> tuple[dict, int, float]:
    """({piece: [count, nats]}, UTF-8 bytes of the stories, total nats) over `path`."""
    import numpy as np
    import torch

    from slm_tui.corpus import corpus_source, iter_stories
    from slm_tui.shards import iter_windows

    stories = list(iter_stories(corpus_source(None, [str(path)])))
    ids: list[int] = []
    sep_only = tok.bos_id == tok.eos_id
    for i, story in enumerate(stories):
        if not sep_only or i == 0:
            ids.append(tok.bos_id)
        ids += [*tok.encode(story), tok.eos_id]
    nbytes = sum(len(s.encode("utf-8")) for s in stories)
    stats: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
    total = 0.0
    T = model.cfg.context_length
    with torch.no_grad():
        for win in iter_windows(np.asarray(ids, dtype=np.int64), T, batch):
            x = torch.from_numpy(win[:, :-1])
            y = torch.from_numpy(win[:, 1:])
            logits = model(x)
            logits = logits[0] if isinstance(logits, tuple) else logits
            nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none"
            )
            for t, n in zip(y.reshape(-1).tolist(), nll.tolist(), strict=True):
                s = stats[t]
                s[0] += 1
                s[1] += n
                total += n
    return {tok.token_text(t): v for t, v in stats.items()}, nbytes, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "tinystories-demo"))
    ap.add_argument("--a", required=True, type=Path, help="the reference corpus")
    ap.add_argument("--b", required=True, type=Path, help="the corpus to explain")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "bpb_by_token.json")
    args = ap.parse_args()
    for p in (args.a, args.b):
        if not p.is_file():
            print(f"skipped: {p} is not a file")
            return
    import torch

    from slm_tui.checkpoint.io import load_checkpoint

    torch.set_grad_enabled(False)
    model, tok, _ = load_checkpoint(args.checkpoint, device="cpu")
    model.float().eval()
    t0 = time.perf_counter()
    a, a_bytes, a_nats = per_token(model, tok, args.a, args.batch)
    b, b_bytes, b_nats = per_token(model, tok, args.b, args.batch)
    bpb = lambda nats, n: nats / LN2 / n  # noqa: E731
    rows = []
    for piece, (count, nats) in b.items():
        ac, an = a.get(piece, (0, 0.0))
        rows.append({
            "piece": piece, "count_b": count, "nats_b": nats / count, "share_of_b": nats / b_nats,
            "count_a": ac, "nats_a": an / ac if ac else None,
            "excess_nats": nats - count * an / ac if ac else nats,  # over A's price
        })  # fmt: skip
    rows.sort(key=lambda r: -r["nats_b"] * r["count_b"])
    repriced = b_nats - sum(
        r["count_b"] * (r["nats_b"] - r["nats_a"])
        for r in rows
        if r["nats_a"] is not None and r["nats_b"] > r["nats_a"]
    )
    never = [r for r in rows if r["count_a"] == 0]
    never_nats = sum(r["nats_b"] * r["count_b"] for r in never)
    result = {
        "cpu": cpu_name(),
        "checkpoint": str(args.checkpoint),
        "a": {"file": args.a.name, "bpb": bpb(a_nats, a_bytes), "bytes": a_bytes},
        "b": {"file": args.b.name, "bpb": bpb(b_nats, b_bytes), "bytes": b_bytes},
        "b_if_priced_as_a": bpb(repriced, b_bytes),
        "b_pieces_never_in_a": {
            "pieces": len(never),
            "share_of_b": never_nats / b_nats,
            "top": never[: args.top],
        },
        "top": rows[: args.top],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"{args.checkpoint} on {cpu_name()}: {args.a.name} {result['a']['bpb']:.4f} bits/byte, "
          f"{args.b.name} {result['b']['bpb']:.4f}; {args.b.name} if every piece were priced "
          f"as in {args.a.name}: {result['b_if_priced_as_a']:.4f}; pieces {args.a.name} never "
          f"has: {len(never)}, {never_nats / b_nats:.1%} of {args.b.name}'s bits")  # fmt: skip
    print(
        f"| piece | n in {args.b.name} | nats there | share of its bits | n in {args.a.name} "
        "| nats there |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows[: args.top]:
        na = f"{r['nats_a']:.2f}" if r["nats_a"] is not None else "-"
        print(f"| {r['piece']!r} | {r['count_b']:,} | {r['nats_b']:.2f} | {r['share_of_b']:.1%} "
              f"| {r['count_a']:,} | {na} |")  # fmt: skip
    print(f"dearest pieces {args.a.name} never has: " + ", ".join(
        f"{r['piece']!r} {r['count_b']:,} x {r['nats_b']:.1f} nats" for r in never[:8]))  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
