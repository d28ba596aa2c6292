"""bench/_llama2c.py: our Hugging Face export as llama2.c's legacy model.bin and tokenizer.bin.

Judged by what run.c reads: the 7-int header and the byte count of each weight block
(vocab_size negative for an untied head, n_kv_heads for grouped-query attention), the
tokenizer pieces at the ids run.c hard-codes (BOS 1, bytes at 3 + b), and the q/k rows under
run.c's interleaved RoPE giving the attention scores ours gives. With llama2.c's source at
hand ($SLM_LLAMA2C: its run.c or a checkout; skipped otherwise) run.c itself is built and
must write our greedy text byte for byte.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from slm_tui.checkpoint.io import load_checkpoint, save_checkpoint
from slm_tui.cli.train import app
from slm_tui.config import Config, ModelConfig
from slm_tui.generation import SamplingSettings, generate_batch
from slm_tui.model import GPT, apply_rotary, mlp_hidden_size
from slm_tui.tokenizers import load_tokenizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import _llama2c  # noqa: E402

SHAPE = {"context_length": 64, "n_layer": 2, "n_head": 4, "d_model": 64}


def _export(tiny_checkpoint: Path, root: Path, **model) -> tuple[Path, Path]:
    """A random model with real logit margins (greedy is not decided by rounding) on the
    tiny checkpoint's tokenizer, saved and exported: (checkpoint, hf folder)."""
    tok = load_tokenizer(tiny_checkpoint / "tokenizer")
    cfg = Config()
    cfg.model = ModelConfig(vocab_size=tok.vocab_size, **{**SHAPE, **model})
    torch.manual_seed(1)
    gpt = GPT(cfg.model)
    with torch.no_grad():
        for p in gpt.parameters():
            p.add_(torch.randn_like(p) * 0.15)
    ckpt = save_checkpoint(root / "ckpt", gpt, cfg, tok, {"step": 1})
    hf = root / "hf"
    res = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "--format", "hf",
                                   "--output", str(hf)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return ckpt, hf


