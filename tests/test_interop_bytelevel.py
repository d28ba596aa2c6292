"""Byte-level tokenizers (`gpt2`, `bytelevel-bpe`) through every export, judged by the library
each targets.

- `--format hf`: transformers' `AutoTokenizer` gives our ids on the hostile corpus (BOS added
  by `tok(text)`, none with `add_special_tokens=False`), decodes them back, and
  `AutoModelForCausalLM` runs the model as we do (Llama blocks, and GPT-2 blocks with GPT-2's
  tokenizer: the seed notebook's model); export -> import gives back the same checkpoint.
- `--format gguf`: read back with `gguf.GGUFReader`: llama.cpp's `gpt2` tokenizer model, its
  `gpt-2` pre-tokenizer, our pieces and merges (for GPT-2's vocabulary, OpenAI's vocab.bpe
  byte for byte), and an independent GPT-2 BPE (OpenAI's encoder.py algorithm over the GGUF
  fields alone) segments text as we do. llama.cpp itself judges when `llama_cpp` imports.
"""

from __future__ import annotations

import hashlib

import pytest
import regex
import torch
from conftest import _synthetic_stories
from test_gpt2_kinds import HOSTILE, VOCAB_BPE_SHA256, encoder_path
from test_interop import (
    _assert_same_checkpoint,
    hf_greedy,
    hf_model,
    hf_tokenizer,
    invoke,
    max_logit_diff,
    scaled_checkpoint,
)

from slm_tui.checkpoint.io import load_checkpoint
from slm_tui.generation import SamplingSettings, generate_batch
from slm_tui.tokenizers import train_tokenizer
from slm_tui.tokenizers.bytemap import BYTE_TO_CHAR

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

