"""`slm-generate`: write stories from a checkpoint, for scripts and shell pipelines.

Prompts come from `--prompt` (repeatable), `--prompts FILE` (one per line, or JSONL with a
`prompt` field; at most 64 MiB) or, when neither is given, from stdin (when it is not a
terminal; the same bound). Every prompt is written `--num-samples` times, at most 100,000
stories a run; job j (prompt i, sample s, j = i·N + s) uses seed `--seed + j`, so one seed
reproduces the whole output. Results go to stdout (nothing else does: progress, warnings
and errors go to stderr) or to `--output FILE`, written atomically after the last story, so
an error never leaves a partial file. `--output` through a symlink replaces the link's
target and keeps the link; a device or FIFO (`/dev/stdout`, `/dev/null`) is written in
place, never replaced; a full disk is one line that says the old file was kept.

Text output: each story is its prompt followed by the continuation; several stories are
separated by a line `<|endoftext|>` (the TinyStories dump format, so the output can be read
back as a corpus). On a terminal, control characters (ESC, BEL, ...: a prompt can carry an
escape sequence, a young model can write one) are shown as visible symbols (␛, ␇), as the
TUI shows them; a file or a pipe gets the text unchanged. JSONL output: one object per story
with prompt, sample, text, finish_reason, tokens, seed and settings (DEL and C1 controls
written as \\u escapes, like the other control characters JSON escapes).

Flags are typed (numbers are parsed by click); a value click refuses, like one the sampler
refuses, is one line on stderr and exit code 2 (`cli.common.Command`). JSONL rows also carry
`model`: the checkpoint's name and step and its recorded held-out bits per byte by corpus
(else the in-run figure, named so), or the server and model name.

(A little over the project's ~400-line guide: the flags, the prompt readers and the two
output formats are one command's surface, local and `--server` alike.)
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from slm_tui.cli.common import Command, cli_errors, err, for_terminal, plural, warn
from slm_tui.errors import GenerationError
from slm_tui.fileio import atomic_write_text, disk_full_reason, is_disk_full
from slm_tui.generation import (
    DEFAULTS,
    Event,
    GenerationResult,
    SamplingSettings,
    generate,
    generate_batch,
    prepare_prompt,
)
from slm_tui.generation.engine import row_seeds
from slm_tui.generation.remote import Cancelled, Remote
from slm_tui.untrusted import read_bounded

SEPARATOR = "<|endoftext|>"
MAX_STORIES = 100_000  # stories one run writes (all are held until the output is written)
MAX_BATCH = 1024
PROMPTS_LIMIT = 64 << 20  # bytes of a prompts file or of stdin
_JSON_CONTROLS = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}  # json.dumps keeps these raw

app = typer.Typer(
    name="slm-generate",
    help="Write stories with a trained checkpoint (batch or streaming).",
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    text = "text"
    jsonl = "jsonl"


def _opt(help: str) -> typer.models.OptionInfo:
    return typer.Option(help=help, show_default=False)


@app.command(cls=Command)
def main_command(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint folder, or a run folder (its best/ else latest/). "
            "Default: the bundled demo model."
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None, typer.Option(help='A prompt (repeatable). "" starts from nothing.')
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="A file of prompts: one per line, or JSONL with a "
            '"prompt" field. Without --prompt/--prompts: stdin.'
        ),
    ] = None,
    temperature: Annotated[
        float | None, _opt(f"0 = greedy (default {DEFAULTS.temperature:g})")
    ] = None,
    top_k: Annotated[
        int | None, _opt(f"Keep the k most likely tokens, 0 = off (default {DEFAULTS.top_k})")
    ] = None,
    top_p: Annotated[
        float | None, _opt(f"Nucleus mass, 1 = off (default {DEFAULTS.top_p:g})")
    ] = None,
    min_p: Annotated[
        float | None,
        _opt(
            f"Drop tokens below min_p x the top probability, 0 = off (default {DEFAULTS.min_p:g})"
        ),
    ] = None,
    repetition_penalty: Annotated[
        float | None,
        _opt(
            f"Penalty on the last {DEFAULTS.repetition_window} tokens, 1 = off "
            f"(default {DEFAULTS.repetition_penalty:g})"
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None, _opt(f"Tokens to write per story (default {DEFAULTS.max_new_tokens})")
    ] = None,
    seed: Annotated[
        int | None,
        _opt("Seed of the first story (story j uses seed + j); default: random, reported"),
    ] = None,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop when this text appears (repeatable).")
    ] = None,
    ignore_eos: Annotated[
        bool,
        typer.Option(
            help="Write past the end-of-story token, to --max-new-tokens (for benchmarks)."
        ),
    ] = False,
    num_samples: Annotated[int, typer.Option(help="Stories per prompt.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Stories decoded together.")] = 8,
    format: Annotated[Format, typer.Option(help="Output format.")] = Format.text,
    output: Annotated[
        Path | None, typer.Option(help="Write results here (atomically) instead of stdout.")
    ] = None,
    stream: Annotated[
        bool, typer.Option(help="Print tokens as they come (a single prompt, text output).")
    ] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps")] = "auto",
    server: Annotated[
        str | None,
        typer.Option(
            help="Generate on an OpenAI-compatible server instead (slm-serve, llama.cpp, vLLM, "
            "ollama's /v1): http://host:port",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="The server's model id (default: its first).", show_default=False),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SLM_API_KEY",
            help="The server's API key (also $SLM_API_KEY).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write stories from prompts with a trained checkpoint (or on a server)."""
    with cli_errors():
        changes = {
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "min_p": min_p,
            "repetition_penalty": repetition_penalty,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "stop": tuple(stop) if stop else None,
            "ignore_eos": ignore_eos or None,
        }
        settings = DEFAULTS.replace(**{k: v for k, v in changes.items() if v is not None})
        samples, batch = num_samples, batch_size
        if samples < 1:
            raise GenerationError(f"--num-samples must be at least 1, got {samples}")
        if not 1 <= batch <= MAX_BATCH:
            raise GenerationError(f"--batch-size must be from 1 to {MAX_BATCH}, got {batch}")
        if samples > MAX_STORIES:
            raise GenerationError(
                f"--num-samples {samples:,} is more than the {MAX_STORIES:,} stories one run "
                "writes; split the job into several runs"
            )
        texts = _collect_prompts(prompt, prompts)
        if len(texts) * samples > MAX_STORIES:
            raise GenerationError(
                f"{len(texts):,} prompts x --num-samples {samples:,} is "
                f"{len(texts) * samples:,} stories, more than the {MAX_STORIES:,} one run "
                "writes; split the job into several runs"
            )
        if stream and (len(texts) * samples != 1 or format != Format.text or output is not None):
            raise GenerationError("--stream needs one prompt, one sample, text output to stdout")
        if output is not None and output.is_dir():
            raise GenerationError(f"--output {output} is a directory; give a file name")

        if server is not None:
            if checkpoint is not None:
                raise GenerationError("give --checkpoint or --server, not both")
            remote = Remote(server, api_key)
            name = model or _first_model(remote)
            if stream:
                _print_stream(texts[0], remote.stream(name, texts[0], settings, top_n=0))
                return
            jobs = [t for t in texts for _ in range(samples)]
            seeds = row_seeds(len(jobs), settings.seed)
            results = _run_remote(remote, name, jobs, settings, batch, seeds)
            about = {"server": server, "model": name}
        else:
            if model is not None:
                raise GenerationError("--model names a server's model; give --server too")
            loaded = _load(checkpoint, device)
            net, tokenizer = loaded.model, loaded.tokenizer
            settings.validate(net.cfg.vocab_size)
            context = net.cfg.context_length
            for i, text in enumerate(texts):
                ids, truncated = prepare_prompt(tokenizer, text, context)
                if truncated:
                    warn(
                        f"prompt {i + 1} is longer than the model's context "
                        f"({plural(context, 'token')}); keeping its last {plural(len(ids), 'token')}"
                    )
            if stream:
                _print_stream(texts[0], generate(net, tokenizer, texts[0], settings))
                return
            jobs = [t for t in texts for _ in range(samples)]
            seeds = row_seeds(len(jobs), settings.seed)
            results = _run(net, tokenizer, jobs, settings, batch, seeds)
            about = _about(loaded.info)
        if format == Format.jsonl:
            lines = []
            for j, r in enumerate(results):
                row = {
                    "prompt": r.prompt,
                    "sample": j % samples,
                    "text": r.text,
                    "finish_reason": r.finish_reason,
                    "tokens": r.num_tokens,
                    "seed": r.seed,
                    "settings": settings.replace(seed=r.seed).to_dict(),
                    "model": about,
                }
                lines.append(json.dumps(row, ensure_ascii=False).translate(_JSON_CONTROLS) + "\n")
            body = "".join(lines)
        else:
            sep = f"\n{SEPARATOR}\n"
            body = sep.join(r.prompt + r.text for r in results) + "\n"
            if output is None and sys.stdout.isatty():
                body = for_terminal(body)
        if output is None:
            sys.stdout.write(body)
            sys.stdout.flush()
        else:
            write_atomic(output, body)
            n = len(results)
            err.print(f"wrote {plural(n, 'story', 'stories')} to {output}", highlight=False)


