"""Does a model follow story briefs? The share of generated stories that use every requested
word, the requested name, the requested feature (slm_tui/briefs.py checks them).

Briefs come from the first `--n` stories of dev.txt (validation text: only the briefs are
taken, never the stories' text as a prompt): `brief_of(story, Random(seed + i), 3)`, then
up to four variants per story:

- words: its three words;
- name: the three words and the story's main character's name (stories that have one);
- dialogue / moral: the three words and that feature (stories that have it).

Conditions (one generation per brief each; the same seed per story in every condition):

- brief: the brief in the settings (`SamplingSettings(brief=...)`, as slm-generate --words,
  the TUI's brief row and the server's `brief` give it): its block before `--seed-sentence`
  and the brief guide on (generation/guide.py, default strength);
- brief-alone: the model alone: the prompt is `format_brief(brief)` (+ `--seed-sentence`),
  the block a model trained with briefs (`data.briefs`) reads, and no guide;
- with `--baseline`, two more: plain, the same request as a plain sentence ("A story with
  the words dog, cake and happy, about Max, with dialogue.") before the seed sentence, as
  someone would ask a model trained without briefs; none, no request at all (the seed
  sentence alone): how often a story uses the words by chance.

Only the generated text is checked (a word in the prompt does not count); a story that opens
with a brief block of its own (a model trained with briefs, given no brief) is checked
after that block. Words count in any inflected form (dog/dogs, run/ran). Default sampling
(`SamplingSettings()`), fixed seeds (`--seed`), `generate_batch` on the CPU.

`--baseline-checkpoint DIR` runs a model trained without briefs (the v2 demo) in the same
process on the brief, brief-alone and plain prompts, beside the model under test; the valid.txt bits per
byte each checkpoint recorded (`slm-train eval --record`, plain stories: no briefs) are
printed beside the table.

Run: `.venv/bin/python bench/briefs.py [--checkpoint DIR] [--n 200] [--baseline]
[--baseline-checkpoint DIR]`; writes
bench/results/briefs.json (or `--output`). Skips (exit 0) when dev.txt is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name

from slm_tui.briefs import Brief, brief_of, format_brief, satisfies, split_brief

ROOT = Path(__file__).resolve().parent.parent
TEXT = Path(os.environ.get("SLM_TINYSTORIES_DIR", ROOT.parent / "shared" / "data" / "tinystories"))
VARIANTS = ("words", "name", "dialogue", "moral")


def read_stories(path: Path, n: int) -> list[str]:
    stories, lines = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip() == "<|endoftext|>":
                if "".join(lines).strip():
                    stories.append("".join(lines).strip())
                lines = []
                if len(stories) == n:
                    break
            else:
                lines.append(line)
    return stories


def make_briefs(stories: list[str], seed: int) -> list[tuple[str, int, Brief]]:
    """(variant, story index, brief) for every story and every variant it supports."""
    out = []
    for i, story in enumerate(stories):
        full = brief_of(story, random.Random(seed + i), 3)
        if len(full.words) < 3:
            continue
        out.append(("words", i, Brief(full.words)))
        if full.name:
            out.append(("name", i, Brief(full.words, full.name)))
        for feature in full.features:
            out.append((feature, i, Brief(full.words, features=(feature,))))
    return out


def plain_request(brief: Brief) -> str:
    *first, last = brief.words
    text = f"A story with the words {', '.join(first)} and {last}"
    if brief.name:
        text += f", about {brief.name}"
    for feature in brief.features:
        text += {"dialogue": ", with dialogue", "moral": ", with a moral"}[feature]
    return text + ".\n"


def prompt_for(condition: str, brief: Brief, seed_sentence: str) -> str:
    if condition == "brief-alone":
        return format_brief(brief) + seed_sentence  # the block by hand: no guide
    if condition == "brief":
        return seed_sentence  # the brief goes in the settings (block and guide)
    if condition == "plain":
        return plain_request(brief) + seed_sentence
    return seed_sentence


def score(rows: list[tuple[str, int, Brief]], texts: list[str]) -> dict[str, dict]:
    """Per variant: n, all words, each word alone, name, feature, everything."""
    table: dict[str, dict] = {}
    for (variant, _, brief), text in zip(rows, texts, strict=True):
        r = satisfies(split_brief(text)[1], brief)
        t = table.setdefault(variant, {"n": 0, "all_words": 0, "words": 0, "n_words": 0,
                                       "name": 0, "feature": 0, "all": 0})  # fmt: skip
        t["n"] += 1
        t["all_words"] += r["all_words"]
        t["words"] += sum(r["words"].values())
        t["n_words"] += len(r["words"])
        t["name"] += bool(r["name"])
        t["feature"] += all(r["features"].values()) and bool(r["features"])
        t["all"] += r["all"]
    out = {}
    for variant in VARIANTS:
        if variant not in table:
            continue
        t = table[variant]
        out[variant] = {
            "n": t["n"],
            "all_words": t["all_words"] / t["n"],
            "each_word": t["words"] / t["n_words"],
            "name": t["name"] / t["n"] if variant == "name" else None,
            "feature": t["feature"] / t["n"] if variant in ("dialogue", "moral") else None,
            "all": t["all"] / t["n"],
        }
    return out


def recorded_figures(checkpoint: str) -> dict[str, float]:
    """Bits per byte `slm-train eval --record` wrote into the checkpoint's meta.json, by
    corpus name (valid.txt: plain stories, no briefs)."""
    meta = Path(checkpoint) / "meta.json"
    if not meta.is_file():
        return {}
    evals = json.loads(meta.read_text()).get("evaluations") or []
    return {e["name"]: e["bpb"] for e in evals if "bpb" in e}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "tinystories-demo"))
    ap.add_argument("--dev", type=Path, default=TEXT / "dev.txt", help="stories to brief")
    ap.add_argument("--n", type=int, default=200, help="dev.txt stories (briefs: ~2.6 each)")
    ap.add_argument("--baseline", action="store_true", help="also plain and no-request prompts")
    ap.add_argument(
        "--baseline-checkpoint", default=None,
        help="a model trained without briefs, run in the same process: brief and plain prompts",
    )  # fmt: skip
    ap.add_argument("--seed-sentence", default="", help='text after the brief, e.g. "Once"')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "briefs.json")
    args = ap.parse_args()
    if not args.dev.is_file():
        print(f"skipped: {args.dev} not found (set SLM_TINYSTORIES_DIR or --dev)")
        return

    import torch
    from rich.console import Console
    from rich.table import Table

    from slm_tui.checkpoint.io import load_checkpoint
    from slm_tui.generation import SamplingSettings, generate_batch

    torch.set_num_threads(args.threads)
    rows = make_briefs(read_stories(args.dev, args.n), args.seed)
    settings = SamplingSettings()
    seeds = [args.seed + i for _, i, _ in rows]
    extra = ["plain", "none"] if args.baseline else []
    # (label, checkpoint, conditions): the model under test, then the model without briefs.
    runs = [("model", args.checkpoint, ["brief", "brief-alone", *extra])]
    if args.baseline_checkpoint:
        runs.append(("baseline", args.baseline_checkpoint, ["brief", "brief-alone", "plain"]))
    results: dict[str, dict] = {}
    examples, timings, recorded = {}, {}, {}
    for label, checkpoint, conditions in runs:
        loaded = load_checkpoint(checkpoint, "cpu")
        recorded[label] = recorded_figures(checkpoint)
        for condition in conditions:
            key = condition if label == "model" else f"{label}:{condition}"
            prompts = [prompt_for(condition, b, args.seed_sentence) for _, _, b in rows]
            print(f"{key}: {len(prompts)} stories ...", file=sys.stderr)
            start = time.perf_counter()
            per_row = [settings.replace(brief=b) if condition == "brief" else settings
                       for _, _, b in rows]  # fmt: skip
            out = generate_batch(loaded.model, loaded.tokenizer, prompts, per_row,
                                 args.batch_size, seeds=seeds)  # fmt: skip
            timings[key] = round(time.perf_counter() - start, 1)
            texts = [r.text for r in out]
            results[key] = score(rows, texts)
            results[key]["_stories"] = {
                "mean_tokens": sum(r.num_tokens for r in out) / len(out),
                "ended": sum(r.finish_reason == "eos" for r in out) / len(out),
            }
            examples[key] = [
                # (no story text: a generated story can open as a shared training story
                # does, and shared text stays out of the project; samples: the model card)
                {"variant": v, "brief": b.to_dict(), "prompt": p, "check": satisfies(
                    split_brief(t)[1], b)}
                for (v, _, b), p, t in list(zip(rows, prompts, texts, strict=True))[:4]
            ]  # fmt: skip

    pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    names = " vs ".join(Path(c).name for _, c, _ in runs)
    title = f"briefs followed: {names}, {args.n} dev.txt stories, {cpu_name()}"
    table = Table(title=title)
    for col in ("condition", "variant", "n", "all 3 words", "each word", "name", "feature"):
        table.add_column(col, justify="left" if col in ("condition", "variant") else "right")
    for key, by_variant in results.items():
        for variant, r in by_variant.items():
            if not variant.startswith("_"):
                table.add_row(key, variant, str(r["n"]), pct(r["all_words"]),
                              pct(r["each_word"]), pct(r["name"]), pct(r["feature"]))  # fmt: skip
    Console().print(table)
    for key in results:
        s = results[key]["_stories"]
        print(f"{key}: {s['mean_tokens']:.0f} tokens a story, {pct(s['ended'])} ended "
              f"before the limit, {timings[key]} s")  # fmt: skip
    for label, checkpoint, _ in runs:
        figures = ", ".join(f"{k} {v:.3f} bits/byte" for k, v in recorded[label].items())
        figures = figures or "no figures recorded (slm-train eval --record)"
        print(f"{label} ({checkpoint}): {figures}")
    record = {
        "bench": "briefs", "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "checkpoint": str(args.checkpoint), "baseline_checkpoint": args.baseline_checkpoint,
        "dev": str(args.dev), "n_stories": args.n, "n_briefs": len(rows),
        "seed": args.seed, "seed_sentence": args.seed_sentence,
        "settings": settings.to_dict(), "recorded_bits_per_byte": recorded,
        "results": results, "seconds": timings, "examples": examples,
        "targets": {"all_words": 0.90, "name": 0.95, "dialogue": 0.90},
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
