"""The TUI under a fast model: key-press-to-screen latency while streaming vs idle, and the
engine's tokens/s inside the TUI vs the engine called directly, on the same checkpoint.

Setup: a real checkpoint written by `save_checkpoint` (sentencepiece-bpe tokenizer trained
here on synthetic stories, a small random GPT) and loaded by the app the normal way. As in
bench/generate.py, EOS is switched off (every story runs to its length) and the final-norm
gain is raised so the next-token distribution is as peaked as a trained model's.

1. Latency: the temperature input is focused and Up/Down are pressed through the Pilot at
   random 20-60 ms intervals; latency is the time from the press to the first frame that
   draws the new value: the benchmark wraps `SettingInput.render_line` (Textual's public
   line API, which the compositor calls for the input's changed line while it builds the
   frame) and stamps the first call that sees the value. Only public Textual API is used.
   Measured idle, then while a story streams (the same presses also push each change into
   the running story through LiveSettings). Target: p95 < 50 ms streaming.
2. Throughput: the same seed sentence, seed and settings through the app (thread worker,
   30 Hz flush) and through `generate()` directly, alternating, best of N. The story the app
   shows must equal the direct one character for character (nothing dropped or reordered).
   Target: app >= 90% of direct.
3. The Train screen: a real `slm-train model` runs beside the app (one thread, a 2 x 64
   model on the byte tokenizer, a metrics line every step and samples every 50), the app
   watches it (`--watch`: the screen polls metrics.jsonl every 0.5 s and redraws the chart)
   while a story streams behind the screen (on one thread: the machine is shared). `l`
   (log y) is pressed at random 20-60 ms intervals; latency is press to the first frame
   whose chart (`LossChart.render_line`) draws the new scale. Target: p95 < 50 ms.

Run: `.venv/bin/python bench/tui_latency.py` (or `--quick`); writes bench/results/tui_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from _machine import cpu_name  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from slm_tui.checkpoint.io import save_checkpoint  # noqa: E402
from slm_tui.config import Config, ModelConfig  # noqa: E402
from slm_tui.generation import generate  # noqa: E402
from slm_tui.model import GPT  # noqa: E402
from slm_tui.tokenizers import train_tokenizer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "Once upon a time, a little girl named Lily found a red ball in the park."


def stories(n: int) -> list[str]:
    rng = random.Random(0)
    names, things = ["Lily", "Tom", "Max", "Sue"], ["ball", "dog", "tree", "cake", "boat"]
    out = []
    for _ in range(n):
        who, what = rng.choice(names), rng.choice(things)
        out.append(f"Once upon a time, {who} found a {what}.\n{who} was happy. The end.")
    return out


def make_checkpoint(root: Path, args) -> Path:
    tok = train_tokenizer("sentencepiece-bpe", stories(400), 320, root / "tok", num_threads=1)
    cfg = Config()
    cfg.model = ModelConfig(
        vocab_size=tok.vocab_size,
        context_length=1024,
        n_layer=args.n_layer,
        n_head=4,
        d_model=args.d_model,
    )
    torch.manual_seed(0)
    model = GPT(cfg.model)
    meta = {"step": 0, "tokens_seen": 0, "val_loss": None, "val_bpb": None}
    return save_checkpoint(root / "checkpoints" / "bench", model, cfg, tok, meta)


def prepare(app, sharpen: float) -> None:
    """EOS off (`ignore_eos`) and a trained-like (peaked) distribution, for the app and the
    direct runs alike."""
    panel = app.query_one("#sampling")
    panel.settings = panel.settings.replace(ignore_eos=True)
    with torch.no_grad():
        app.loaded.checkpoint.model.norm_f.weight.fill_(sharpen)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def until(pilot, condition, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError("the app did not get there")
        await pilot.pause(0.01)


async def measure_presses(pilot, app, n: int, rng: random.Random) -> list[float]:
    """Press Up/Down on the focused temperature input; ms from press to the frame showing it."""
    from slm_tui.tui.widgets.sampling_panel import SettingInput

    inp = app.query_one("#set-temperature", SettingInput)
    inp.focus()
    await pilot.pause(0.05)
    state: dict = {"target": None, "t_frame": None}
    original = SettingInput.render_line

    def render_line(self, y: int):
        if (
            self is inp
            and state["target"] is not None
            and state["t_frame"] is None
            and self.value == state["target"]
        ):
            state["t_frame"] = time.perf_counter()
        return original(self, y)

    SettingInput.render_line = render_line  # type: ignore[method-assign]
    latencies = []
    try:
        for i in range(n):
            key = "up" if i % 2 == 0 else "down"
            step = 0.1 if key == "up" else -0.1
            panel = app.query_one("#sampling")
            state["target"] = f"{round(panel.settings.temperature + step, 4):.4g}"
            state["t_frame"] = None
            t0 = time.perf_counter()
            await pilot.press(key)
            while state["t_frame"] is None and time.perf_counter() - t0 < 2.0:
                await asyncio.sleep(0.001)
            if state["t_frame"] is not None:
                latencies.append((state["t_frame"] - t0) * 1000)
            await asyncio.sleep(rng.uniform(0.02, 0.06))
    finally:
        SettingInput.render_line = original  # type: ignore[method-assign]
    return latencies


async def run_app(ckpt: Path, args) -> dict:
    from slm_tui.tui.app import SlmApp

    app = SlmApp(
        checkpoint=ckpt, checkpoints_dir=ckpt.parent, rescan=False, demo=False, device="cpu"
    )
    rng = random.Random(0)
    out: dict = {"throughput": [], "direct": [], "complete": True}
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.loaded is not None)
        prepare(app, args.sharpen)
        model, tok = app.loaded.checkpoint.model, app.loaded.tokenizer
        panel = app.query_one("#sampling")

        # -- throughput: app vs direct, alternating, same seeds ------------------------
        for r in range(args.repeats):
            seed = 100 + r
            panel.set_values({"max_new_tokens": args.tokens, "seed": seed})
            settings = panel.settings
            t = time.perf_counter()
            events = list(generate(model, tok, PROMPT, settings))
            direct_text = "".join(e.text for e in events)
            out["direct"].append(events[-1].tokens_per_s)
            app.write(PROMPT)
            while app.current.streaming:  # a light wait: Pilot.pause would load the UI thread
                await asyncio.sleep(0.1)
            story = app.current
            out["throughput"].append(story.tokens_per_s)
            out["complete"] &= story.text == direct_text and story.num_tokens == args.tokens
            out.setdefault("wall_direct_s", []).append(time.perf_counter() - t)

        # -- latency: idle, then while streaming ----------------------------------------
        panel.set_values({"seed": None, "temperature": 0.8})
        out["idle_ms"] = await measure_presses(pilot, app, args.presses, rng)
        panel.set_values({"max_new_tokens": 10**6})
        app.write(PROMPT)
        await until(pilot, lambda: app.current.num_tokens > 50)
        n0, t0 = app.current.num_tokens, time.perf_counter()
        out["streaming_ms"] = await measure_presses(pilot, app, args.presses, rng)
        still = app.current.streaming
        rate = (app.current.num_tokens - n0) / (time.perf_counter() - t0)
        await pilot.press("escape")
        await until(pilot, lambda: not app.current.streaming)
        out["streaming_while_measuring"] = still
        out["tokens_per_s_during_presses"] = rate
        out["settings_versions_applied"] = len(app.write_screen.streamer.applied) - 1
    return out


def start_trainer(root: Path) -> tuple[subprocess.Popen, Path]:
    """A real training run beside the app, writing a metrics line every step."""
    corpus, run = root / "stories.txt", root / "run"
    corpus.write_text("".join(s + "\n<|endoftext|>\n" for s in stories(400)))
    overrides = [
        "tokenizer.kind=byte", "model.d_model=64", "model.n_layer=2", "model.n_head=4",
        "model.context_length=64", "train.batch_size=8", "train.grad_accum=1",
        "train.max_steps=1000000", "train.log_every=1", "train.eval_every=50",
        "train.save_every=1000000", "train.eval_batches=1", "train.sample_tokens=16",
        "train.threads=1", "train.device=cpu", "train.dtype=float32", "train.compile=false",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "slm_tui.cli.train", "model", "--config", "tiny",
           "--data-files", str(corpus), "--output", str(run)]  # fmt: skip
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLM_SHARDS_DIR": str(root / "shards")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, run


async def measure_chart_presses(pilot, screen, n: int, rng: random.Random) -> list[float]:
    """Press `l` on the Train screen; ms from press to the chart's first frame at the new scale."""
    from slm_tui.tui.training.chart import LossChart

    chart = screen.query_one(LossChart)
    state: dict = {"target": None, "t_frame": None}
    original = LossChart.render_line

    def render_line(self, y: int):
        if self is chart and state["t_frame"] is None and self.log_y == state["target"]:
            state["t_frame"] = time.perf_counter()
        return original(self, y)

    LossChart.render_line = render_line  # type: ignore[method-assign]
    latencies = []
    try:
        for _ in range(n):
            state["target"], state["t_frame"] = not chart.log_y, None
            t0 = time.perf_counter()
            await pilot.press("l")
            while state["t_frame"] is None and time.perf_counter() - t0 < 2.0:
                await asyncio.sleep(0.001)
            if state["t_frame"] is not None:
                latencies.append((state["t_frame"] - t0) * 1000)
            await asyncio.sleep(rng.uniform(0.02, 0.06))
    finally:
        LossChart.render_line = original  # type: ignore[method-assign]
    return latencies


