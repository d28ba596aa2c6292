"""Exports judged by the programs that run them: transformers, and llama.cpp when installed.

On the bundled demo model (default; `--checkpoint DIR` for another Llama-style checkpoint):

1. transformers (when installed): `slm-train export --format hf`, then
   `AutoModelForCausalLM` logits against ours (max |Δ logit|, float32, three prompts) and
   greedy continuations (`--new-tokens`, repetition penalty off) token for token.
2. llama.cpp through llama-cpp-python (when `llama_cpp` imports; it builds llama.cpp from
   source, ~11 minutes on 2 cores, so it is not a test dependency): the `--format gguf`
   file in float32 and q8_0,
   - tokenization of adversarial text (emoji, CJK, CRLF, runs of spaces, an unseen word) by
     llama.cpp's tokenizer against ours (a literal "▁" is left out: llama.cpp reads it as a
     space, see slm_tui/interop/gguf_export.py),
   - llama.cpp's logits over each prompt against ours (max |Δ logit|, float32 file),
   - greedy continuations: float32 token for token; q8_0 how many tokens agree before the
     first difference (q8_0 rounds every weight, so a late difference is expected),
   - decode tokens/s at batch 1 with the same thread count (`--threads`, default 1):
     llama.cpp's one-token `eval` + argmax against our engine (`generate_batch`, greedy),
     each the best of `--repeats` runs, prefill excluded (a run of 1 token is subtracted).
   Without llama-cpp-python it says so and skips part 2.

Prints a table, writes bench/results/interop.json (`headline` rows for `make bench`).
Run: `.venv/bin/python bench/interop.py` (`--quick`: fewer tokens and one repeat).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _machine import cpu_name  # noqa: E402

from slm_tui.checkpoint.io import load_checkpoint  # noqa: E402
from slm_tui.generation import SamplingSettings, generate_batch  # noqa: E402
from slm_tui.interop.export import export_checkpoint  # noqa: E402

RESULTS = REPO / "bench" / "results" / "interop.json"
PROMPTS = ["Once upon a time", "The little dog saw a big red ball. He", "Lily and Tom went to"]
TEXTS = [
    "Once upon a time, there was a little girl named Lily.\nShe loved to play.\n\nThe end.",
    "emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷",
    "CJK 漢字かなカナ 한국어",
    "windows\r\nline\r\nendings\r\n",
    "many     spaces   between  ",
    "a word never seen: Zyxwvq-quokkafied",
    "tabs\there, digits 1234567890, <s> and </s> as text",
]


def greedy(n: int) -> SamplingSettings:
    return SamplingSettings(temperature=0.0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                            max_new_tokens=n)  # fmt: skip


def our_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids]))[0][0].float()


def first_difference(a: list[int], b: list[int]) -> int:
    """How many leading tokens two continuations share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n if n < max(len(a), len(b)) else max(len(a), len(b))


# ---- transformers -------------------------------------------------------------------------
def judge_transformers(loaded, work: Path, new_tokens: int) -> dict:
    try:
        import transformers
    except ImportError:
        return {"skipped": "transformers is not installed (pip install 'slm-tui[interop]')"}
    folder = work / "hf"
    export_checkpoint(loaded.path, folder, fmt="hf", dtype="float32")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    model = model.float().eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    ours = generate_batch(loaded.model, loaded.tokenizer, PROMPTS, greedy(new_tokens))
    worst, same, ids_equal = 0.0, 0, 0
    eos = loaded.tokenizer.eos_id
    for prompt, result in zip(PROMPTS, ours, strict=True):
        ids = tok(prompt)["input_ids"]
        with torch.inference_mode():
            theirs = model(torch.tensor([ids])).logits[0].float()
            out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=new_tokens,
                                 repetition_penalty=1.0, pad_token_id=0)  # fmt: skip
            out = out[0, len(ids) :].tolist()
        worst = max(worst, float((our_logits(loaded.model, ids) - theirs).abs().max()))
        out = out[: out.index(eos)] if eos in out else out
        same += out == result.token_ids
    for text in TEXTS:
        ids_equal += tok(text, add_special_tokens=False)["input_ids"] == loaded.tokenizer.encode(
            text
        )
    return {"version": transformers.__version__, "max_logit_diff": worst, "greedy_same": same,
            "prompts": len(PROMPTS), "tokenization_same": ids_equal,
            "texts": len(TEXTS)}  # fmt: skip


