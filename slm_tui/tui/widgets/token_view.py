"""The story drawn token by token: visible boundaries, coloured by the model's probability.

Each token's background comes from the probability the model gave the token it chose
(red: unlikely, green: near certain); neighbours alternate between two shades so a
boundary is visible even between equally likely tokens. Left/Right (or a click) select a
token; the detail line below shows its id, text, piece and the top alternatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.style import Style
from textual.widgets import Static

from slm_tui.tui.story import Story, TokenRecord
from slm_tui.tui.widgets.story_view import visible

# Probability → background, low to high; the legend shows the same bins.
BINS = ((0.1, "#b23a48"), (0.3, "#d9822b"), (0.6, "#c9b53a"), (0.85, "#6aa84f"), (1.01, "#2e8b57"))
UNKNOWN = "#666666"
FOREGROUND = Color.parse("#101010")


def prob_color(prob: float | None) -> Color:
    if prob is None:
        return Color.parse(UNKNOWN)
    for upper, colour in BINS:
        if prob < upper:
            return Color.parse(colour)
    return Color.parse(BINS[-1][1])


def display_text(token: TokenRecord) -> str:
    """What a token shows: its text, or its piece while it only holds part of a character."""
    text = token.text if token.text else (token.piece or f"<{token.token_id}>")
    return visible(text.replace("\n", "↵\n"))


def tokens_content(story: Story | None, selected: int) -> Content:
    if story is None:
        return Content.styled("No story yet.", "$text-muted")
    parts: list = [(visible(story.prompt), "bold $text-accent")]
    for i, token in enumerate(story.tokens):
        bg = prob_color(token.prob)
        if i % 2:
            bg = bg.darken(0.12)
        style = Style(background=bg, foreground=FOREGROUND) + Style.from_meta({"token": i})
        if i == selected:
            style = style + Style(reverse=True, bold=True)
        parts.append((display_text(token), style))
    return Content.assemble(*parts)


def token_detail(story: Story | None, index: int) -> Content:
    if story is None or not story.tokens:
        return Content.styled(
            "Select a token (←/→ or click) to see its alternatives.", "$text-muted"
        )
    if not 0 <= index < len(story.tokens):
        return Content.styled(
            f"{len(story.tokens)} tokens · ←/→ or click to select one", "$text-muted"
        )
    t = story.tokens[index]
    prob = "?" if t.prob is None else f"{t.prob:.3f}"
    remote = t.token_id < 0  # a server's token: it sends text, not ids
    parts: list = [
        (f"#{index + 1} ", "bold"),
        ("id ", "$text-muted"),
        "— (server)  " if remote else f"{t.token_id}  ",
        ("text ", "$text-muted"),
        f"{t.text!r}  ",
        ("piece ", "$text-muted"),
        f"{t.piece!r}  ",
        ("p ", "$text-muted"),
        (prob, "bold"),
        "\n",
    ]
    if t.top:
        parts.append(("alternatives: ", "$text-muted"))
        for n, alt in enumerate(t.top):
            chosen = alt.text == t.piece if remote else alt.token_id == t.token_id
            mark = "bold $text-accent" if chosen else ""
            parts += [("  " if n else "", ""), (f"{alt.text!r} {alt.prob:.3f}", mark)]
    elif remote:
        parts.append(("(the server returned no probabilities for this token)", "$text-muted"))
    else:
        parts.append(("(alternatives are kept for this session's stories only)", "$text-muted"))
    return Content.assemble(*parts)


class TokenStrip(Static):
    """The coloured tokens; clicks report which token was hit."""

    def on_click(self, event: events.Click) -> None:
        index = event.style.meta.get("token")
        if index is not None:
            self.post_message(TokenView.Selected(int(index)))


class TokenView(Vertical):
    """Token strip above, detail of the selected token below."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(-1)", "previous token", show=False),
        Binding("right", "move(1)", "next token", show=False),
        Binding("home", "move_to(0)", show=False),
        Binding("end", "move_to(-1)", show=False),
    ]
    can_focus = True
    selected: reactive[int] = reactive(-1, init=False)

    @dataclass
    class Selected(Message):
        index: int

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.story: Story | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="token-scroll"):
            yield TokenStrip(tokens_content(None, -1), id="token-strip", markup=False)
        yield Static(token_detail(None, -1), id="token-detail", markup=False)

    def on_mount(self) -> None:
        self.query_one("#token-scroll").anchor()

    def show(self, story: Story | None) -> None:
        if story is not self.story:
            self.selected = -1
        self.story = story
        self.redraw()

    def redraw(self) -> None:
        if not self.display:
            return  # drawing thousands of spans nobody sees would cost the stream frames
        self.query_one("#token-strip", Static).update(tokens_content(self.story, self.selected))
        self.query_one("#token-detail", Static).update(token_detail(self.story, self.selected))

    def watch_selected(self) -> None:
        self.redraw()

    def on_token_view_selected(self, event: Selected) -> None:
        self.selected = event.index
        self.focus()

    def action_move(self, delta: int) -> None:
        if self.story is None or not self.story.tokens:
            return
        n = len(self.story.tokens)
        start = n if self.selected < 0 and delta < 0 else self.selected
        self.selected = max(0, min(n - 1, start + delta))

    def action_move_to(self, index: int) -> None:
        if self.story is not None and self.story.tokens:
            self.selected = index % len(self.story.tokens)
