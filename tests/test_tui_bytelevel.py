"""The TUI on a byte-level checkpoint (the real app under `run_test`): the tokenizer inspector
and the token view show pieces readably ("▁upon", "\\n", "<0xF0>"), never in GPT-2's byte
spelling ("Ġupon", "Ċ", "ðŁ"), and a story streams whole characters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import _synthetic_stories
from test_tui import SIZE, make_app, ready, until

from slm_tui.checkpoint.io import save_checkpoint
from slm_tui.config import Config, ModelConfig
from slm_tui.model import GPT
from slm_tui.tokenizers import train_tokenizer
from slm_tui.tui.widgets.inspector import TokenInspector
from slm_tui.tui.widgets.token_view import TokenView

SPELLINGS = ("Ġ", "Ċ", "ðŁ")


@pytest.fixture(scope="module")
def bytelevel_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tui-bytelevel") / "checkpoints"
    tok = train_tokenizer("bytelevel-bpe", _synthetic_stories(400), 360, root.parent / "tok")
    cfg = Config()
    cfg.model = ModelConfig(vocab_size=tok.vocab_size, context_length=64, n_layer=2, n_head=4,
                            d_model=64)  # fmt: skip
    torch.manual_seed(0)
    save_checkpoint(root / "alpha", GPT(cfg.model), cfg, tok, {"step": 0})
    return root


async def test_inspector_and_token_view_show_byte_level_pieces_readably(bytelevel_root, tui_env):
    app = make_app(bytelevel_root)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        assert app.loaded.tokenizer.kind == "bytelevel-bpe"
        prompt = "Once upon a time 😀"
        area = app.query_one("#prompt")
        area.focus()
        await pilot.press(*"Once upon a time")
        area.insert(" 😀")  # pasted: a key press cannot carry an emoji
        inspector = app.query_one(TokenInspector)
        await until(pilot, lambda: inspector.ids == app.loaded.tokenizer.encode(prompt))
        shown = str(inspector.render())
        assert "▁upon" in shown and "<0xF0>" in shown
        assert not any(s in shown for s in SPELLINGS), shown
        await pilot.press("enter")
        await until(pilot, lambda: app.current is not None and not app.current.streaming)
        story = app.current
        assert story.num_tokens > 0
        await pilot.press("f3")
        view = app.query_one(TokenView)
        strip = str(view.query_one("#token-strip").render())
        assert strip.startswith(prompt)
        assert not any(s in strip for s in SPELLINGS), strip
        await pilot.press("home")
        detail = str(view.query_one("#token-detail").render())
        first = story.tokens[0]
        assert first.piece == app.loaded.tokenizer.token_text(first.token_id)
        assert repr(first.piece) in detail and not any(s in detail for s in SPELLINGS)