# ---- llama.cpp ----------------------------------------------------------------------------
def llama_greedy(llm, ids: list[int], n: int, eos: int) -> tuple[list[int], float]:
    """Greedy continuation through llama.cpp's own decode (one token per `eval`), and the
    seconds the decode loop took (the prompt's prefill is not counted)."""
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    t0 = time.perf_counter()
    for _ in range(n):
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        if token == eos:
            break
        out.append(token)
        if len(out) == n:
            break
        llm.eval([token])
    return out, time.perf_counter() - t0


def our_decode_seconds(loaded, prompt: str, n: int) -> tuple[int, float]:
    """Tokens our engine wrote and the decode time: a run of n tokens minus a run of one."""
    t0 = time.perf_counter()
    one = generate_batch(loaded.model, loaded.tokenizer, [prompt], greedy(1))
    t1 = time.perf_counter()
    many = generate_batch(loaded.model, loaded.tokenizer, [prompt], greedy(n))
    t2 = time.perf_counter()
    del one
    return len(many[0].token_ids), (t2 - t1) - (t1 - t0)


def without_extra_buffers(llama_cpp) -> None:
    """Load models with llama.cpp's extra CPU buffer types off (`use_extra_bufts`: weights
    repacked for AMX / other kernels). With them on, llama-cpp-python 0.3.36 segfaults on
    the first decode of any Q8_0 model of this shape on an AMX CPU (2026-12-02, Intel Xeon
    with AMX-BF16): ours, and llama.cpp's own quantization of our f32 file alike; with them
    off both run and agree with f32. `Llama()` has no flag for it, so the default model
    parameters it starts from are wrapped."""
    default = llama_cpp.llama_model_default_params
    if getattr(default, "without_extra_buffers", False):
        return

    def params():
        p = default()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    params.without_extra_buffers = True
    llama_cpp.llama_model_default_params = params
    llama_cpp.llama.llama_cpp.llama_model_default_params = params


def judge_llama_cpp(loaded, work: Path, new_tokens: int, threads: int, repeats: int) -> dict:
    try:
        import llama_cpp
    except ImportError:
        return {"skipped": "llama-cpp-python is not installed (pip install llama-cpp-python; "
                           "it builds llama.cpp from source)"}  # fmt: skip
    without_extra_buffers(llama_cpp)
    tok, model = loaded.tokenizer, loaded.model
    ctx, eos = model.cfg.context_length, tok.eos_id
    n = min(new_tokens, ctx - 1 - max(len(tok.encode(p)) + 1 for p in PROMPTS))
    out: dict = {"version": getattr(llama_cpp, "__version__", "?"), "new_tokens": n}
    ours = generate_batch(model, tok, PROMPTS, greedy(n))
    for dtype in ("float32", "q8_0"):
        path = work / f"model-{dtype}.gguf"
        export_checkpoint(loaded.path, path, fmt="gguf", dtype=dtype)
        # The KV cache in float32 (llama.cpp's default is f16), so the f32 comparison compares
        # the models, not a cache precision.
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=ctx, n_batch=ctx, n_threads=threads,
                              n_threads_batch=threads, logits_all=True, verbose=False,
                              type_k=llama_cpp.GGML_TYPE_F32,
                              type_v=llama_cpp.GGML_TYPE_F32)  # fmt: skip
        row: dict = {"size_mb": path.stat().st_size / 1e6}
        row["tokenization_same"] = sum(
            llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) == tok.encode(t)
            for t in TEXTS
        )
        worst, shared, same = 0.0, [], 0
        for prompt, result in zip(PROMPTS, ours, strict=True):
            ids = [tok.bos_id, *tok.encode(prompt)]
            if llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False) != ids:
                row["prompt_tokens_differ"] = prompt
            llm.reset()
            llm.eval(ids)
            theirs = torch.from_numpy(llm.scores[: len(ids)].copy()).float()
            worst = max(worst, float((our_logits(model, ids) - theirs).abs().max()))
            cont, _ = llama_greedy(llm, ids, n, eos)
            shared.append(first_difference(cont, result.token_ids))
            same += cont == result.token_ids
        row.update(max_logit_diff=worst, greedy_same=same, shared_tokens=shared)
        best = None
        for _ in range(repeats):
            ids = [tok.bos_id, *tok.encode(PROMPTS[0])]
            cont, seconds = llama_greedy(llm, ids, n, eos)
            rate = (len(cont) - 1) / seconds if len(cont) > 1 and seconds > 0 else 0.0
            best = rate if best is None else max(best, rate)
        row["decode_tok_s"] = best
        out[dtype] = row
        del llm
    best = 0.0
    for _ in range(repeats):
        count, seconds = our_decode_seconds(loaded, PROMPTS[0], n)
        if count > 1 and seconds > 0:
            best = max(best, (count - 1) / seconds)
    out["ours_decode_tok_s"] = best
    return out


