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

Briefs: `--words a,b,c`, `--name Lily`, `--features dialogue` ask every story for what it
must contain (`slm_tui/briefs.py`); a JSONL prompts row's own `"brief"` object overrides
them for that row (`{}`: no brief). The model reads the brief's block before the prompt;
the output is the prompt and the story, and JSONL rows carry `brief`. A brief that cannot
be one (an unknown feature, too many words, a word that is not letters) is a one-line
error; a model trained without briefs, and brief words the model's tokenizer splits into
more than two tokens or spells in bytes, get a one-line warning each (a local model: a
server does not say how it was trained or tokenizes).

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
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from slm_tui.briefing import word_warnings
from slm_tui.briefs import Brief
from slm_tui.checkpoint.format import CheckpointInfo
from slm_tui.cli.common import Command, cli_errors, err, for_terminal, plural, warn
from slm_tui.errors import GenerationError
from slm_tui.fileio import write_output
from slm_tui.generation import (
    DEFAULTS,
    Event,
    GenerationResult,
    SamplingSettings,
)
from slm_tui.generation.engine import row_seeds
from slm_tui.generation.prompts import (
    PROMPTS_LIMIT,
    PromptRow,
    parse_prompt_rows,
    read_prompt_rows,
)
from slm_tui.handle import LocalModel, ModelHandle, ServerModel, brief_note

