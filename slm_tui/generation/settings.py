"""Sampling settings: one frozen, validated dataclass, named presets, a thread-safe live holder.

`SamplingSettings()` holds the defaults in one place (`DEFAULTS` below is the same object).
Every constructor call validates, so an invalid value never reaches the engine: out-of-range
numbers, NaN, booleans posing as numbers and empty stop strings raise `GenerationError` with
one line naming the field. `validate(vocab_size)` adds the checks that need the model
(`top_k` larger than the vocabulary).

Defaults (temperature 0.9, top-p 0.95, min-p 0.05, repetition penalty 1.1 over 64 tokens)
are the ones that read best on the bundled demo model, chosen by `bench/sampling_demo.py`:
twelve settings each write continuations of 48 dev.txt story openings, compared with the
human continuations (surprise under the model, broken words, repeated 4-grams, variety).
min-p cuts the long tail of unlikely tokens (the source of broken words and names) in
proportion to how confident the model is, so the temperature can stay near 1 and the text
nearly as varied as human text; top-p trims what is left; a mild penalty over the last 64
tokens stops the loops ("and they played and they played") that small models fall into,
without banning the names a story keeps repeating. Lower temperatures read blander and loop
more. (Demo v1 read best at temperature 1.0 / min-p 0.1; v2, re-checked, at 0.9 / 0.05.)

`brief` (a `briefs.Brief`, or None) is what the story must contain: the engine puts its block
before the prompt (`prepare_prompt`, `briefing.brief_prompt`). It is read once, when the story
starts (like the seed): a change while a story streams applies to the next story. A dict
(the JSON brief) is taken too and becomes a `Brief`; an empty brief is None.
`brief_strength` scales the brief guide (`generation/guide.py`: sampling nudged toward the
brief's words not yet written; 1 the default, 0 off: the model alone, reading the block).

`LiveSettings` is shared between a UI and a running story: the engine reads it before every
token, so a change applies to the next token; `version` bumps on each update and is reported
in events.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import Any

from slm_tui.briefs import Brief
from slm_tui.errors import GenerationError

MAX_SEED = 2**63 - 1


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenerationError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise GenerationError(f"{name} must be a finite number, got {value}")
    return value


def _integer(name: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationError(f"{name} must be a whole number, got {value!r}")
    return value


def _in_range(
    name: str,
    value: float,
    low: float,
    high: float | None,
    hint: str,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    bad_low = value <= low if low_open else value < low
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = "∞)" if high is None else (f"{high:g})" if high_open else f"{high:g}]")
        raise GenerationError(f"{name} must be in {lo}{low:g}, {hi}, got {value:g} ({hint})")


@dataclass(frozen=True)
class SamplingSettings:
    """How the next token is chosen. Off values: top_k 0, top_p 1, min_p 0, penalty 1.

    temperature 0 means greedy decoding (argmax after the repetition penalty).
    seed None: a fresh random seed is drawn per story and reported in its events.
    ignore_eos: the end-of-story token is written like any other and the story goes on to
    max_new_tokens (a stop string still ends it).
    brief: what the story must contain (module docstring); None: nothing asked.
    brief_strength: how hard sampling is nudged toward the brief's missing words (0: off).
    """

    temperature: float = 0.9
    top_k: int = 0
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.1
    repetition_window: int = 64
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # go on past the end-of-story token (vLLM's name): for benchmarks
    brief: Brief | None = None
    brief_strength: float = 1.0

    def __post_init__(self) -> None:
        # Accept any sequence of stop strings (a list from JSON, one string) but store a tuple.
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (tuple, list)):
            raise GenerationError(f"stop must be a list of strings, got {stop!r}")
        object.__setattr__(self, "stop", tuple(stop))
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "brief_strength"):
            object.__setattr__(self, name, _number(name, getattr(self, name)))
        for name in ("top_k", "repetition_window", "max_new_tokens"):
            object.__setattr__(self, name, _integer(name, getattr(self, name)))
        if self.seed is not None:
            object.__setattr__(self, "seed", _integer("seed", self.seed))
        if not isinstance(self.ignore_eos, bool):
            raise GenerationError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        brief = self.brief
        if isinstance(brief, dict):
            brief = Brief.from_dict(brief)
        if brief is not None and not isinstance(brief, Brief):
            raise GenerationError(f"brief must be a brief object or none, got {brief!r:.60}")
        object.__setattr__(self, "brief", None if brief is None or brief.empty else brief)
        self._check()

    def _check(self) -> None:
        _in_range("temperature", self.temperature, 0.0, 100.0, "0 means greedy")
        _in_range("top_p", self.top_p, 0.0, 1.0, "1 turns it off", low_open=True)
        _in_range("min_p", self.min_p, 0.0, 1.0, "0 turns it off", high_open=True)
        _in_range(
            "repetition_penalty",
            self.repetition_penalty,
            0.0,
            100.0,
            "1 turns it off",
            low_open=True,
        )
        _in_range("brief_strength", self.brief_strength, 0.0, 10.0, "0 turns the guide off")
        _in_range("top_k", self.top_k, 0, None, "0 turns it off")
        _in_range("repetition_window", self.repetition_window, 0, None, "0 turns it off")
        _in_range("max_new_tokens", self.max_new_tokens, 1, None, "at least one token")
        if self.seed is not None:
            _in_range("seed", self.seed, 0, MAX_SEED, "or leave it unset for a random one")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise GenerationError(f"stop strings must be non-empty text, got {s!r}")

    def validate(self, vocab_size: int | None = None) -> SamplingSettings:
        """Check the settings against a model; return self. Raises `GenerationError`."""
        self._check()
        if vocab_size is not None and self.top_k > vocab_size:
            raise GenerationError(
                f"top_k {self.top_k} is larger than the vocabulary ({vocab_size} tokens); "
                "use at most that, or 0 to turn it off"
            )
        return self

    def replace(self, **changes: Any) -> SamplingSettings:
        """A validated copy with `changes` applied; unknown names are a `GenerationError`."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise GenerationError(
                f"unknown sampling setting {', '.join(unknown)}; valid: {', '.join(SETTING_NAMES)}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (stop as a list, the brief as its JSON object or None)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["stop"] = list(self.stop)
        d["brief"] = self.brief.to_dict() if self.brief is not None else None
        return d

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(SamplingSettings))
DEFAULTS = SamplingSettings()

