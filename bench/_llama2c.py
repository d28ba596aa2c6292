"""A Hugging Face Llama export as karpathy/llama2.c's legacy files, and run.c built from source.

For bench/decode_vs_runc.py: `run.c` (llama2.c's 1-file C inference, github.com/karpathy/
llama2.c, none of its code is in this repository) decodes our model's weights side by side
with our engine. Input is the folder `slm-train export --format hf` writes.

- `model.bin`, version 0 ("legacy"): 7 int32 (dim, hidden_dim, n_layers, n_heads,
  n_kv_heads, vocab_size, seq_len; vocab_size negative when the head is not tied), then fp32
  weights in run.c's order: embeddings, attention norms, wq, wk, wv, wo, ffn norms, w1 (gate),
  w2 (down), w3 (up), final norm, the two freq_cis tables run.c skips, and the head if untied.
- q and k rows are permuted from "rotate half" (our layout, and transformers': pairs i and
  i + hd/2) to run.c's interleaved pairs (2i, 2i + 1) within each head, as llama2.c's
  export.py `permute_reverse` does. Same frequencies: theta^(-2i/hd) for pair i.
- run.c hard-codes RoPE theta 10000 and RMSNorm eps 1e-5; a model with others is refused
  (its text would differ from the first token). Our model: theta `model.rope_theta`
  (10000 by default and in the demo), eps 1e-5 (fixed in model.py's RMSNorm).
- The vocabulary is renumbered (an exact permutation of the embedding and head rows): run.c
  hard-codes BOS = 1 (its prompts start with it; it stops when it samples it) and byte
  fallback at ids 3 + byte, where Llama 2's tokenizer has them. Ours has pad 0, unk 1, bos 2,
  eos 3, "\\n\\n" 4, "\\n" 5, bytes at 6..261. Order here: unk, bos, eos, the 256 bytes, then
  every other id in our order. `Converted.to_ours` / `to_runc` map ids across.
- `tokenizer.bin`: max_token_length (int32), then per id: score (fp32), length (int32),
  bytes: "▁" written as a space, byte pieces kept as "<0xNN>" (run.c's decode turns them
  into the byte), BOS/EOS as "\\n<s>\\n" / "\\n</s>\\n" (llama2.c's tokenizer.py does too).
- run.c's `encode` always prepends a dummy-prefix " " (Llama 2's tokenizer has one; ours
  does not), so a prompt P reaches the model as our tokenizer's ids of " " + P.
  `runc_prompt_ids` asks run.c's own `encode` (a 10-line harness compiled against run.c).
- `render(ids)` prints ids as run.c's `generate` does (decode + safe_printf: leading space
  dropped after BOS, a single unprintable byte skipped), so texts compare byte for byte.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from slm_tui.interop.gguf_export import permute_qk
from slm_tui.interop.sp_model import BYTE, CONTROL, UNKNOWN, parse_model

RUNC_THETA, RUNC_EPS = 10000.0, 1e-5
RUNC_BOS = 1  # run.c: prompts start with id 1; sampling it ends the story
CFLAGS = ("-Ofast", "-march=native")  # llama2.c's `make runfast`, one thread (no -fopenmp)
GET_LLAMA2C = "git clone https://github.com/karpathy/llama2.c"
_ENCODE_HARNESS = """#define TESTING
#include "run.c"
int main(int argc, char **argv) {  // tokenizer.bin vocab_size text -> run.c's prompt ids
    Tokenizer t; build_tokenizer(&t, argv[1], atoi(argv[2]));
    int *ids = malloc((strlen(argv[3]) + 3) * sizeof(int)), n = 0;
    encode(&t, argv[3], 1, 0, ids, &n);
    for (int i = 0; i < n; i++) printf("%d ", ids[i]);
    printf("\\n"); return 0;
}
"""


class ConvertError(ValueError):
    """A model run.c cannot run exactly (named), or an input folder that is not an export."""


@dataclass
class Converted:
    model_bin: Path
    tokenizer_bin: Path
    header: tuple[int, ...]  # the 7 int32 of model.bin
    order: list[int]  # run.c id -> our id
    pieces: list[bytes]  # run.c id -> the bytes tokenizer.bin holds

    def to_runc(self, ids: list[int]) -> list[int]:
        inverse = {ours: i for i, ours in enumerate(self.order)}
        return [inverse[i] for i in ids]

    def to_ours(self, ids: list[int]) -> list[int]:
        return [self.order[i] for i in ids]


# ---- conversion ------------------------------------------------------------------------------
def _config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.is_file() or not (hf_dir / "model.safetensors").is_file():
        raise ConvertError(
            f"{hf_dir} is not a Hugging Face export (config.json, model.safetensors)"
        )
    cfg = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    if cfg.get("model_type") != "llama":
        problems.append(f"model_type {cfg.get('model_type')!r} (run.c runs Llama blocks only)")
    theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta"))
    if theta != RUNC_THETA:
        problems.append(f"RoPE theta {theta} (run.c hard-codes {RUNC_THETA:g})")
    if cfg.get("rms_norm_eps") != RUNC_EPS:
        problems.append(f"RMSNorm eps {cfg.get('rms_norm_eps')} (run.c hard-codes {RUNC_EPS:g})")
    if cfg.get("hidden_act") != "silu":
        problems.append(f"activation {cfg.get('hidden_act')} (run.c: SwiGLU)")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        problems.append("biases (run.c has none)")
    if cfg.get("rope_scaling"):
        problems.append("RoPE scaling")
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if hd * cfg["num_attention_heads"] != cfg["hidden_size"]:
        problems.append("heads x head_dim != width (run.c needs them equal)")
    if problems:
        raise ConvertError(f"run.c cannot run this model exactly: {'; '.join(problems)}")
    return cfg


def vocab_order(hf_dir: Path) -> tuple[list[int], list[bytes], list[float]]:
    """(run.c id -> our id, run.c id -> tokenizer.bin bytes, run.c id -> score), from the
    SentencePiece model the export carries (tokenizer.model)."""
    path = hf_dir / "tokenizer.model"
    if not path.is_file():
        raise ConvertError(f"{path} is missing: tokenizer.bin is built from a SentencePiece model")
    sp = parse_model(path.read_bytes(), str(path))
    byte_ids: dict[int, int] = {}
    for i, p in enumerate(sp.pieces):
        if p.type == BYTE:
            byte_ids[int(p.text[3:5], 16)] = i
    if len(byte_ids) != 256:
        raise ConvertError(
            "run.c's byte fallback needs all 256 byte pieces; this tokenizer lacks some"
        )
    head = [sp.unk_id, sp.bos_id, sp.eos_id, *(byte_ids[b] for b in range(256))]
    taken = set(head)
    order = head + [i for i in range(len(sp.pieces)) if i not in taken]
    pieces, scores = [], []
    for i in order:
        p = sp.pieces[i]
        if i == sp.bos_id:
            text = "\n<s>\n"
        elif i == sp.eos_id:
            text = "\n</s>\n"
        elif p.type in (BYTE, CONTROL, UNKNOWN):
            text = p.text
        else:
            text = p.text.replace("\u2581", " ")
        pieces.append(text.encode("utf-8"))
        scores.append(p.score)
    return order, pieces, scores


def convert(hf_dir: Path, out_dir: Path) -> Converted:
    """Write `out_dir`/model.bin and tokenizer.bin for run.c from the export in `hf_dir`."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    cfg = _config(hf_dir)
    order, pieces, scores = vocab_order(hf_dir)
    t = load_file(str(hf_dir / "model.safetensors"))
    dim, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    H, Hkv = (
        cfg["num_attention_heads"],
        cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
    )
    V, seq_len = cfg["vocab_size"], cfg["max_position_embeddings"]
    hd = dim // H
    if len(order) != V:
        raise ConvertError(f"tokenizer has {len(order)} pieces, the model {V} ids")
    tied = cfg.get("tie_word_embeddings", True)
    rows = torch.tensor(order)
    emb = t["model.embed_tokens.weight"][rows]  # (V, dim), run.c's id order

    def layers(name: str) -> list[torch.Tensor]:
        return [t[f"model.layers.{i}.{name}.weight"] for i in range(L)]

    half = torch.arange(0, hd, 2, dtype=torch.float64) / hd
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), RUNC_THETA**-half)
    tensors = [
        emb,
        *layers("input_layernorm"),
        *(permute_qk(w, H) for w in layers("self_attn.q_proj")),
        *(permute_qk(w, Hkv) for w in layers("self_attn.k_proj")),
        *layers("self_attn.v_proj"),
        *layers("self_attn.o_proj"),
        *layers("post_attention_layernorm"),
        *layers("mlp.gate_proj"),  # w1
        *layers("mlp.down_proj"),  # w2
        *layers("mlp.up_proj"),  # w3
        t["model.norm.weight"],
        angles.cos(),  # freq_cis_real: run.c skips it (it computes RoPE itself)
        angles.sin(),  # freq_cis_imag
    ]
    if not tied:
        tensors.append(t["lm_head.weight"][rows])
    header = (dim, cfg["intermediate_size"], L, H, Hkv, V if tied else -V, seq_len)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_bin = out_dir / "model.bin"
    with open(model_bin, "wb") as f:
        f.write(struct.pack("<7i", *header))
        for w in tensors:
            f.write(w.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    tokenizer_bin = out_dir / "tokenizer.bin"
    with open(tokenizer_bin, "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for piece, score in zip(pieces, scores, strict=True):
            f.write(struct.pack("<fi", score, len(piece)))
            f.write(piece)
    return Converted(model_bin, tokenizer_bin, header, order, pieces)


# ---- what run.c prints -----------------------------------------------------------------------
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{1,2})")  # run.c: sscanf(piece, "<0x%02hhX>")


def render(pieces: list[bytes], ids: list[int]) -> bytes:
    """What run.c's `generate` prints for the run.c ids `ids` (prompt included, BOS first),
    without its final newline; it stops before a sampled BOS, as run.c does."""
    out = bytearray()
    for prev, tok in itertools.pairwise(ids):
        if tok == RUNC_BOS:
            break
        piece = pieces[tok]
        if prev == RUNC_BOS and piece[:1] == b" ":
            piece = piece[1:]
        m = _BYTE_PIECE.match(piece)
        if m:
            piece = bytes([int(m.group(1), 16)])
        if len(piece) == 1 and not (0x20 <= piece[0] <= 0x7E or 0x09 <= piece[0] <= 0x0D):
            continue  # safe_printf: an unprintable lone byte is skipped
        out += piece
    return bytes(out)


# ---- building run.c --------------------------------------------------------------------------
def find_run_c(src: str | os.PathLike | None) -> Path | None:
    """run.c from `src` (the file, or a llama2.c checkout), or None."""
    if not src:
        return None
    p = Path(src).expanduser()
    p = p / "run.c" if p.is_dir() else p
    return p if p.is_file() else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slm-tui" / "bench" / "runc"


def build(run_c: Path, cache: Path) -> tuple[Path, Path]:
    """(run, encode): run.c compiled as llama2.c's `make runfast` minus OpenMP, and the
    encode harness, cached in `cache` under the hash of run.c and the flags."""
    key = hashlib.sha256(run_c.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    cache.mkdir(parents=True, exist_ok=True)
    run, enc = cache / f"run-{key}", cache / f"encode-{key}"
    if not run.is_file():
        _cc([*CFLAGS, "-o", str(run), str(run_c), "-lm"])
    if not enc.is_file():
        harness = cache / f"encode-{key}.c"
        harness.write_text(_ENCODE_HARNESS)
        _cc(["-O2", "-I", str(run_c.parent), "-o", str(enc), str(harness), "-lm"])
    return run, enc


def _cc(args: list[str]) -> None:
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConvertError(f"gcc {' '.join(args)} failed: {proc.stderr.strip()[:400]}")


def source_version(run_c: Path) -> dict[str, str | None]:
    """run.c's sha256 and, in a git checkout, its commit (for the bench's JSON)."""
    git = subprocess.run(["git", "-C", str(run_c.parent), "rev-parse", "HEAD"],
                         capture_output=True, text=True)  # fmt: skip
    commit = git.stdout.strip() if git.returncode == 0 else None
    return {"sha256": hashlib.sha256(run_c.read_bytes()).hexdigest(), "commit": commit}


def compiler() -> str:
    out = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "gcc"


def runc_prompt_ids(encode: Path, conv: Converted, prompt: str) -> list[int]:
    """The run.c ids run.c's own `encode` gives `prompt` (BOS first, dummy prefix in)."""
    vocab = str(abs(conv.header[5]))
    out = subprocess.run([str(encode), str(conv.tokenizer_bin), vocab, prompt],
                         capture_output=True, check=True, text=True).stdout  # fmt: skip
    return [int(x) for x in out.split()]