def headline(hf: dict, cpp: dict, threads: int) -> list[dict]:
    rows = []
    if "skipped" in hf:
        rows.append({"what": "transformers", "value": f"skipped: {hf['skipped']}", "target": "",
                     "ok": None})  # fmt: skip
    else:
        rows += [
            {"what": "transformers LlamaForCausalLM vs ours: max |Δ logit| (float32, 3 prompts)",
             "value": f"{hf['max_logit_diff']:.1e}", "target": "< 1e-4",
             "ok": hf["max_logit_diff"] < 1e-4},
            {"what": "transformers greedy continuation = ours",
             "value": f"{hf['greedy_same']}/{hf['prompts']} identical", "target": "all",
             "ok": hf["greedy_same"] == hf["prompts"]},
            {"what": "AutoTokenizer ids = ours (adversarial texts)",
             "value": f"{hf['tokenization_same']}/{hf['texts']}", "target": "all",
             "ok": hf["tokenization_same"] == hf["texts"]},
        ]  # fmt: skip
    if "skipped" in cpp:
        rows.append({"what": "llama.cpp", "value": f"skipped: {cpp['skipped']}", "target": "",
                     "ok": None})  # fmt: skip
        return rows
    f32, q8 = cpp["float32"], cpp["q8_0"]
    n = cpp["new_tokens"]
    rows += [
        {"what": "llama.cpp tokenization = ours (adversarial texts)",
         "value": f"{f32['tokenization_same']}/{len(TEXTS)}", "target": "all",
         "ok": f32["tokenization_same"] == len(TEXTS)},
        {"what": "llama.cpp (f32 GGUF) vs ours: max |Δ logit| over the prompts",
         "value": f"{f32['max_logit_diff']:.1e}", "target": "< 1e-3",
         "ok": f32["max_logit_diff"] < 1e-3},
        {"what": f"llama.cpp greedy continuation = ours (f32, {n} tokens)",
         "value": f"{f32['greedy_same']}/{len(PROMPTS)} identical", "target": "all",
         "ok": f32["greedy_same"] == len(PROMPTS)},
        {"what": "llama.cpp q8_0: tokens equal to ours before the first difference",
         "value": ", ".join(f"{s}/{n}" for s in q8["shared_tokens"]), "target": "report",
         "ok": None},
        {"what": f"decode tok/s, batch 1, {threads} thread(s): llama.cpp f32 / q8_0 vs our engine",
         "value": f"{f32['decode_tok_s']:,.0f} / {q8['decode_tok_s']:,.0f} vs "
                  f"{cpp['ours_decode_tok_s']:,.0f}", "target": "report", "ok": None},
    ]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "tinystories-demo"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="32 tokens, one repeat")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = min(args.new_tokens, 32), 1
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.checkpoint)
    with tempfile.TemporaryDirectory(prefix="slm-interop-bench-") as tmp:
        hf = judge_transformers(loaded, Path(tmp), args.new_tokens)
        cpp = judge_llama_cpp(loaded, Path(tmp), args.new_tokens, args.threads, args.repeats)
    if "skipped" in cpp:
        print(f"llama.cpp part skipped: {cpp['skipped']}")
    cpu = cpu_name()
    rows = headline(hf, cpp, args.threads)
    table = Table(title=f"interop on {loaded.info.name}, {args.threads} thread(s), {cpu}")
    for col in ("what", "value", "target", "ok"):
        table.add_column(col, overflow="fold")
    for r in rows:
        mark = "✓" if r["ok"] is True else "✗" if r["ok"] is False else "–"
        table.add_row(r["what"], r["value"], r["target"], mark)
    Console().print(table)
    result = {
        "bench": "interop",
        "checkpoint": str(args.checkpoint),
        "threads": args.threads,
        "cpu": cpu,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "transformers": hf,
        "llama_cpp": cpp,
        "headline": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
