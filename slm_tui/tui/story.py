"""A story as the TUI keeps it: seed sentence, continuation, tokens, settings and stats.

Plain data, no Textual and no torch, so history, export and tests can use it directly.
`Story.apply(event)` folds one engine `Event` (from the torch-free
`slm_tui.generation.events`) into the story: a "token" event adds a `TokenRecord`, the
"done" event sets the finish reason (and the error, when the engine failed).

`settings` are the sampling settings the story started with (its brief too: `brief`
reads it back, None when a stored one is damaged); `changes` records every
change made after that, each with the first token it applied to (`record_change`), so an
export says which settings wrote which tokens. What is stored is bounded: `to_dict(limit=)`
keeps at most `limit` characters of text (and the tokens that wrote them) and says so
(`truncated`), so one story a server flooded cannot write a line of hundreds of MB.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from slm_tui.briefs import Brief
from slm_tui.generation.events import Event, TokenAlt
from slm_tui.tui.brief import brief_text, stored_brief

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
    # Sampling changes after the start: {"from_token": first token using it, "settings": {...}}
    changes: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False  # the text was cut to what history stores
    name: str = ""  # the user's title for it (history's rename); "" until renamed
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
    def brief(self) -> Brief | None:
        """What the story was asked to contain (the brief it started with), if anything."""
        return stored_brief(self.settings)

    @property
    def title(self) -> str:
        """One line for lists: the seed sentence (a story from a brief alone: the brief),
        shortened."""
        line = " ".join(self.prompt.split())
        if not line:
            brief = self.brief
            line = f"[{brief_text(brief)}]" if brief is not None else "(empty seed)"
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

    def record_change(self, from_token: int, changes: dict[str, Any]) -> None:
        """Sampling settings changed; `from_token` (1-based) is the first token using them."""
        if changes:
            self.changes.append({"from_token": int(from_token), "settings": dict(changes)})

    def settings_at_end(self) -> dict[str, Any]:
        """The settings the last token was written with (the start's, then each change)."""
        settings = dict(self.settings)
        for change in self.changes:
            settings.update(change["settings"])
        return settings

    # -- persistence -------------------------------------------------------------------
    def to_dict(self, *, tokens: bool = True, limit: int | None = None) -> dict[str, Any]:
        """The story as JSON data; `limit`: at most that many characters of text (and of
        token text), cut at a token's end, with `truncated` set."""
        text, kept = self.text, self.tokens
        truncated = self.truncated
        if limit is not None and (len(text) > limit or len(self.prompt) > limit):
            truncated, used, n = True, 0, 0
            for t in self.tokens:
                used += len(t.text) + len(t.piece)
                if used > limit:
                    break
                n += 1
            text, kept = text[:limit], self.tokens[:n]
        d: dict[str, Any] = {
            "id": self.id,
            "created": self.created,
            "checkpoint": self.checkpoint,
            "prompt": self.prompt if limit is None else self.prompt[:limit],
            "text": text,
            "seed": self.seed,
            "settings": self.settings,
            "settings_changes": self.changes,
            "finish_reason": self.finish_reason,
            "num_tokens": self.num_tokens,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "ttft": None if self.ttft is None else round(self.ttft, 4),
        }
        if truncated:
            d["truncated"] = True
        if self.name:
            d["name"] = self.name
        if tokens:
            # [id, text, prob, piece]: enough to redraw the token view after a restart.
            d["tokens"] = [
                [t.token_id, t.text, None if t.prob is None else round(t.prob, 5), t.piece]
                for t in kept
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
            changes=_changes(d.get("settings_changes")),
            truncated=d.get("truncated") is True,
            name=str(d.get("name") or ""),
        )
        story.id = str(d.get("id") or story.id)
        story.created = str(d.get("created") or story.created)
        return story


def _changes(value: Any) -> list[dict[str, Any]]:
    """The recorded sampling changes of a stored story (entries of another shape dropped)."""
    if not isinstance(value, list):
        return []
    return [
        {"from_token": c["from_token"], "settings": dict(c["settings"])}
        for c in value
        if isinstance(c, dict)
        and isinstance(c.get("from_token"), int)
        and isinstance(c.get("settings"), dict)
    ]