async def run_train_screen(ckpt: Path, root: Path, args) -> dict:
    from slm_tui.tui.app import SlmApp
    from slm_tui.tui.training.screen import TrainScreen

    proc, run = start_trainer(root)
    out: dict = {}
    try:
        app = SlmApp(
            checkpoint=ckpt, checkpoints_dir=ckpt.parent, rescan=False, demo=False,
            device="cpu", watch=run,
        )  # fmt: skip
        async with app.run_test(size=(120, 36)) as pilot:
            await until(pilot, lambda: app.loaded is not None)
            await until(pilot, lambda: app.training.watch.history.step >= 5)
            await until(pilot, lambda: app.cpu.shared)  # the app saw the run: one thread
            prepare(app, args.sharpen)
            app.query_one("#sampling").set_values({"max_new_tokens": 10**6, "seed": None})
            app.write(PROMPT)  # streams behind the Train screen
            await until(pilot, lambda: app.current.num_tokens > 20)
            screen = app.screen
            assert isinstance(screen, TrainScreen)
            steps0, tokens0 = app.training.watch.history.step, app.current.num_tokens
            t0 = time.perf_counter()
            out["train_screen_ms"] = await measure_chart_presses(
                pilot, screen, args.presses, random.Random(1)
            )
            seconds = time.perf_counter() - t0
            out["train_steps_during"] = app.training.watch.history.step - steps0
            out["story_tokens_per_s_during"] = (app.current.num_tokens - tokens0) / seconds
            out["story_streaming_throughout"] = app.current.streaming
            out["polls"] = screen.polls
            out["chart_renders"] = screen.query_one("#train-chart").renders
            app.write_screen.streamer.cancel()
            await until(pilot, lambda: not app.current.streaming)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    return out


