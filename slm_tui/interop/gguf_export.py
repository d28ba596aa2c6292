"""`slm-train export --format gguf`: a checkpoint as one `.gguf` file for llama.cpp and ollama.

Written with the `gguf` package (llama.cpp's own writer), imported lazily. Llama
architecture only. Refused, each with one line: the GPT-2 switches, by design (they exist
to compare with the seed notebook; `--format hf` carries them); biases (`model.bias`:
llama.cpp's optional bias tensors are not checked here, so nothing is written that has not
been judged); tokenizers llama.cpp's SentencePiece tokenizer would segment differently
(unigram models, the `byte` kind, a dummy prefix together with user-defined pieces).

Notable (tests/test_interop.py reads every file back with `gguf.GGUFReader`):
- Metadata: context length, embedding length, block count, feed-forward length, head
  counts, RMS epsilon 1e-5, rope freq base and dimension count, vocab size, file type, and
  our sampling defaults as `general.sampling.*` (llama.cpp's sampler order is ours:
  penalties, top-k, top-p, min-p, temperature; its penalty window is our 64 tokens).
- q and k rows are permuted from our "rotate half" layout to llama.cpp's adjacent pairs
  (`permute_qk`, the permutation of llama.cpp's convert_hf_to_gguf.py); `unpermute_qk`
  undoes it. A tied head writes no `output.weight` (llama.cpp reuses `token_embd`).
- Byte-level tokenizers (`gpt2`, `bytelevel-bpe`): llama.cpp's `gpt2` tokenizer model
  with pre-tokenizer `gpt-2` (GPT-2's split pattern), the pieces in GPT-2's byte spelling
  and the merges in order (for `gpt2` derived from the ranks: OpenAI's vocab.bpe).
- SentencePiece: `tokenizer.ggml.model = "llama"` (SentencePiece BPE): pieces, scores, token
  types (byte pieces `<0xXX>` BYTE, our newline pieces USER_DEFINED, specials CONTROL),
  bos/eos/unk/pad ids, add BOS, and `add_space_prefix` false (llama.cpp's default is true,
  which would put a space in front of every prompt; true only for an imported model whose
  SentencePiece model adds a dummy prefix). A literal "▁" in text reads as a space
  in llama.cpp (as in SentencePiece itself), where our tokenizer keeps it as three bytes.
- Types: float32 (default), float16, bfloat16 for matrices, 1-D tensors (norms) always
  float32 as llama.cpp's converter does; `q8_0` quantizes every matrix in blocks of 32 along
  its rows and refuses, naming the tensor, a matrix whose row length is not a multiple of 32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from slm_tui.checkpoint.io import LoadedCheckpoint
from slm_tui.config import ModelConfig
from slm_tui.fileio import as_ordinary_file, fsync_dir
from slm_tui.generation.settings import DEFAULTS
from slm_tui.interop.common import InteropError, architecture, discard
from slm_tui.interop.hf_bytelevel import BYTELEVEL_KINDS, bytelevel_parts
from slm_tui.interop.hf_tokenizer import check_exportable, sentencepiece_model
from slm_tui.interop.sp_model import UNKNOWN
from slm_tui.model import mlp_hidden_size
from slm_tui.tokenizers import Tokenizer

if TYPE_CHECKING:
    from gguf import GGUFWriter  # imported where it is used: an optional dependency

GGUF_DTYPES = ("float32", "float16", "bfloat16", "q8_0")
Q8_BLOCK = 32
RMS_EPS = 1e-5


def permute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of q or k (n_heads * head_dim, ...) from "rotate half" (pairs i, i + hd/2) to
    llama.cpp's interleaved pairs (2i, 2i + 1), per head; biases (1-D) too."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, hd // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `permute_qk`."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_tensors(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our float tensors under llama.cpp's names, q/k permuted (still torch, float32)."""
    H, Hkv = cfg.n_head, cfg.n_kv_head or cfg.n_head
    hd, hidden = cfg.d_model // cfg.n_head, mlp_hidden_size(cfg)
    out = {"token_embd.weight": state["tok_emb.weight"]}
    for i in range(cfg.n_layer):
        b, blk = f"blocks.{i}.", f"blk.{i}."
        q, k, v = state[b + "attn.qkv.weight"].split([H * hd, Hkv * hd, Hkv * hd])
        gate, up = state[b + "mlp.fc.weight"].split([hidden, hidden])
        out.update({
            blk + "attn_norm.weight": state[b + "norm1.weight"],
            blk + "attn_q.weight": permute_qk(q, H),
            blk + "attn_k.weight": permute_qk(k, Hkv),
            blk + "attn_v.weight": v,
            blk + "attn_output.weight": state[b + "attn.proj.weight"],
            blk + "ffn_norm.weight": state[b + "norm2.weight"],
            blk + "ffn_gate.weight": gate,
            blk + "ffn_up.weight": up,
            blk + "ffn_down.weight": state[b + "mlp.proj.weight"],
        })  # fmt: skip
    out["output_norm.weight"] = state["norm_f.weight"]
    if not cfg.tie_embeddings:
        out["output.weight"] = state["lm_head.weight"]
    return out


