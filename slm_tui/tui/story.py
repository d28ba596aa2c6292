"""A story as the TUI keeps it: seed sentence, continuation, tokens, settings and stats.

Plain data, no Textual and no torch, so history, export and tests can use it directly.
`Story.apply(event)` folds one engine `Event` (from the torch-free
`slm_tui.generation.events`) into the story: a "token" event adds a `TokenRecord`, the
"done" event sets the finish reason (and the error, when the engine failed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from slm_tui.generation.events import Event, TokenAlt

FINISH_LABELS = {
    "eos": "end of story",
    "stop": "stop string",
    "length": "max tokens",
    "cancelled": "cancelled",
    "error": "error",
}


REMOTE_TOKEN = -1  # the id of a token that came from a server (it sends text, not ids)


@dataclass
class TokenRecord:
    """One generated token: what it added to the text and how likely the model found it."""

    token_id: int
    text: str  # the text delta this token produced ("" while a UTF-8 character is incomplete)
    prob: float | None
    piece: str = ""  # the tokenizer's printable piece ("▁the", "<0x0A>"), for the token view
    top: tuple[TokenAlt, ...] = ()  # kept in memory only; not persisted (history stays small)
    settings_version: int = 0


@dataclass
class Story:
    """A seed sentence and everything the model wrote after it (continuations included)."""

    prompt: str
    checkpoint: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    tokens: list[TokenRecord] = field(default_factory=list)
    seed: int | None = None
    finish_reason: str | None = None
    tokens_per_s: float = 0.0
    ttft: float | None = None
    error: str | None = None  # why the engine stopped, when it failed (not persisted)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: str = field(
        default_factory=lambda: (
            datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        )
    )

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def streaming(self) -> bool:
        return self.finish_reason is None

    @property
    def title(self) -> str:
        """One line for lists: the seed sentence, shortened."""
        line = " ".join(self.prompt.split()) or "(empty seed)"
        return line if len(line) <= 60 else line[:59] + "…"

    def apply(self, event: Event) -> None:
        """Fold one engine event (token or done) into the story."""
        if event.kind == "token":
            self.tokens.append(
                TokenRecord(
                    token_id=REMOTE_TOKEN if event.token_id is None else event.token_id,
                    text=event.text,
                    prob=event.prob,
                    piece=event.piece,
                    top=event.top,
                    settings_version=event.settings_version,
                )
            )
            self.text += event.text
        else:
            # The done event may carry text the engine held back (an incomplete character).
            self.text += event.text
            self.finish_reason = event.finish_reason
            self.error = event.error
        if event.ttft is not None and self.ttft is None:
            self.ttft = event.ttft
        self.tokens_per_s = event.tokens_per_s or self.tokens_per_s
        self.seed = event.seed

    # -- persistence -------------------------------------------------------------------
    def to_dict(self, *, tokens: bool = True) -> dict[str, Any]:
        d = {
            "id": self.id,
            "created": self.created,
            "checkpoint": self.checkpoint,
            "prompt": self.prompt,
            "text": self.text,
            "seed": self.seed,
            "settings": self.settings,
            "finish_reason": self.finish_reason,
            "num_tokens": self.num_tokens,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "ttft": None if self.ttft is None else round(self.ttft, 4),
        }
        if tokens:
            # [id, text, prob, piece]: enough to redraw the token view after a restart.
            d["tokens"] = [
                [t.token_id, t.text, None if t.prob is None else round(t.prob, 5), t.piece]
                for t in self.tokens
            ]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Story:
        tokens = [
            TokenRecord(int(t[0]), str(t[1]), t[2], str(t[3]) if len(t) > 3 else "")
            for t in d.get("tokens", [])
        ]
        story = cls(
            prompt=str(d.get("prompt", "")),
            checkpoint=str(d.get("checkpoint", "")),
            settings=dict(d.get("settings") or {}),
            text=str(d.get("text", "")),
            tokens=tokens,
            seed=d.get("seed"),
            finish_reason=d.get("finish_reason") or "cancelled",
            tokens_per_s=float(d.get("tokens_per_s") or 0.0),
            ttft=d.get("ttft"),
        )
        story.id = str(d.get("id") or story.id)
        story.created = str(d.get("created") or story.created)
        return story