@pytest.fixture(scope="module")
def untied(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("llama2c")
    ckpt, hf = _export(tiny_checkpoint, root, n_kv_head=2, tie_embeddings=False)
    return ckpt, _llama2c.convert(hf, root / "bin")


def _read_tokenizer_bin(path: Path, n: int) -> tuple[int, list[tuple[float, bytes]]]:
    data = path.read_bytes()
    (max_len,), at, out = struct.unpack_from("<i", data), 4, []
    for _ in range(n):
        score, size = struct.unpack_from("<fi", data, at)
        out.append((score, data[at + 8 : at + 8 + size]))
        at += 8 + size
    assert at == len(data)
    return max_len, out


def test_model_bin_header_and_block_sizes_are_what_runc_maps(untied, tiny_checkpoint, tmp_path):
    ckpt, conv = untied
    cfg = load_checkpoint(ckpt).model.cfg
    V, d, L, hd, hidden = cfg.vocab_size, 64, 2, 16, mlp_hidden_size(cfg)
    assert conv.header == (d, hidden, L, 4, 2, -V, 64)  # negative vocab: the head is not tied
    data = conv.model_bin.read_bytes()
    assert struct.unpack_from("<7i", data) == conv.header
    # run.c's memory_map_weights, block by block (kv_dim = 2 heads x 16), then the head.
    floats = _floats(V, d, L, 2 * hd, hidden, hd, tied=False)
    assert len(data) == 28 + 4 * floats
    weights = torch.frombuffer(bytearray(data[28:]), dtype=torch.float32)
    state = load_checkpoint(ckpt).model.state_dict()
    order = torch.tensor(conv.order)
    assert torch.equal(weights[: V * d].view(V, d), state["tok_emb.weight"][order])
    assert torch.equal(weights[-V * d :].view(V, d), state["lm_head.weight"][order])
    # A tied model (and no grouped-query attention) writes no head and a positive vocab size.
    _ckpt, hf = _export(tiny_checkpoint, tmp_path)
    tied = _llama2c.convert(hf, tmp_path / "bin")
    assert tied.header == (d, hidden, L, 4, 4, V, 64)
    assert tied.model_bin.stat().st_size == 28 + 4 * _floats(V, d, L, d, hidden, hd, tied=True)


def _floats(V: int, d: int, L: int, kv: int, hidden: int, hd: int, tied: bool) -> int:
    """run.c's memory_map_weights: embeddings, norms, wq, wk, wv, wo, norms, w1, w2, w3,
    final norm, two freq_cis tables (seq_len 64 x hd/2), then the head unless tied."""
    blocks = V * d + L * d + L * d * d + 2 * L * d * kv + L * d * d + L * d
    blocks += 3 * L * d * hidden + d + 2 * 64 * hd // 2
    return blocks + (0 if tied else V * d)


def test_tokenizer_bin_has_runc_ids_and_spaces(untied, tiny_checkpoint):
    _ckpt, conv = untied
    tok = load_tokenizer(tiny_checkpoint / "tokenizer")
    max_len, entries = _read_tokenizer_bin(conv.tokenizer_bin, tok.vocab_size)
    pieces = [p for _s, p in entries]
    assert max_len == max(len(p) for p in pieces)
    assert pieces[1] == b"\n<s>\n" and pieces[2] == b"\n</s>\n"  # run.c: BOS is id 1
    assert conv.to_ours([1, 2]) == [tok.bos_id, tok.eos_id]
    assert [pieces[3 + b] for b in (0x00, 0x41, 0xFF)] == [b"<0x00>", b"<0x41>", b"<0xFF>"]
    assert not any("\u2581".encode() in p for p in pieces)
    # Every other piece is our token's text; ids map back and forth.
    ids = tok.encode("Once upon a time, Lily saw a red kite.\n\nThe end.")
    runc = conv.to_runc(ids)
    assert conv.to_ours(runc) == ids and b"".join(pieces[i] for i in runc) == tok.decode(
        ids
    ).encode("utf-8")
    # What run.c prints: the space after BOS dropped, byte pieces as bytes, a lone
    # unprintable byte skipped.
    story = [*conv.to_runc([tok.bos_id, *tok.encode(" Once")]), 3 + 0x41, 3 + 0x07]
    assert _llama2c.render(conv.pieces, story) == b"OnceA"


def _runc_rope(x: torch.Tensor, pos: int) -> torch.Tensor:
    """run.c's RoPE on one head's vector: pairs (2i, 2i+1), freq 10000^(-2i/hd), float32."""
    hd, out = x.numel(), x.clone()
    for i in range(0, hd, 2):
        val = torch.tensor(pos * (1.0 / 10000.0 ** (i / hd)), dtype=torch.float32)
        c, s = torch.cos(val), torch.sin(val)
        out[i], out[i + 1] = x[i] * c - x[i + 1] * s, x[i] * s + x[i + 1] * c
    return out


def test_converted_q_k_rows_give_our_attention_scores_under_runc_rope(untied):
    ckpt, conv = untied
    model = load_checkpoint(ckpt).model
    H, Hkv, hd, d = 4, 2, 16, 64
    weights = torch.frombuffer(bytearray(conv.model_bin.read_bytes()[28:]), dtype=torch.float32)
    V, L = abs(conv.header[5]), 2
    at = V * d + L * d
    wq = weights[at : at + d * d].view(d, d)  # layer 0
    at += L * d * d
    wk = weights[at : at + Hkv * hd * d].view(Hkv * hd, d)
    torch.manual_seed(0)
    x = torch.randn(d)
    qkv = model.blocks[0].attn.qkv.weight.detach() @ x
    q, k = qkv[: H * hd].view(H, 1, 1, hd), qkv[H * hd : (H + Hkv) * hd].view(Hkv, 1, 1, hd)
    for pq, pk in ((5, 3), (40, 0), (63, 63)):
        ours_q = apply_rotary(q, model.rope_cos[pq : pq + 1], model.rope_sin[pq : pq + 1])
        ours_k = apply_rotary(k, model.rope_cos[pk : pk + 1], model.rope_sin[pk : pk + 1])
        their_q, their_k = (wq @ x).view(H, hd), (wk @ x).view(Hkv, hd)
        for h in range(H):
            ours = float(ours_q[h].flatten() @ ours_k[h // 2].flatten())
            theirs = float(_runc_rope(their_q[h], pq) @ _runc_rope(their_k[h // 2], pk))
            assert theirs == pytest.approx(ours, rel=1e-4, abs=1e-4), (pq, pk, h)


def test_a_model_runc_cannot_run_exactly_is_refused(tiny_checkpoint, tmp_path):
    _ckpt, hf = _export(tiny_checkpoint, tmp_path, rope_theta=500000.0)
    with pytest.raises(_llama2c.ConvertError, match="RoPE theta 500000"):
        _llama2c.convert(hf, tmp_path / "bin")
    assert not (tmp_path / "bin").exists()


# ---- run.c itself, when its source is here ---------------------------------------------------
@pytest.fixture(scope="module")
def run_c() -> Path:
    src = _llama2c.find_run_c(os.environ.get("SLM_LLAMA2C"))
    if src is None:
        pytest.skip(f"llama2.c not here: `{_llama2c.GET_LLAMA2C}`, then SLM_LLAMA2C=llama2.c")
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build run.c")
    return src


def test_runc_writes_our_greedy_text(untied, run_c, tmp_path):
    ckpt, conv = untied
    loaded = load_checkpoint(ckpt)
    run, encode = _llama2c.build(run_c, tmp_path / "cache")
    prompt, new = "Once upon a time", 30
    ours_prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode(" " + prompt)]
    assert conv.to_ours(_llama2c.runc_prompt_ids(encode, conv, prompt)) == ours_prompt
    settings = SamplingSettings(temperature=0.0, repetition_penalty=1.0, max_new_tokens=new,
                                ignore_eos=True, seed=0)  # fmt: skip
    ids = generate_batch(loaded.model, loaded.tokenizer, [" " + prompt], settings)[0].token_ids
    steps = len(ours_prompt) - 1 + new
    out = subprocess.run([str(run), str(conv.model_bin), "-z", str(conv.tokenizer_bin), "-t",
                          "0", "-n", str(steps), "-i", prompt], capture_output=True,
                         check=True).stdout  # fmt: skip
    want = _llama2c.render(conv.pieces, conv.to_runc(ours_prompt + ids))
    assert out == want + b"\n"
