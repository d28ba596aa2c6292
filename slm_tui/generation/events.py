"""What the engine gives back: a story stream's `Event`s (one per token, one "done") with their
`TokenAlt`s, and a batch's `GenerationResult`s.

Torch-free on purpose: the TUI, history and export read events without importing the
engine. Every field is set by keyword (`Event(kind="token", index=3, ...)`), so a new field
never shifts a caller's positional arguments. `Event.failed(message)` is the "done" event
of a story the engine could not finish (finish reason "error"): the TUI shows it in place
and keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass

# Why a story ended: its EOS token, a stop string, max_new_tokens, the user, or a failure.
FINISH_REASONS = ("eos", "stop", "length", "cancelled", "error")


@dataclass(kw_only=True, slots=True)
class TokenAlt:
    """One token the model considered for a position, with its probability."""

    token_id: int
    text: str  # the token's display text (`tokenizer.token_text`: "▁the", "<0x0A>")
    prob: float


@dataclass(kw_only=True, slots=True)
class Event:
    """A "token" event per generated token, then one "done" event with the finish reason.

    Read-only by convention, not `frozen`: a frozen dataclass sets each of its 14 fields
    through `object.__setattr__`, 5.6 vs 1.0 us an event here, on the per-token path of
    every row (256 rows a step on a GPU)."""

    kind: str  # "token" | "done"
    index: int  # tokens generated so far (this one included)
    seed: int | None  # the story's seed (None only when it failed before one was drawn)
    token_id: int | None = None  # the chosen token; on "done", the EOS id if it ended there
    text: str = ""  # text delta: whole UTF-8 characters only ("" while bytes are held)
    piece: str = ""  # the chosen token's display text (`tokenizer.token_text`)
    prob: float | None = None  # the chosen token's probability under the raw softmax
    top: tuple[TokenAlt, ...] = ()  # the most likely tokens, same distribution
    ttft: float | None = None  # seconds from the call to the first token
    tokens_per_s: float = 0.0  # tokens generated / seconds since the call
    elapsed: float = 0.0
    settings_version: int = 0  # LiveSettings.version the token was sampled with (0 if plain)
    finish_reason: str | None = None  # one of FINISH_REASONS, on "done"
    error: str | None = None  # what went wrong, when finish_reason is "error"

    @classmethod
    def failed(cls, message: str, *, seed: int | None = None, index: int = 0) -> Event:
        """The "done" event of a story the engine could not finish."""
        return cls(kind="done", index=index, seed=seed, finish_reason="error", error=message)


@dataclass
class GenerationResult:
    """One story of a batch (`generate_batch`, or a server's answer)."""

    prompt: str
    text: str
    token_ids: list[int]  # generated ids (EOS not included; empty from a server)
    finish_reason: str  # "eos" | "stop" | "length"
    seed: int
    num_tokens: int
    prompt_truncated: bool = False  # the prompt was longer than the context: its end was kept