SEPARATOR = "<|endoftext|>"
MAX_STORIES = 100_000  # stories one run writes (all are held until the output is written)
MAX_BATCH = 1024
MAX_WORD_WARNINGS = 10  # lines about badly tokenized brief words, then a count
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
    words: Annotated[
        str | None, _opt("Brief: words every story must use, comma-separated (dog,cake,happy)")
    ] = None,
    name: Annotated[str | None, _opt("Brief: the main character's name (Lily)")] = None,
    features: Annotated[
        str | None, _opt("Brief: features, comma-separated (dialogue, moral)")
    ] = None,
    brief_strength: Annotated[
        float | None,
        _opt("How hard sampling steers toward brief words not yet written (default 1; 0: off)"),
    ] = None,
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
        changes: dict[str, Any] = {  # SamplingSettings.replace's keywords
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "min_p": min_p,
            "repetition_penalty": repetition_penalty,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "stop": tuple(stop) if stop else None,
            "ignore_eos": ignore_eos or None,
            "brief_strength": brief_strength,
        }
        changes["brief"] = _flag_brief(words, name, features)
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
        rows = _collect_prompts(prompt, prompts, alone=settings.brief is not None)
        texts = [row.prompt for row in rows]
        # A row's own brief overrides the flags' (an empty one: no brief for that row).
        per_prompt = [settings if r.brief is None else settings.replace(brief=r.brief)
                      for r in rows]  # fmt: skip
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
            handle: ModelHandle = ServerModel.connect(server, model, api_key)
            about: dict = {"server": server, "model": handle.identity}
        else:
            if model is not None:
                raise GenerationError("--model names a server's model; give --server too")
            handle = LocalModel.load(_checkpoint_path(checkpoint), device)
            about = _about(handle.info)
        settings.validate(handle.vocab_size)  # a server checks its own
        _warn_briefs(handle, per_prompt)
        if stream:
            _warn_truncated(handle, 0, _too_long(handle, texts[0], per_prompt[0].brief))
            _print_stream(texts[0], handle.stream(texts[0], per_prompt[0]))
            return
        jobs = [t for t in texts for _ in range(samples)]
        job_settings = [s for s in per_prompt for _ in range(samples)]
        seeds = row_seeds(len(jobs), settings.seed)
        same = all(s is settings for s in per_prompt)
        results = _run(handle, jobs, settings if same else job_settings, batch, seeds)
        for i in range(len(texts)):
            _warn_truncated(handle, i, results[i * samples].prompt_truncated)
        if format == Format.jsonl:
            lines = []
            for j, r in enumerate(results):
                used = job_settings[j]
                row = {
                    "prompt": r.prompt,
                    "brief": used.brief.to_dict() if used.brief is not None else None,
                    "sample": j % samples,
                    "text": r.text,
                    "finish_reason": r.finish_reason,
                    "tokens": r.num_tokens,
                    "seed": r.seed,
                    "settings": used.replace(seed=r.seed).to_dict(),
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
            write_output(output, body)
            n = len(results)
            err.print(f"wrote {plural(n, 'story', 'stories')} to {output}", highlight=False)


def _flag_brief(words: str | None, name: str | None, features: str | None) -> Brief | None:
    """The brief the --words/--name/--features flags ask for (None: none given); an error
    names the flag."""
    if words is None and name is None and features is None:
        return None
    word_list = () if words is None else tuple(words.split(","))
    feature_list = () if features is None else tuple(features.split(","))
    for flag, given, part in (
        ("--words", words, lambda: Brief(words=word_list)),
        ("--name", name, lambda: Brief(name=name)),
        ("--features", features, lambda: Brief(features=feature_list)),
    ):
        if given is None:
            continue
        try:
            part()  # each flag checked alone, so an error names it
        except GenerationError as exc:
            raise GenerationError(f"{flag}: {exc}") from None
    return Brief(words=word_list, name=name, features=feature_list)


def _warn_briefs(handle: ModelHandle, settings: list[SamplingSettings]) -> None:
    """Once: a model trained without briefs; brief words its tokenizer splits badly."""
    briefs = list(dict.fromkeys(s.brief for s in settings if s.brief is not None))
    if not briefs:
        return
    note = brief_note(handle)
    if note is not None:
        warn(note)
    if handle.tokenizer is None:
        return
    lines = list(dict.fromkeys(line for b in briefs for line in word_warnings(b, handle.tokenizer)))
    for line in lines[:MAX_WORD_WARNINGS]:
        warn(line)
    if len(lines) > MAX_WORD_WARNINGS:
        warn(f"... and {len(lines) - MAX_WORD_WARNINGS} more brief words like these")


def _collect_prompts(
    prompt: list[str] | None, prompts: Path | None, *, alone: bool = False
) -> list[PromptRow]:
    """The prompts of --prompt, --prompts, else stdin. `alone` (a brief was given): with no
    prompt anywhere (a terminal, or nothing piped), one empty prompt: the story is written
    from the brief alone."""
    texts = [PromptRow(p) for p in prompt or []]
    if prompts is not None:
        texts += read_prompt_rows(prompts)
    if prompt is None and prompts is None:
        if sys.stdin is None or sys.stdin.isatty():
            if alone:
                return [PromptRow("")]
            raise GenerationError(
                "no prompts: give --prompt TEXT, --prompts FILE, or pipe prompts on stdin"
            )
        data = sys.stdin.buffer.read(PROMPTS_LIMIT + 1)
        if len(data) > PROMPTS_LIMIT:
            raise GenerationError(
                f"stdin holds more than {PROMPTS_LIMIT >> 20} MiB of prompts; give fewer"
            )
        if alone and not data.strip():
            return [PromptRow("")]
        texts = parse_prompt_rows(data, "stdin")
    return texts


def _about(info: CheckpointInfo) -> dict[str, Any]:
    """What the JSONL says of the model: its name and step, and its quality as honestly as
    known: recorded held-out figures with their corpora, else the in-run figure, named so."""
    about: dict[str, Any] = {"checkpoint": info.name, "step": info.step}
    if info.evaluations:
        about["bits_per_byte"] = {e.name: round(e.bpb, 4) for e in info.evaluations}
    elif info.val_bpb is not None:
        about["in_run_val_bits_per_byte"] = round(info.val_bpb, 4)
    return about


def _too_long(handle: ModelHandle, prompt: str, brief: Brief | None) -> bool:
    """Whether a local model will keep only the end of `prompt` (a server says so itself)."""
    if handle.tokenizer is None or handle.context_length is None:
        return False
    from slm_tui.generation.engine import prepare_prompt

    return prepare_prompt(handle.tokenizer, prompt, handle.context_length, brief=brief)[1]


def _warn_truncated(handle: ModelHandle, i: int, truncated: bool) -> None:
    if truncated:
        context = plural(handle.context_length or 0, "token")
        warn(f"prompt {i + 1} is longer than the model's context ({context}); its end was kept")


def _checkpoint_path(checkpoint: Path | None) -> Path:
    if checkpoint is not None:
        return checkpoint
    from slm_tui.checkpoint.format import bundled_demo_path

    demo = bundled_demo_path()
    if demo is None:
        raise GenerationError("no --checkpoint given and no bundled demo model found")
    return demo


def _run(
    handle: ModelHandle,
    jobs: list[str],
    settings: SamplingSettings | list[SamplingSettings],
    batch: int,
    seeds: list[int],
) -> list[GenerationResult]:
    """Every story, with a progress bar on stderr when there are several."""
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=len(jobs) == 1) as bar:
        task = bar.add_task("generate", total=len(jobs))
        return handle.generate_batch(
            jobs,
            settings,
            batch,
            seeds=seeds,
            progress=lambda done, total: bar.update(task, completed=done),
        )


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


def main() -> None:
    app()