def train_summary(t: dict) -> dict:
    ms = t["train_screen_ms"]
    return {
        "latency_train_screen_ms": {
            "p50": statistics.median(ms),
            "p95": pct(ms, 0.95),
            "max": max(ms),
            "n": len(ms),
        },
        "train_screen": {k: v for k, v in t.items() if k != "train_screen_ms"},
    }


def headline(summary: dict) -> list[dict]:
    """The rows `bench/run_all.py` prints, from this script's summary."""
    rows = [] if "latency_idle_ms" not in summary else main_rows(summary)
    lt = summary.get("latency_train_screen_ms")
    if lt:
        rows.append(
            {
                "what": "key → frame p95 on the Train screen, a run training beside it "
                "and a story streaming",
                "value": f"{lt['p95']:.1f} ms (p50 {lt['p50']:.1f} ms)",
                "target": "< 50 ms",
                "ok": lt["p95"] < 50,
            }
        )
    return rows


def main_rows(summary: dict) -> list[dict]:
    li, ls = summary["latency_idle_ms"], summary["latency_streaming_ms"]
    ratio = summary["app_vs_direct"]
    return [
        {
            "what": "key → screen latency p95 while streaming (idle beside it)",
            "value": f"{ls['p95']:.1f} ms (idle {li['p95']:.1f} ms)",
            "target": "< 50 ms",
            "ok": ls["p95"] < 50,
        },
        {
            "what": "tokens/s in the TUI vs the engine called directly",
            "value": f"{ratio:.1%} ({summary['tokens_per_s_app']:,.0f} vs "
            f"{summary['tokens_per_s_direct']:,.0f} tok/s)",
            "target": ">= 90%",
            "ok": ratio >= 0.9,
        },
    ]


