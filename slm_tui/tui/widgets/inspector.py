"""Tokenizer inspector: how the loaded checkpoint's tokenizer splits the prompt, as you type."""

from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.widgets import Static

SHADES = ("$primary 30%", "$secondary 30%")
MAX_SHOWN = 200  # pieces drawn; the count is always exact


def inspect_content(tokenizer: Any | None, text: str, server: str | None = None) -> Content:
    if tokenizer is None and server is not None:
        return Content.styled(f"tokenizer: on the server ({server})", "$text-muted")
    if tokenizer is None:
        return Content.styled("tokenizer: no checkpoint loaded", "$text-muted")
    if not text:
        return Content.assemble(
            ("0 tokens", "bold"),
            (f"  · {tokenizer.kind}, vocab {tokenizer.vocab_size}", "$text-muted"),
        )
    ids = tokenizer.encode(text)
    parts: list = [(f"{len(ids)} tokens ", "bold")]
    for i, token_id in enumerate(ids[:MAX_SHOWN]):
        piece = tokenizer.token_text(token_id).replace("\n", "↵")
        parts += [(piece, f"on {SHADES[i % 2]}"), (f"{token_id}", "$text-muted"), " "]
    if len(ids) > MAX_SHOWN:
        parts.append((f"… {len(ids) - MAX_SHOWN} more", "$text-muted"))
    return Content.assemble(*parts)


class TokenInspector(Static):
    """Pieces with their ids after each one, and the count; updated on every prompt edit."""

    def __init__(self, **kwargs) -> None:
        super().__init__(inspect_content(None, ""), markup=False, **kwargs)
        self.tokenizer: Any | None = None
        self.text = ""
        self.ids: list[int] = []

    def inspect(self, text: str, tokenizer: Any | None = None, server: str | None = None) -> None:
        """Tokenize `text` with `tokenizer` (kept for later calls); with `server` (a server's
        model, whose tokenizer is remote) say so instead."""
        if tokenizer is not None or server is not None:
            self.tokenizer = tokenizer
        self.text = text
        self.ids = self.tokenizer.encode(text) if (self.tokenizer and text) else []
        self.update(inspect_content(self.tokenizer, text, server))