def check_gguf(loaded: LoadedCheckpoint, dtype: str) -> None:
    """Every refusal, before anything is written."""
    cfg, tok = loaded.model.cfg, loaded.tokenizer
    if dtype not in GGUF_DTYPES:
        raise InteropError(
            f"--dtype {dtype} is not a GGUF type; use one of {', '.join(GGUF_DTYPES)}"
        )
    if architecture(cfg) != "llama":
        raise InteropError(
            "GGUF export is for the default (Llama) blocks; a GPT-2-style model (learned "
            "positions, LayerNorm, GELU) is not supported by design: use --format hf"
        )
    if cfg.bias:
        raise InteropError("GGUF export of a Llama model with biases (model.bias) is not supported")
    if tok.kind in BYTELEVEL_KINDS:
        pass  # llama.cpp's own `gpt2` tokenizer: GPT-2's pattern and the merges, exactly
    elif tok.kind not in ("sentencepiece-bpe", "sentencepiece"):
        raise InteropError(
            f"tokenizer kind '{tok.kind}' cannot be written as llama.cpp's SentencePiece "
            "tokenizer exactly (it merges pieces by score, as SentencePiece BPE does); "
            "GGUF export needs a sentencepiece-bpe, gpt2 or bytelevel-bpe tokenizer"
        )
    else:
        model, _ = sentencepiece_model(tok)
        if model.model_type != "bpe":
            raise InteropError(
                f"the tokenizer is a SentencePiece {model.model_type} model; llama.cpp's "
                "SentencePiece tokenizer merges pieces as BPE does, so GGUF needs a BPE model"
            )
        check_exportable(model, "GGUF")
    if dtype == "q8_0":
        state = {k: v for k, v in loaded.model.state_dict().items()}
        for name, t in gguf_tensors(cfg, state).items():
            if t.dim() == 2 and t.shape[1] % Q8_BLOCK:
                raise InteropError(
                    f"q8_0 stores blocks of {Q8_BLOCK} values along each row; {name} has rows "
                    f"of {t.shape[1]}; use --dtype float16 or bfloat16"
                )


def write_gguf(loaded: LoadedCheckpoint, path: Path, dtype: str = "float32") -> None:
    """Write the .gguf file at `path` (a temporary file of the caller's)."""
    check_gguf(loaded, dtype)
    try:
        import gguf
    except ImportError:
        raise InteropError(
            "GGUF export needs the gguf package: pip install 'slm-tui[interop]'"
        ) from None
    cfg, tok, info = loaded.model.cfg, loaded.tokenizer, loaded.info
    qtype, ftype = {
        "float32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
        "float16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bfloat16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    }[dtype]
    w = gguf.GGUFWriter(path, arch="llama")
    try:
        w.add_name(info.name)
        w.add_context_length(cfg.context_length)
        w.add_embedding_length(cfg.d_model)
        w.add_block_count(cfg.n_layer)
        w.add_feed_forward_length(mlp_hidden_size(cfg))
        w.add_head_count(cfg.n_head)
        w.add_head_count_kv(cfg.n_kv_head or cfg.n_head)
        w.add_layer_norm_rms_eps(RMS_EPS)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_rope_dimension_count(cfg.d_model // cfg.n_head)
        w.add_vocab_size(loaded.model.vocab_size)
        w.add_file_type(ftype)
        if dtype == "q8_0":
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_sampling_temp(DEFAULTS.temperature)
        w.add_sampling_top_k(DEFAULTS.top_k)
        w.add_sampling_top_p(DEFAULTS.top_p)
        w.add_sampling_min_p(DEFAULTS.min_p)
        w.add_sampling_penalty_repeat(DEFAULTS.repetition_penalty)
        w.add_sampling_penalty_last_n(DEFAULTS.repetition_window)

        if tok.kind in BYTELEVEL_KINDS:
            _add_bytelevel_tokenizer(w, tok)
        else:
            _add_sentencepiece_tokenizer(w, tok)

        state = {
            k: v.detach().to("cpu", torch.float32) for k, v in loaded.model.state_dict().items()
        }
        for name, t in gguf_tensors(cfg, state).items():
            data = t.contiguous().numpy()
            if t.dim() == 1 or qtype == gguf.GGMLQuantizationType.F32:
                w.add_tensor(name, data.astype(np.float32))
            else:
                w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=False)
    finally:
        w.close()


def _add_sentencepiece_tokenizer(w: GGUFWriter, tok: Tokenizer) -> None:
    """llama.cpp's SentencePiece tokenizer ("llama"): pieces, scores, types, ids."""
    sp, _ = sentencepiece_model(tok)
    w.add_tokenizer_model("llama")
    w.add_token_list([p.text.encode("utf-8") for p in sp.pieces])
    w.add_token_scores([float(p.score) for p in sp.pieces])
    # SentencePiece's piece types are GGUF's token types (NORMAL 1 ... BYTE 6).
    w.add_token_types([int(p.type) for p in sp.pieces])
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    w.add_unk_token_id(next(i for i, p in enumerate(sp.pieces) if p.type == UNKNOWN))
    if sp.pad_id >= 0:  # a model without a pad piece (Llama-2's) gets none
        w.add_pad_token_id(sp.pad_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(sp.add_dummy_prefix)


def _add_bytelevel_tokenizer(w: GGUFWriter, tok: Tokenizer) -> None:
    """llama.cpp's byte-level BPE ("gpt2", pre-tokenizer "gpt-2": GPT-2's split pattern):
    pieces in GPT-2's byte spelling, the merges in order, specials CONTROL (3), the rest
    NORMAL (1), as llama.cpp's convert_hf_to_gguf.py writes GPT-2's tokenizer."""
    vocab, merges, specials = bytelevel_parts(tok)
    tokens = sorted(vocab, key=vocab.__getitem__)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in specials else 1 for i in range(len(tokens))])
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    if tok.unk_id >= 0:
        w.add_unk_token_id(tok.unk_id)
    if tok.pad_id >= 0:
        w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def write_gguf_file(loaded: LoadedCheckpoint, dest: Path, dtype: str) -> None:
    """`write_gguf` into a temporary sibling, fsync, then rename onto `dest`."""
    check_gguf(loaded, dtype)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}")
    try:
        write_gguf(loaded, tmp, dtype)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        as_ordinary_file(tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        discard(tmp)
        raise