def read_prompts_file(path: Path) -> list[str]:
    """Prompts from a file: JSONL (a `prompt` field per line) when the first non-blank line
    starts with `{` or the name ends in .jsonl, else one prompt per non-blank line."""
    if path.is_dir():
        raise GenerationError(f"--prompts {path} is a directory; give a file")
    if not path.exists():
        raise GenerationError(f"--prompts {path}: no such file")
    return parse_prompts(read_bounded(path, PROMPTS_LIMIT, GenerationError), str(path))


def parse_prompts(data: bytes, origin: str) -> list[str]:
    lines = data.split(b"\n")
    decoded = []
    for n, raw in enumerate(lines, 1):
        try:
            decoded.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            raise GenerationError(f"{origin} line {n} is not valid UTF-8 text") from None
    first = next((line for line in decoded if line.strip()), "")
    jsonl = origin.endswith(".jsonl") or first.lstrip().startswith("{")
    out: list[str] = []
    for n, line in enumerate(decoded, 1):
        if not line.strip():
            continue
        if not jsonl:
            out.append(line)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GenerationError(f"{origin} line {n} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise GenerationError(f'{origin} line {n} has no "prompt" text field')
        out.append(obj["prompt"])
    if not out:
        raise GenerationError(f"{origin} holds no prompts")
    return out


def _collect_prompts(prompt: list[str] | None, prompts: Path | None) -> list[str]:
    texts = list(prompt or [])
    if prompts is not None:
        texts += read_prompts_file(prompts)
    if prompt is None and prompts is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise GenerationError(
                "no prompts: give --prompt TEXT, --prompts FILE, or pipe prompts on stdin"
            )
        data = sys.stdin.buffer.read(PROMPTS_LIMIT + 1)
        if len(data) > PROMPTS_LIMIT:
            raise GenerationError(
                f"stdin holds more than {PROMPTS_LIMIT >> 20} MiB of prompts; give fewer"
            )
        texts = parse_prompts(data, "stdin")
    return texts


def _about(info) -> dict:
    """What the JSONL says of the model: its name and step, and its quality as honestly as
    known: recorded held-out figures with their corpora, else the in-run figure, named so."""
    about: dict = {"checkpoint": info.name, "step": info.step}
    if info.evaluations:
        about["bits_per_byte"] = {e.name: round(e.bpb, 4) for e in info.evaluations}
    elif info.val_bpb is not None:
        about["in_run_val_bits_per_byte"] = round(info.val_bpb, 4)
    return about


def _load(checkpoint: Path | None, device: str):
    from slm_tui.checkpoint.io import bundled_demo_path, load_checkpoint

    if checkpoint is None:
        checkpoint = bundled_demo_path()
        if checkpoint is None:
            raise GenerationError("no --checkpoint given and no bundled demo model found")
    return load_checkpoint(checkpoint, device)  # device "auto": CUDA > MPS > CPU


def _run(
    model, tokenizer, jobs: list[str], settings: SamplingSettings, batch: int, seeds: list[int]
):
    if len(jobs) == 1:
        return generate_batch(model, tokenizer, jobs, settings, batch, seeds=seeds)
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("generate", total=len(jobs))
        return generate_batch(
            model,
            tokenizer,
            jobs,
            settings,
            batch,
            seeds=seeds,
            progress=lambda done, total: bar.update(task, completed=done),
        )


def _run_remote(
    remote: Remote,
    model: str,
    jobs: list[str],
    settings: SamplingSettings,
    batch: int,
    seeds: list[int],
) -> list[GenerationResult]:
    """One request per story, `batch` at a time (the server batches them). The first
    failure (or Ctrl-C) cancels the requests still out: their sockets are closed, so the
    command ends at once instead of waiting on every request to time out."""
    cancel = threading.Event()

    def one(j: int) -> GenerationResult:
        done = remote.complete(model, jobs[j], settings.replace(seed=seeds[j]), cancel=cancel)
        return GenerationResult(
            prompt=jobs[j],
            text=done.text,
            token_ids=[],
            finish_reason=done.finish_reason,
            seed=seeds[j],
            num_tokens=done.tokens if done.tokens is not None else 0,
        )

    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with (
        ThreadPoolExecutor(max_workers=min(batch, len(jobs))) as pool,
        Progress(*columns, console=err, transient=True, disable=len(jobs) == 1) as bar,
    ):
        task = bar.add_task("generate", total=len(jobs))
        futures = [pool.submit(one, j) for j in range(len(jobs))]
        try:
            for n, future in enumerate(as_completed(futures), 1):
                bar.update(task, completed=n)
                if future.exception() is not None:
                    break
        finally:
            cancel.set()  # a no-op when every story is written
            pool.shutdown(wait=True, cancel_futures=True)
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception()]
        first = next((f for f in failed if not isinstance(f.exception(), Cancelled)), None)
        if first is not None or failed:
            raise (first or failed[0]).exception()  # type: ignore[misc]
        return [f.result() for f in futures]


