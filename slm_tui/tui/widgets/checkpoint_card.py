"""The loaded checkpoint in the side panel: its name and the numbers that say what it is."""

from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.widgets import Static


def human(n: float | int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def info_lines(info: Any) -> list[tuple[str, str]]:
    """(label, value) pairs for a CheckpointInfo, shared by the card and the picker: the
    recorded held-out figures first, each with its corpus; the in-run one labelled so."""
    bpb = "—" if info.val_bpb is None else f"{info.val_bpb:.3f}"
    held_out = [(f"bits/byte on {e.name}", f"{e.bpb:.3f}") for e in info.evaluations]
    return [
        ("params", human(info.params)),
        ("steps", str(info.step)),
        ("tokens seen", human(info.tokens_seen)),
        *held_out,
        ("val bits/byte (in-run)", bpb),
        ("tokenizer", f"{info.tokenizer_kind} · {info.vocab_size}"),
        ("shape", f"{info.n_layer} layers × {info.d_model} · ctx {info.context_length}"),
        ("date", (info.created or "")[:16].replace("T", " ")),
    ]


class CheckpointCard(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.border_title = "checkpoint (F2)"
        self.show(None)

    def show(self, info: Any | None, device: str = "", *, remote: bool = False) -> None:
        """The checkpoint's name, device and figures; a server's model (`remote`): its name
        and the server, which says nothing more of it."""
        if info is None:
            self.update(Content.styled("none loaded", "$text-muted"))
            return
        parts: list = [(info.name, "bold $text-accent"), (f"  {device}", "$text-muted"), "\n"]
        if remote:
            parts.append(("a model on the server: stories come from there", "$text-muted"))
            self.update(Content.assemble(*parts))
            return
        quality = info.quality()  # held-out figures with their corpus, else "... in-run"
        parts.append((f"{human(info.params)} params · step {info.step}", "$text-muted"))
        if quality:
            parts.extend(["\n", (quality, "$text-muted")])
        self.update(Content.assemble(*parts))
