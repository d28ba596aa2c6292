"""One model handle (slm_tui/handle.py): a local checkpoint and a model on a real slm-serve
answer the same questions and write the same stories; the TUI's compare screen runs on a
server model (F8, then Enter); the module imports no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slm_tui.generation import SamplingSettings
from slm_tui.handle import LocalModel, ModelHandle, ServerModel
from tests.test_serve import MODEL, NO_EOS, Running

SETTINGS = SamplingSettings(max_new_tokens=12, seed=5, **NO_EOS)


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    running = Running(tiny_checkpoint, max_batch=8, max_tokens_cap=1000)
    yield running
    running.close()


def test_a_local_and_a_server_handle_write_the_same_stories(tiny_checkpoint, served):
    local: ModelHandle = LocalModel.load(tiny_checkpoint, "cpu")
    remote: ModelHandle = ServerModel.connect(served.url)  # its first (only) model
    assert remote.identity == MODEL and remote.info.name == MODEL
    assert local.vocab_size == local.tokenizer.vocab_size and local.context_length == 64
    assert (remote.vocab_size, remote.context_length, remote.tokenizer) == (None, None, None)
    assert remote.location.startswith(served.url) and local.location == "cpu"
    prompts = ["Once upon a time", "The dog"]
    mine = local.generate_batch(prompts, SETTINGS, 2, seeds=[5, 6])
    theirs = remote.generate_batch(prompts, SETTINGS, 2, seeds=[5, 6])
    assert [r.text for r in mine] == [r.text for r in theirs]
    assert [r.num_tokens for r in theirs] == [12, 12]
    streamed = "".join(e.text for e in remote.stream("Once upon a time", SETTINGS))
    assert streamed == "".join(e.text for e in local.stream("Once upon a time", SETTINGS))
    assert streamed == mine[0].text


async def test_compare_opens_on_a_real_server_and_writes_both_sides(served, tui_env):
    """Under `slm-tui --server`, F8 then Enter read the vocabulary of a model that has no
    tokenizer here (a crash found by reading); now both sides write."""
    from slm_tui.tui.app import SlmApp
    from slm_tui.tui.screens.compare import CompareScreen
    from tests.test_tui import until

    app = SlmApp(server=served.url, rescan=False, demo=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.loaded is not None)
        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        seed_input = screen.query_one("#compare-seed")
        seed_input.focus()
        await pilot.press(*"Once", "enter")
        await until(pilot, lambda: len(screen.stories) == 2)
        await until(pilot, lambda: not any(s.streaming for s in screen.stories.values()))
        assert all(s.finish_reason != "error" for s in screen.stories.values())
        assert all(s.checkpoint == MODEL for s in screen.stories.values())


def test_the_handle_module_imports_no_torch():
    code = "import sys, slm_tui.handle; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