def write_train_screen_only(t: dict, args) -> None:
    """Update the Train screen row of the existing results, keeping the others."""
    out = RESULTS / ("tui_latency-quick.json" if args.quick else "tui_latency.json")
    summary = json.loads(out.read_text()) if out.exists() else {}
    summary.update(train_summary(t))
    summary["train_screen"]["cpu"] = cpu_name()
    summary["headline"] = headline(summary)
    lt = summary["latency_train_screen_ms"]
    table = Table(title=f"slm-tui Train screen beside a training run, {cpu_name()}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("key → frame p50 (ms)", f"{lt['p50']:.1f}", "")
    table.add_row("key → frame p95 (ms)", f"{lt['p95']:.1f}", "< 50")
    table.add_row("key → frame max (ms)", f"{lt['max']:.1f}", "")
    table.add_row("train steps during the presses", f"{t['train_steps_during']}", "")
    table.add_row("story tok/s meanwhile (1 thread)", f"{t['story_tokens_per_s_during']:.0f}", "")
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer presses, shorter stories")
    ap.add_argument("--tokens", type=int, default=2000, help="new tokens per throughput story")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presses", type=int, default=60)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--sharpen", type=float, default=6.0)
    ap.add_argument(
        "--train-screen-only",
        action="store_true",
        help="measure only the Train screen row and update it in the existing JSON",
    )
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.repeats, args.presses = 600, 2, 20
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SLM_TUI_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["SLM_TUI_CONFIG_DIR"] = str(Path(tmp) / "config")
        ckpt = make_checkpoint(Path(tmp), args)
        r = None if args.train_screen_only else asyncio.run(run_app(ckpt, args))
        t = asyncio.run(run_train_screen(ckpt, Path(tmp), args))
    if r is None:
        write_train_screen_only(t, args)
        return

    app_tps, direct_tps = max(r["throughput"]), max(r["direct"])
    idle, streaming = r["idle_ms"], r["streaming_ms"]
    summary = {
        "latency_idle_ms": {
            "p50": statistics.median(idle),
            "p95": pct(idle, 0.95),
            "max": max(idle),
            "n": len(idle),
        },
        "latency_streaming_ms": {
            "p50": statistics.median(streaming),
            "p95": pct(streaming, 0.95),
            "max": max(streaming),
            "n": len(streaming),
        },
        **train_summary(t),
        "tokens_per_s_app": app_tps,
        "tokens_per_s_direct": direct_tps,
        "app_vs_direct": app_tps / direct_tps,
        "tokens_per_s_while_pressing_keys": r["tokens_per_s_during_presses"],
        "story_complete": r["complete"],
        "streaming_throughout_presses": r["streaming_while_measuring"],
        "settings_versions_applied_mid_stream": r["settings_versions_applied"],
        "runs": {"app": r["throughput"], "direct": r["direct"]},
        "config": {
            "tokens": args.tokens,
            "repeats": args.repeats,
            "presses": args.presses,
            "model": f"{args.n_layer} layers x {args.d_model}, vocab 320, random init, gain {args.sharpen:g}, EOS off",
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "cpu": cpu_name(),
            "python": platform.python_version(),
        },
        "quick": args.quick,
    }
    summary["headline"] = headline(summary)

    table = Table(
        title=f"slm-tui under a fast model, {torch.get_num_threads()} threads, {cpu_name()}"
    )
    table.add_column("measure")
    table.add_column("idle / direct", justify="right")
    table.add_column("streaming / in app", justify="right")
    table.add_column("target", justify="right")
    li, ls = summary["latency_idle_ms"], summary["latency_streaming_ms"]
    table.add_row("key → frame p50 (ms)", f"{li['p50']:.1f}", f"{ls['p50']:.1f}", "")
    table.add_row("key → frame p95 (ms)", f"{li['p95']:.1f}", f"{ls['p95']:.1f}", "< 50 streaming")
    table.add_row("key → frame max (ms)", f"{li['max']:.1f}", f"{ls['max']:.1f}", "")
    table.add_row("tokens/s (best)", f"{direct_tps:.0f}", f"{app_tps:.0f}", "> 1000")
    table.add_row("app / direct", "", f"{summary['app_vs_direct']:.1%}", ">= 90%")
    table.add_row("tokens/s while keys pressed", "", f"{r['tokens_per_s_during_presses']:.0f}", "")
    table.add_row("story complete (== direct)", "", str(r["complete"]), "True")
    lt = summary["latency_train_screen_ms"]
    table.add_row(
        "Train screen key → frame p50 / p95 (ms)",
        "",
        f"{lt['p50']:.1f} / {lt['p95']:.1f}",
        "p95 < 50",
    )
    table.add_row(
        "  beside it: train steps, story tok/s (1 thread)",
        "",
        f"{t['train_steps_during']}, {t['story_tokens_per_s_during']:.0f}",
        "",
    )
    Console().print(table)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("tui_latency-quick.json" if args.quick else "tui_latency.json")
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