# OpenAI's GPT-2 encoder.py pattern (tiktoken spells it differently; llama.cpp has its own).
GPT2_SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
PROMPTS = ["Once upon a time", "The little dog saw a big red ball.\nShe", "Lily and Tom"]
GREEDY = SamplingSettings(temperature=0.0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                          max_new_tokens=24)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["bytelevel-bpe", "gpt2"])
def tok(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "tok"
    if request.param == "gpt2":
        if encoder_path() is None:
            pytest.skip("GPT-2's encoder.json not found (../shared/data/gpt2)")
        return train_tokenizer("gpt2", [], 50257, out, vocab_file=encoder_path())
    return train_tokenizer("bytelevel-bpe", _synthetic_stories(400), 360, out)


@pytest.fixture(scope="module")
def llama_ckpt(tok, tmp_path_factory):
    """Llama blocks (the default model) with a byte-level tokenizer."""
    return scaled_checkpoint(tmp_path_factory.mktemp("llama") / "ckpt", tok)


def test_hf_export_is_read_by_autotokenizer_and_automodel_as_ours(tok, llama_ckpt, tmp_path):
    hf = tmp_path / "hf"
    res = invoke("export", "--checkpoint", llama_ckpt, "--output", hf, "--format", "hf")
    assert res.exit_code == 0, res.output
    assert {"tokenizer.json", "vocab.json", "merges.txt"} <= {p.name for p in hf.iterdir()}
    theirs = hf_tokenizer(hf)
    for text in HOSTILE:
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ids == tok.encode(text), text[:40]
        assert theirs.decode(ids) == text, text[:40]
    assert theirs(PROMPTS[0])["input_ids"] == [tok.bos_id, *tok.encode(PROMPTS[0])]
    ours, model = load_checkpoint(llama_ckpt), hf_model(hf)
    for prompt, result in zip(
        PROMPTS, generate_batch(ours.model, tok, PROMPTS, GREEDY), strict=True
    ):
        ids = theirs(prompt)["input_ids"]
        assert max_logit_diff(ours.model, model, ids) < 1e-4
        assert hf_greedy(model, ids, 24, tok.eos_id) == result.token_ids
        assert theirs.decode(result.token_ids, skip_special_tokens=True) == result.text
    back = tmp_path / "back"
    assert invoke("import", "--from", "hf", hf, "--output", back).exit_code == 0
    _assert_same_checkpoint(llama_ckpt, back)


def test_seed_notebook_model_exports_to_gpt2_with_gpt2s_tokenizer(tmp_path):
    """The seed notebook's model (GPT-2 blocks, the gpt2 kind) as transformers' GPT2LMHeadModel
    with GPT-2's tokenizer: what a transformers user would load the seed's model as."""
    if encoder_path() is None:
        pytest.skip("GPT-2's encoder.json not found (../shared/data/gpt2)")
    tok = train_tokenizer("gpt2", [], 50257, tmp_path / "tok", vocab_file=encoder_path())
    ckpt = scaled_checkpoint(tmp_path / "ckpt", tok, positions="learned", norm="layernorm",
                             mlp="gelu", bias=True, dropout=0.1, d_model=32)  # fmt: skip
    hf = tmp_path / "hf"
    assert invoke("export", "--checkpoint", ckpt, "--output", hf, "--format", "hf").exit_code == 0
    model, theirs = hf_model(hf), hf_tokenizer(hf)
    assert type(model).__name__ == "GPT2LMHeadModel"
    ids = theirs("Once upon a time")["input_ids"]
    assert ids == [50256, 7454, 2402, 257, 640]
    assert max_logit_diff(load_checkpoint(ckpt).model, model, ids) < 1e-4
    assert invoke("import", "--from", "hf", hf, "--output", tmp_path / "back").exit_code == 0
    _assert_same_checkpoint(ckpt, tmp_path / "back")


# ---- GGUF -----------------------------------------------------------------------------------
def gpt2_bpe(text: str, tokens: list[str], merges: list[str]) -> list[int]:
    """OpenAI's GPT-2 `Encoder.bpe` over the GGUF fields: split with GPT-2's pattern, spell
    each piece's bytes with the byte table, merge the lowest-ranked pair (every occurrence,
    left to right) until none is left."""
    index = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    out: list[int] = []
    for piece in GPT2_SPLIT.findall(text):
        word = [BYTE_TO_CHAR[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out.extend(index[w] for w in word)
    return out


def test_gguf_holds_llama_cpps_gpt2_tokenizer(tok, llama_ckpt, tmp_path):
    dest = tmp_path / "m.gguf"
    res = invoke("export", "--checkpoint", llama_ckpt, "--output", dest, "--format", "gguf",
                 "--dtype", "q8_0")  # fmt: skip
    assert res.exit_code == 0, res.output
    reader = gguf.GGUFReader(dest)
    meta = {k: f.contents() for k, f in reader.fields.items()}
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (
        tok.bos_id, tok.eos_id)  # fmt: skip
    assert meta["tokenizer.ggml.add_bos_token"] is True
    tokens, merges = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"]
    types = meta["tokenizer.ggml.token_type"]
    assert len(tokens) == tok.vocab_size == len(types)
    specials = {tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id} - {-1}
    assert [i for i, t in enumerate(types) if t == 3] == sorted(specials)  # CONTROL
    assert all(t == 1 for i, t in enumerate(types) if i not in specials)  # NORMAL
    if tok.kind == "gpt2":  # the merges are OpenAI's vocab.bpe, byte for byte
        text = "#version: 0.2\n" + "\n".join(merges) + "\n"
        assert hashlib.sha256(text.encode()).hexdigest() == VOCAB_BPE_SHA256
    for text in HOSTILE:
        if len(text) <= 600:  # the reference BPE is quadratic in a piece's length
            assert gpt2_bpe(text, tokens, merges) == tok.encode(text), text[:40]
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert embd.tensor_type.name == "Q8_0" and [int(n) for n in embd.shape] == [64, tok.vocab_size]


def test_llama_cpp_runs_the_gguf_as_we_do(tok, llama_ckpt, tmp_path):
    """llama.cpp itself (llama-cpp-python, when installed: it builds llama.cpp from source):
    its tokenizer gives our ids; the f32 file's logits are ours within 1e-4 (f32 KV cache)
    and its greedy continuation is ours."""
    llama_cpp = pytest.importorskip("llama_cpp")
    dest = tmp_path / "m.gguf"
    assert invoke("export", "--checkpoint", llama_ckpt, "--output", dest, "--format",
                  "gguf").exit_code == 0  # fmt: skip
    llm = llama_cpp.Llama(model_path=str(dest), n_ctx=64, n_batch=64, n_threads=1,
                          logits_all=True, verbose=False, type_k=llama_cpp.GGML_TYPE_F32,
                          type_v=llama_cpp.GGML_TYPE_F32)  # fmt: skip
    for text in HOSTILE:
        if text:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)
    ours = load_checkpoint(llama_ckpt)
    ids = [tok.bos_id, *tok.encode(PROMPTS[1])]
    llm.reset()
    llm.eval(ids)
    theirs = torch.from_numpy(llm.scores[: len(ids)].copy()).float()
    with torch.no_grad():
        mine = ours.model(torch.tensor([ids]))[0][0]
    assert float((mine - theirs).abs().max()) < 1e-4
    # Greedy through llama.cpp's own decode, one token per eval, against our engine.
    result = generate_batch(ours.model, tok, [PROMPTS[1]], GREEDY)[0]
    cont: list[int] = []
    while len(cont) < GREEDY.max_new_tokens:
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        if token == tok.eos_id:
            break
        cont.append(token)
        llm.eval([token])
    assert cont == result.token_ids