# Named starting points (the TUI's preset picker, `--preset` style flags): field changes
# applied to the defaults. "balanced" is the defaults themselves.
PRESETS: dict[str, dict[str, Any]] = {
    "greedy": {
        "temperature": 0.0,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.0,
        "repetition_penalty": 1.1,
    },
    "balanced": {
        "temperature": DEFAULTS.temperature,
        "top_k": DEFAULTS.top_k,
        "top_p": DEFAULTS.top_p,
        "min_p": DEFAULTS.min_p,
        "repetition_penalty": DEFAULTS.repetition_penalty,
    },
    "wild": {
        "temperature": 1.2,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.02,
        "repetition_penalty": 1.05,
    },
}


def preset(name: str, base: SamplingSettings | None = None) -> SamplingSettings:
    """`base` (default: the defaults) with the named preset applied."""
    if name not in PRESETS:
        raise GenerationError(f"unknown sampling preset {name!r}; presets: {', '.join(PRESETS)}")
    return (base or DEFAULTS).replace(**PRESETS[name])


class LiveSettings:
    """Thread-safe holder of the settings a running story reads before every token."""

    def __init__(self, settings: SamplingSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._settings = settings if settings is not None else DEFAULTS
        self._version = 0

    def snapshot(self) -> tuple[SamplingSettings, int]:
        """(settings, version) read together, so the version matches the settings."""
        with self._lock:
            return self._settings, self._version

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def update(self, **changes: Any) -> SamplingSettings:
        """Apply validated changes (a `GenerationError` leaves the settings as they were)."""
        with self._lock:
            self._settings = self._settings.replace(**changes)
            self._version += 1
            return self._settings

    def set(self, settings: SamplingSettings) -> SamplingSettings:
        """Replace the settings wholesale (e.g. a preset)."""
        with self._lock:
            self._settings = settings
            self._version += 1
            return settings
