"""Getting a run ready: output folder rules, tokenizer, token shards, resume checks.

Everything that can be wrong with the input is found here, before a single file of an
existing run is touched: a folder that holds another run (refused without `--resume` or
`--force`), `--resume` without a checkpoint or with a different model shape, a context
longer than the checkpoint supports, a tokenizer whose vocabulary differs from
`model.vocab_size`, shards written by another tokenizer, a validation shard too small for one
window, `train.sample_top_k` larger than the vocabulary, `train.tensorboard` without the
package. A tokenizer trained for the run goes
to a hidden temporary folder first and is moved to `<output>/tokenizer` only once every check
has passed. Torch-free.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_tui.briefing import TrainingBriefs
from slm_tui.checkpoint.format import is_checkpoint, read_info
from slm_tui.config import Config, ModelConfig
from slm_tui.corpus import CorpusSource
from slm_tui.errors import ConfigError, DataError, SlmError, TrainingError
from slm_tui.fileio import temp_dir
from slm_tui.presets import load_config
from slm_tui.shards import Shards, corpus_source, iter_stories, prepare_shards
from slm_tui.tokenizers import Tokenizer, get_tokenizer_class, load_tokenizer, train_tokenizer
from slm_tui.trainer.report import LOG_FILE, Reporter, require_tensorboard

RUN_ENTRIES = (
    "latest", "best", "metrics.jsonl", "loss.png", "evals", "tensorboard", "config.yaml",
)  # fmt: skip


@dataclass
class RunPlan:
    config: Config
    output: Path
    tokenizer: Tokenizer
    shards: Shards
    resume_from: Path | None = None
    replaced: bool = False
    pending_tokenizer: Path | None = None  # trained into a temp folder, moved in by `commit`

    def commit(self, reporter: Reporter) -> None:
        """Apply the changes to the output folder (called once all checks passed, rank 0)."""
        self.output.mkdir(parents=True, exist_ok=True)
        if self.replaced:
            for name in RUN_ENTRIES:
                target = self.output / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            reporter.on_message(f"--force: replaced the previous run in {self.output}")
        if self.pending_tokenizer is not None:
            final = self.output / "tokenizer"
            if final.exists():
                shutil.rmtree(final)
            self.pending_tokenizer.rename(final)
            self.tokenizer = load_tokenizer(final)
            self.pending_tokenizer = None


def describe_output(output: Path) -> str | None:
    """None when `output` can take a new run; else what is in the way."""
    if not output.exists():
        return None
    if not output.is_dir():
        return f"{output} is a file, not a folder"
    entries = [p.name for p in output.iterdir() if not p.name.startswith(".")]
    if any(name in RUN_ENTRIES for name in entries):
        step = _latest_step(output)
        return f"{output} holds another run" + (f" (step {step})" if step is not None else "")
    others = [e for e in entries if e not in ("tokenizer", LOG_FILE)]
    if others:
        return f"{output} is not empty (holds {', '.join(sorted(others)[:3])})"
    return None


def _latest_step(output: Path) -> int | None:
    try:
        return read_info(output / "latest").step
    except (SlmError, OSError, ValueError):
        return None


def corpus_sources(cfg: Config) -> tuple[CorpusSource, CorpusSource | None]:
    """(train source, validation source or None) from the data section."""
    d = cfg.data
    if d.val_files:
        val = corpus_source(None, d.val_files, split=d.val_split)
        return corpus_source(d.dataset if not d.data_files else None, d.data_files,
                             split=d.train_split), val  # fmt: skip
    if d.data_files:
        return corpus_source(None, d.data_files, split=d.train_split), None
    if not d.dataset:
        raise ConfigError("no corpus: pass --data-files F or --dataset ID (or set data.dataset)")
    return (
        corpus_source(d.dataset, None, split=d.train_split),
        corpus_source(d.dataset, None, split=d.val_split) if d.val_split else None,
    )


def shards_for(
    cfg: Config,
    source: CorpusSource,
    val_source: CorpusSource | None,
    tokenizer: Tokenizer,
    reporter: Reporter | None = None,
) -> Shards:
    """Token shards for (source, tokenizer, data.briefs): cached, built when missing;
    checked to match."""
    out = Path(cfg.data.shards_dir).expanduser() if cfg.data.shards_dir else None
    shards = prepare_shards(
        source,
        tokenizer,
        out,
        val_source=val_source,
        val_fraction=cfg.data.val_fraction,
        progress=reporter.on_prepare if reporter is not None else None,
        refuse_overlap=bool(cfg.data.val_files),
        workers=cfg.data.workers,
        briefs=TrainingBriefs.of(cfg),
    )
    for shard in (shards.train, shards.val):
        fp = shard.meta.get("tokenizer_fingerprint")
        if fp != tokenizer.fingerprint:
            raise DataError(
                f"shard {shard.path} was made with another tokenizer ({str(fp)[:12]}, this one is "
                f"{tokenizer.fingerprint[:12]}); rebuild it with `slm-train data` or use another "
                "data.shards_dir"
            )
        top = int(shard.tokens.max()) if shard.num_tokens else 0
        if top >= tokenizer.vocab_size:  # a damaged .bin would crash the embedding lookup
            raise DataError(
                f"shard {shard.path} holds token id {top}, outside the tokenizer's "
                f"{tokenizer.vocab_size} ids: it is damaged; rebuild it with `slm-train data "
                "--force`"
            )
    return shards


def model_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [k for k in da if da[k] != db[k] and not (k == "vocab_size" and None in (da[k], db[k]))]


def _check_vocab(cfg: Config, tokenizer: Tokenizer) -> None:
    if cfg.model.vocab_size is None:
        cfg.model.vocab_size = tokenizer.vocab_size
    elif cfg.model.vocab_size != tokenizer.vocab_size:
        raise ConfigError(
            f"model.vocab_size is {cfg.model.vocab_size} but the tokenizer at {tokenizer.path} "
            f"has {tokenizer.vocab_size} ids; drop model.vocab_size or use a matching tokenizer"
        )
    tc = cfg.train
    if tc.sample_tokens > 0 and tc.sample_top_k > tokenizer.vocab_size:
        raise ConfigError(
            f"train.sample_top_k {tc.sample_top_k} is larger than the vocabulary "
            f"({tokenizer.vocab_size} tokens); use at most that, or 0 to turn it off"
        )


def _check_resume(cfg: Config, output: Path, tokenizer_path: str | None) -> tuple[Path, Tokenizer]:
    latest = output / "latest"
    if not is_checkpoint(latest):
        raise TrainingError(
            f"--resume: no checkpoint in {latest}; start a fresh run without --resume"
        )
    saved = load_config(str(latest / "config.yaml"))
    if cfg.model.context_length > saved.model.context_length:
        raise ConfigError(
            f"model.context_length {cfg.model.context_length} is larger than the checkpoint's "
            f"{saved.model.context_length} (the most positions it was built for); keep "
            f"{saved.model.context_length} to resume"
        )
    diffs = model_differences(cfg.model, saved.model)
    if diffs:
        pairs = ", ".join(
            f"{k} {getattr(saved.model, k)} -> {getattr(cfg.model, k)}" for k in diffs[:4]
        )
        raise TrainingError(
            f"--resume: the checkpoint in {latest} has a different model shape ({pairs}); "
            "resume with its config or start a new run in another --output"
        )
    tok = load_tokenizer(latest / "tokenizer")
    if tokenizer_path is not None:
        other = load_tokenizer(tokenizer_path)
        if other.fingerprint != tok.fingerprint:
            raise TrainingError(
                f"--resume: --tokenizer {tokenizer_path} is not the tokenizer the run was "
                "trained with; drop --tokenizer to use the checkpoint's own"
            )
    return latest, tok


def plan_run(
    cfg: Config,
    output: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    tokenizer_path: str | None = None,
    reporter: Reporter | None = None,
    build: bool = True,
) -> RunPlan:
    """Check everything and build what is missing (tokenizer, shards) without touching the
    output folder's existing files. `build=False` (non-zero ranks): load, never write."""
    reporter = reporter or Reporter()
    output = Path(output).expanduser()
    if resume and force:
        raise ConfigError("--resume and --force contradict each other; pass one")
    if cfg.train.tensorboard:
        require_tensorboard()
    replaced = False
    resume_from = None
    if resume:
        resume_from, tok = _check_resume(cfg, output, tokenizer_path)
    else:
        problem = describe_output(output) if build else None
        if problem is not None:
            if not force or not output.is_dir():
                raise TrainingError(
                    f"{problem}; pass --resume to continue it, --force to replace it, "
                    "or choose another --output"
                )
            replaced = True
        tok = None
        path = tokenizer_path or cfg.tokenizer.path
        if path is not None:
            tok = load_tokenizer(path)
            if tokenizer_path is not None:
                cfg.tokenizer.path = str(Path(tokenizer_path).expanduser().resolve())
    source, val_source = corpus_sources(cfg)
    pending = None
    if tok is None and not build:
        tok = load_tokenizer(output / "tokenizer")
    elif tok is None:
        vocab = cfg.model.vocab_size
        fixed = get_tokenizer_class(cfg.tokenizer.kind).fixed_vocab_size is not None
        if vocab is not None and not fixed and vocab != cfg.tokenizer.vocab_size:
            raise ConfigError(
                f"model.vocab_size is {vocab} but tokenizer.vocab_size is "
                f"{cfg.tokenizer.vocab_size}; drop model.vocab_size or make them equal"
            )
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(output.parent, prefix=f".{output.name}.tokenizer-", suffix="")
        size = "" if fixed else f" (vocab {cfg.tokenizer.vocab_size})"
        reporter.on_message(
            f"training a {cfg.tokenizer.kind} tokenizer{size} for {output / 'tokenizer'}"
        )
        options: dict[str, Any] = {}
        if cfg.tokenizer.kind.startswith("sentencepiece"):
            options["max_sentences"] = cfg.tokenizer.max_sentences
        if cfg.tokenizer.vocab_file:
            if not get_tokenizer_class(cfg.tokenizer.kind).pretrained:
                raise ConfigError(
                    f"tokenizer.vocab_file is for pretrained kinds (gpt2); "
                    f"'{cfg.tokenizer.kind}' learns its vocabulary from the corpus"
                )
            options["vocab_file"] = cfg.tokenizer.vocab_file
        try:
            tok = train_tokenizer(
                cfg.tokenizer.kind,
                iter_stories(source),
                cfg.tokenizer.vocab_size,
                tmp / "tokenizer",
                **options,
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        pending = tmp / "tokenizer"
    try:
        _check_vocab(cfg, tok)
        shards = shards_for(cfg, source, val_source, tok, reporter if build else None)
        need = cfg.model.context_length + 1
        for name, shard in (("train", shards.train), ("validation", shards.val)):
            if shard.num_tokens < need:
                raise DataError(
                    f"the {name} shard has {shard.num_tokens} tokens, fewer than one window of "
                    f"{need}; use a larger corpus or a smaller model.context_length"
                )
    except BaseException:
        if pending is not None:
            shutil.rmtree(pending.parent, ignore_errors=True)
        raise
    return RunPlan(cfg, output, tok, shards, resume_from, replaced, pending)
