"""What a run tells the outside world: the records, the reporter hooks, metrics.jsonl, loss.png.

The library never prints. `train()` calls a `Reporter` (all hooks optional, default no-ops)
with small dataclasses; the CLI implements one with a rich live display. Every logged
record also goes, one JSON object per line, to `<output>/metrics.jsonl`: the line is
`{"kind": ..., **asdict(record)}` (`kind`: "train", "eval", "samples", "event"), except that
a train line carries `mfu` only when the device has a known peak, and only "start" and
"resume" events carry `max_steps` (so a watcher such as slm-tui's Train screen knows where
the run is going) and the run's `dtype`, `compile` and `math_attention` (decided when it
started; a resume keeps them). `loss.png` (matplotlib, headless Agg backend) plots train
and validation loss against tokens seen; it is redrawn at each evaluation and at the end. With
`train.tensorboard` every line is also mirrored as TensorBoard events (`TensorBoardLog`,
imported lazily). `parse_record` is the read side: a line back into its record, every
field checked (slm-tui's Train screen and `plot_loss` read with it). Torch-free, so the
CLI can subclass `Reporter` cheaply.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from slm_tui.errors import CheckpointError, TrainingError
from slm_tui.fileio import atomic_write_bytes, json_safe
from slm_tui.untrusted import MiB, decode_text, read_bounded

METRICS_LIMIT = 512 * MiB  # ~2.5M log lines; a resumed run reads the checkpoint's copy
# The trainer's output as a launcher keeps it (slm-tui writes it before the run starts): a
# folder holding only this (and a tokenizer) takes a new run.
LOG_FILE = "train.log"

if TYPE_CHECKING:
    from slm_tui.config import Config
    from slm_tui.shards import ShardProgress


@dataclass
class RunStart:
    """The run begins (not logged: the config is written to `<output>/config.yaml` at the
    start and saved with every checkpoint)."""

    step: int  # 0, or the step a resumed run continues from
    max_steps: int
    params: int
    device: str
    world_size: int
    micro_batch: int  # rows per micro-step on each rank
    tokens_per_step: int  # global
    output: str
    resumed: bool
    tokenizer: str  # the tokenizer's kind
    vocab_size: int
    train_tokens: int
    dtype: str  # the autocast dtype chosen (float32 | bfloat16)
    speed: str  # how the run uses the machine and why (speed.SpeedChoice.describe)
    config: Config
    tokens_seen: int = 0  # at `step`: what a resumed run had trained before this process
    elapsed_s: float = 0.0  # seconds trained before this process (a resumed run)
    val_tokens: int = 0  # in the validation shard
    held_out: str = ""  # how validation text was chosen ("every 200th story held out ...")


@dataclass
class TrainRecord:
    """Every train.log_every steps (and the last): the mean loss since the previous record."""

    KIND: ClassVar[str] = "train"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("mfu",)  # left out of the line when None

    step: int
    tokens: int
    loss: float | None
    lr: float
    tokens_per_s: float
    elapsed_s: float
    mfu: float | None  # model FLOPs utilisation, on a GPU with a known bf16 peak
    eta_s: float | None


@dataclass
class EvalRecord:
    """After each evaluation: nats per target token and bits per byte on validation text."""

    KIND: ClassVar[str] = "eval"

    step: int
    tokens: int
    val_loss: float
    val_bpb: float
    val_tokens: int  # targets the figures were measured on


@dataclass
class Sample:
    prompt: str
    text: str  # the continuation only (a leading space stays)


@dataclass
class SamplesRecord:
    """Continuations of train.sample_prompts written at an evaluation."""

    KIND: ClassVar[str] = "samples"

    step: int
    tokens: int
    samples: list[Sample]


@dataclass
class EventRecord:
    """A run event: "start", "resume", "interrupted"."""

    KIND: ClassVar[str] = "event"
    # left out of the line when None
    OPTIONAL: ClassVar[tuple[str, ...]] = (
        "max_steps",
        "tokens_per_step",
        "dtype",
        "compile",
        "math_attention",
    )

    event: str
    step: int
    tokens: int
    max_steps: int | None = None  # on "start" and "resume": where the run is going
    # On "start" and "resume": tokens one step trains on (all ranks), so a watcher knows the
    # run's planned length in tokens (max_steps x tokens_per_step) before it has trained.
    tokens_per_step: int | None = None
    # On "start" and "resume": how the run computes, decided once (speed.SpeedChoice) and
    # kept by every resume: the autocast dtype, torch.compile, SDPA's math kernel.
    dtype: str | None = None
    compile: bool | None = None
    math_attention: bool | None = None


@dataclass
class DivergedRecord:
    """The loss became NaN/inf (logged just before the run stops with TrainingError)."""

    KIND: ClassVar[str] = "event"

    event: str = field(default="diverged", init=False)
    step: int
    loss: float


Record = TrainRecord | EvalRecord | SamplesRecord | EventRecord | DivergedRecord


def metrics_line(record: Record) -> dict[str, Any]:
    """The metrics.jsonl object of a record: kind first, then its fields in order."""
    line = {"kind": record.KIND, **dataclasses.asdict(record)}
    for name in getattr(record, "OPTIONAL", ()):
        if line[name] is None:
            del line[name]
    return line


# -- the read side: a metrics.jsonl object back into its record ------------------------------
NUMBER_LIMIT = 1e15  # a float field beyond ±this (or not finite) is not a figure a run reports
WHOLE_LIMIT = 10**18  # whole fields (step, tokens, max_steps, val_tokens): 0 to this
_BAD = object()  # a field missing, null, of the wrong type or out of bounds
_Check = Callable[[Any], Any]  # a field's value as the record holds it, or _BAD


def parse_record(line: Mapping[str, Any]) -> Record | None:
    """The record a metrics.jsonl object holds, read field by field by its dataclass (the
    same names and types `metrics_line` wrote); None for anything else. Torch-free: a
    watcher of a run (slm-tui's Train screen) reads with it, and `plot_loss` does.

    The file may be damaged or written by someone else, so every field is checked: a float
    is a finite number within ±NUMBER_LIMIT, a whole number an int from 0 to WHOLE_LIMIT
    (never a bool), text is a str, a flag a bool, samples a list of {prompt, text}. A field
    typed `X | None` may be missing, null or bad (it reads as None); any other field must be
    there and good, or the object is no record. A "diverged" event's loss was not finite
    (json_safe wrote null): it reads back as NaN.
    """
    kind = line.get("kind")
    if kind == "event" and line.get("event") == "diverged":
        step, loss = _whole(line.get("step")), _float(line.get("loss"))
        if step is _BAD:
            return None
        return DivergedRecord(step=step, loss=math.nan if loss is _BAD else loss)
    if kind == "event":
        return _build(EventRecord, line)
    cls = _BY_KIND.get(kind) if isinstance(kind, str) else None
    return None if cls is None else _build(cls, line)


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    """`cls` from `data`, each field checked by its type; None when a required one is bad."""
    fields = _FIELDS.get(cls) or _fields(cls)
    values = {}
    for name, check, optional in fields:
        value = check(data.get(name))
        if value is _BAD:
            if not optional:
                return None
            value = None
        values[name] = value
    return cls(**values)


def _fields(cls: type) -> list[tuple[str, _Check, bool]]:
    """(name, check, may be None) for each field of a record class, from its annotations."""
    hints = typing.get_type_hints(cls)
    fields = []
    for f in (f for f in dataclasses.fields(cls) if f.init):
        hint = hints[f.name]
        args = typing.get_args(hint)  # X | None: (X, NoneType); list[Sample]: (Sample,)
        optional = type(None) in args
        kind = next(a for a in args if a is not type(None)) if optional else hint
        check = _items(args[0]) if typing.get_origin(kind) is list else _CHECKS[kind]
        fields.append((f.name, check, optional))
    _FIELDS[cls] = fields
    return fields


def _float(value: Any) -> Any:
    if type(value) is float or type(value) is int:  # never a bool; NaN fails the comparison
        return float(value) if -NUMBER_LIMIT <= value <= NUMBER_LIMIT else _BAD
    return _BAD


def _whole(value: Any) -> Any:
    return value if type(value) is int and 0 <= value <= WHOLE_LIMIT else _BAD


def _text(value: Any) -> Any:
    return value if type(value) is str else _BAD


def _flag(value: Any) -> Any:
    return value if type(value) is bool else _BAD


def _items(cls: type) -> _Check:
    """A list whose every item is a `cls` (a Sample)."""

    def check(value: Any) -> Any:
        if type(value) is not list:
            return _BAD
        items = [_build(cls, v) if isinstance(v, Mapping) else None for v in value]
        return _BAD if None in items else items

    return check


_CHECKS: dict[Any, _Check] = {float: _float, int: _whole, str: _text, bool: _flag}
_BY_KIND: dict[str, type] = {c.KIND: c for c in (TrainRecord, EvalRecord, SamplesRecord)}
_FIELDS: dict[type, list[tuple[str, _Check, bool]]] = {}  # filled on first use


class Reporter:
    """Hooks a training run calls on rank 0. Subclass and override what you need."""

    def on_message(self, text: str) -> None:
        """A one-line status: 'training tokenizer', 'resuming from step 200', ..."""

    def on_prepare(self, progress: ShardProgress) -> None:
        """Progress of shard writing before the run (from `data.prepare_shards`)."""

    def on_start(self, info: RunStart) -> None:
        """The run begins: step, max_steps, params, device, tokens_per_step, config, ..."""

    def on_log(self, record: TrainRecord) -> None:
        """Every train.log_every steps: step, tokens, loss, lr, tokens_per_s, mfu, eta_s."""

    def on_eval(self, record: EvalRecord) -> None:
        """After each evaluation: step, tokens, val_loss, val_bpb, val_tokens."""

    def on_samples(self, record: SamplesRecord) -> None:
        """Sample continuations of train.sample_prompts (when train.sample_tokens > 0)."""

    def on_save(self, path: Path, kind: str) -> None:
        """A checkpoint was written (kind: 'latest', 'best' or 'evals/step-NNNNNN')."""


class MetricsLog:
    """Append-only metrics.jsonl, kept in memory too (for the plot and checkpoint copies)."""

    def __init__(self, path: Path, records: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = list(records or [])
        self.mirror: TensorBoardLog | None = None  # train.tensorboard: each new line there too

    @classmethod
    def read(cls, path: Path) -> list[dict[str, Any]]:
        """The records of a metrics.jsonl (at most 512 MiB); lines that are not JSON objects
        (a torn last line after kill -9) are dropped."""
        records = []
        if path.is_file():
            data = read_bounded(path, METRICS_LIMIT, CheckpointError)
            for line in decode_text(data, CheckpointError, str(path)).splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    def rewrite(self) -> None:
        """Write every record held in memory (used when resuming: drop steps after the save)."""
        atomic_write_bytes(self.path, self.to_bytes(), make_parents=True)

    def to_bytes(self) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in self.records).encode("utf-8")

    def append(self, record: Record) -> None:
        line = json_safe(metrics_line(record))  # NaN/inf as null: every line parses
        self.records.append(line)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        if self.mirror is not None:
            self.mirror.write(line)


TENSORBOARD_DIR = "tensorboard"


def require_tensorboard() -> None:
    """TrainingError (one line naming the extra) when train.tensorboard cannot be honoured;
    checked before anything is written."""
    if importlib.util.find_spec("tensorboard") is None:
        raise TrainingError(
            "train.tensorboard needs the tensorboard package: pip install 'slm-tui[tensorboard]'"
            " (or set train.tensorboard=false)"
        )


class TensorBoardLog:
    """metrics.jsonl lines mirrored as TensorBoard events in `<output>/tensorboard` (x axis:
    the step): train/* and eval/* scalars, the samples as text. Imported lazily; on resume
    `purge_step` hides events logged after the checkpoint, as metrics.jsonl drops them."""

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def write(self, line: dict[str, Any]) -> None:
        kind, step = line.get("kind"), line.get("step")
        if not isinstance(step, int):
            return
        if kind in ("train", "eval"):
            for key, value in line.items():
                if key not in ("kind", "step", "tokens", "val_tokens") and _number(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
        elif kind == "samples":
            for i, sample in enumerate(line.get("samples") or []):
                text = f"**{sample.get('prompt', '')}**{sample.get('text', '')}"
                self.writer.add_text(f"samples/{i}", text, step)
        self.writer.flush()  # a record every log_every steps: cheap, and nothing is lost

    def close(self) -> None:
        self.writer.close()


def plot_loss(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Train and validation loss (nats/token) against tokens seen, written atomically.
    `records` are metrics.jsonl objects, read back through `parse_record`."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    parsed = [parse_record(r) for r in records]
    train = [
        (r.tokens, r.loss) for r in parsed if isinstance(r, TrainRecord) and r.loss is not None
    ]
    val = [(r.tokens, r.val_loss) for r in parsed if isinstance(r, EvalRecord)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if train:
            ax.plot(*zip(*train, strict=True), label="train", linewidth=1.2)
        if val:
            ax.plot(*zip(*val, strict=True), label="validation", marker="o", linewidth=1.5)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats per token)")
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if train or val:
            ax.legend()
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        plt.close(fig)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
