"""GPT-Neo (the TinyStories paper's models) and GPT-2-tokenizer models, judged by transformers.

A small random `GPTNeoForCausalLM` made by transformers itself (alternating global and
local layers, a window shorter than the test text, biases, learned positions, the tanh
GELU, unscaled attention), with a tokenizer saved by transformers' `GPT2TokenizerFast`:
a byte-level BPE trained here, and GPT-2's own vocabulary when ../shared/data/gpt2 holds it.
`slm-train import` turns it into a checkpoint whose logits are within 1e-4 of transformers'
and whose greedy continuations are identical; slm-generate opens it; `export --format hf`
gives back a GPT-Neo folder that transformers runs as the original. GPT-2 models with GPT-2's
own `gelu_new` import too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import _synthetic_stories
from test_gpt2_kinds import HOSTILE, encoder_path
from typer.testing import CliRunner

from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.cli.train import app
from slm_tui.generation import SamplingSettings, generate_batch
from slm_tui.tokenizers import train_tokenizer
from slm_tui.tokenizers.bytemap import derive_merges, merges_text

transformers = pytest.importorskip("transformers")

TEXT = (
    "Once upon a time, there was a little girl named Lily. She loved to play with her big red "
    "ball in the park. One day, she saw a dog."
)
GREEDY = SamplingSettings(temperature=0.0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                          max_new_tokens=24)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def transformers_tokenizer(kind: str, root: Path):
    """A GPT2TokenizerFast from vocab.json + merges.txt: GPT-2's (from encoder.json), or a
    byte-level BPE trained here with specials <pad> <unk> <bos> <eos>."""
    slow = root / f"slow-{kind}"
    slow.mkdir()
    if kind == "gpt2":
        encoder = encoder_path()
        if encoder is None:
            pytest.skip("GPT-2's encoder.json not found (../shared/data/gpt2)")
        tok = train_tokenizer("gpt2", [], 50257, root / "gpt2", vocab_file=encoder)
        shutil.copy(encoder, slow / "vocab.json")
        (slow / "merges.txt").write_text(merges_text(derive_merges(tok.ranks)))
        return transformers.GPT2TokenizerFast.from_pretrained(str(slow)), 50256, 50256
    tok = train_tokenizer("bytelevel-bpe", _synthetic_stories(400), 360, root / "bl")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tok.path / name, slow / name)
    names = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>"}
    return transformers.GPT2TokenizerFast.from_pretrained(str(slow), **names), 2, 3


def random_model(model, scale: float = 0.15, seed: int = 3):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


@pytest.fixture(scope="module", params=["bytelevel-bpe", "gpt2"])
def neo(request, tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("neo")
    tok, bos, eos = transformers_tokenizer(request.param, root)
    folder = root / "neo"
    tok.save_pretrained(str(folder))
    config = transformers.GPTNeoConfig(
        vocab_size=len(tok), max_position_embeddings=128, hidden_size=32, num_layers=4,
        attention_types=[[["global", "local"], 2]], num_heads=4, window_size=5,
        bos_token_id=bos, eos_token_id=eos, resid_dropout=0.0, embed_dropout=0.0,
        attention_dropout=0.0,
    )  # fmt: skip
    random_model(transformers.GPTNeoForCausalLM(config)).save_pretrained(str(folder))
    return folder, request.param


def hf_model(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(str(folder)).float().eval()


def logits_diff(ours, theirs, ids: list[int]) -> float:
    x = torch.tensor([ids])
    with torch.no_grad():
        return float((ours(x)[0] - theirs(x).logits.float()).abs().max())


def hf_greedy(model, ids: list[int], eos: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=24,
                             repetition_penalty=1.0, pad_token_id=eos)  # fmt: skip
    new = out[0, len(ids) :].tolist()
    return new[: new.index(eos)] if eos in new else new


def test_a_transformers_gpt_neo_imports_runs_and_exports_back(neo, tmp_path):
    folder, kind = neo
    dest = tmp_path / "ckpts" / "neo"
    res = invoke("import", "--from", "hf", folder, "--output", dest)
    assert res.exit_code == 0, res.output
    ours, theirs = load_checkpoint(dest), hf_model(folder)
    cfg, tok = ours.model.cfg, ours.tokenizer
    assert tok.kind == kind
    assert (cfg.mlp, cfg.scale_attention, cfg.attention_windows) == (
        "gelu_tanh",
        False,
        [0, 5, 0, 5],
    )
    assert (cfg.positions, cfg.norm, cfg.bias) == ("learned", "layernorm", True)
    # The model: 1e-4 on a text longer than the local window, the same greedy story.
    ids = [tok.bos_id, *tok.encode(TEXT)]
    assert len(ids) > 20 and logits_diff(ours.model, theirs, ids) < 1e-4
    for prompt in ("Once upon a time", "Lily saw a big dog. The dog"):
        result = generate_batch(ours.model, tok, [prompt], GREEDY)[0]
        assert hf_greedy(theirs, [tok.bos_id, *tok.encode(prompt)], tok.eos_id) == result.token_ids
    # The tokenizer: AutoTokenizer's ids on hostile text (special names are text for us).
    auto = transformers.AutoTokenizer.from_pretrained(str(folder))
    for text in HOSTILE:
        assert auto(text, split_special_tokens=True, add_special_tokens=False)["input_ids"] == (
            tok.encode(text)
        ), text[:40]
    # slm-generate opens it like any checkpoint.
    from slm_tui.cli.generate import app as generate_app

    gen = CliRunner().invoke(generate_app, ["--checkpoint", str(dest), "--prompt", "Once",
                                            "--max-new-tokens", "5", "--seed", "1"])  # fmt: skip
    assert gen.exit_code == 0 and gen.stdout.startswith("Once"), gen.output
    # Export back: a GPTNeoForCausalLM transformers runs as the original, the same tokenizer.
    back = tmp_path / "back"
    res = invoke("export", "--checkpoint", dest, "--output", back, "--format", "hf")
    assert res.exit_code == 0, res.output
    again = hf_model(back)
    assert type(again).__name__ == "GPTNeoForCausalLM"
    assert again.config.attention_layers == theirs.config.attention_layers
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(again(x).logits, theirs(x).logits, atol=1e-5)
    retok = transformers.AutoTokenizer.from_pretrained(str(back))
    for text in HOSTILE[:12]:
        assert retok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert retok(TEXT)["input_ids"] == ids  # BOS added, as our prompts are BOS + text
    # ... and imports again as the same checkpoint.
    assert invoke("import", "--from", "hf", back, "--output", tmp_path / "again").exit_code == 0
    twice = load_checkpoint(tmp_path / "again")
    assert twice.tokenizer.fingerprint == tok.fingerprint and twice.model.cfg == cfg
    sa, sb = ours.model.state_dict(), twice.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_gguf_refuses_gpt_neo_in_one_line(neo, tmp_path):
    folder, _ = neo
    assert invoke("import", "--from", "hf", folder, "--output", tmp_path / "n").exit_code == 0
    res = invoke("export", "--checkpoint", tmp_path / "n", "--output", tmp_path / "n.gguf",
                 "--format", "gguf")  # fmt: skip
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "GGUF export is for the default (Llama) blocks" in res.stderr
    assert not (tmp_path / "n.gguf").exists()


def test_a_gpt2_model_with_gelu_new_imports(tmp_path):
    """GPT-2's own activation (`gelu_new`, the tanh GELU) is `mlp: gelu_tanh` now."""
    root = tmp_path / "gpt2-model"
    tok, bos, eos = transformers_tokenizer("bytelevel-bpe", tmp_path)
    tok.save_pretrained(str(root))
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2,
                                     n_head=4, bos_token_id=bos, eos_token_id=eos)  # fmt: skip
    assert config.activation_function == "gelu_new"
    random_model(transformers.GPT2LMHeadModel(config)).save_pretrained(str(root))
    assert invoke("import", "--from", "hf", root, "--output", tmp_path / "ours").exit_code == 0
    ours = load_checkpoint(tmp_path / "ours")
    assert ours.model.cfg.mlp == "gelu_tanh" and ours.model.cfg.scale_attention
    ids = [bos, *ours.tokenizer.encode(TEXT)]
    assert logits_diff(ours.model, hf_model(root), ids) < 1e-4
    back = tmp_path / "back"
    assert invoke("export", "--checkpoint", tmp_path / "ours", "--output", back, "--format",
                  "hf").exit_code == 0  # fmt: skip
    assert json.loads((back / "config.json").read_text())["activation_function"] == "gelu_new"
    assert logits_diff(ours.model, hf_model(back), ids) < 1e-4


GPT_NEO_REFUSALS = {
    "attention type": ({"attention_types": [[["global", "sparse"], 2]]}, "'sparse'"),
    "attention types shape": ({"attention_types": [["global", 2]]}, "attention_types"),
    "layer count": ({"attention_types": [[["global"], 3]]}, "gives 3 layers"),
    "activation": ({"activation_function": "relu"}, "'relu'"),
    "norm epsilon": ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
}


@pytest.mark.parametrize("neo", ["bytelevel-bpe"], indirect=True)  # one tokenizer is enough
@pytest.mark.parametrize("case", GPT_NEO_REFUSALS)
def test_gpt_neo_refusals(case, neo, tmp_path):
    folder, _kind = neo
    changes, needle = GPT_NEO_REFUSALS[case]
    copy = tmp_path / "neo"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(changes)
    (copy / "config.json").write_text(json.dumps(config))
    res = invoke("import", "--from", "hf", copy, "--output", tmp_path / "out")
    assert res.exit_code == 2 and needle in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