def _first_model(remote: Remote) -> str:
    names = remote.models()
    if not names:
        raise GenerationError(f"{remote.base} serves no model")
    return names[0]


def _print_stream(prompt: str, events: Iterator[Event]) -> None:
    """Print the prompt, then each text delta as it arrives."""
    shown = for_terminal if sys.stdout.isatty() else str
    sys.stdout.write(shown(prompt))
    sys.stdout.flush()
    last = None
    try:
        for event in events:
            if event.text:
                sys.stdout.write(shown(event.text))
                sys.stdout.flush()
            last = event
    finally:  # the story's line ends before an error is said on stderr
        sys.stdout.write("\n")
        sys.stdout.flush()
    if last is not None:
        err.print(
            f"{plural(last.index, 'token')}, {last.tokens_per_s:.1f} tokens/s, "
            f"finish: {last.finish_reason}, seed {last.seed}",
            style="dim",
            highlight=False,
        )


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary sibling, fsync, then rename over `path` (a symlink's target is
    replaced; a device or FIFO is written in place: `fileio.atomic_write_bytes`)."""
    path = path.expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise GenerationError(f"--output {path}: folder {parent} does not exist")
    existed = path.exists()
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        kept = "the file there was kept as it was" if existed else "nothing was written"
        if existed and not path.is_file():
            kept = "not all stories were written"
        raise GenerationError(f"--output {path}: {disk_full_reason(exc)}; {kept}") from None


def main() -> None:
    app()
