"""The one-row decode step in C (`decode.c`), built on first use with the machine's compiler.

`native_step(model)` returns a callable with `FusedDecoder`'s signature that runs a whole
decode step for one row in one C call (no per-op dispatch), or None where it cannot run:
no C compiler, a model not on the CPU or not in float32, `SLM_TUI_NATIVE=0`. Callers then
keep the torch path (`FusedDecoder`), which computes the same function.

- Build: `cc -O3 -march=native -shared -fPIC` (`$CC` first), ~1 s, once per machine: the
  library is cached in slm-tui's cache folder under a name hashed from the source, the
  compiler's version, the flags and the CPU's flags (a cache copied to another CPU is never
  loaded there), written to a temporary file and renamed into place (parallel builds are
  safe). A failed build is remembered for the process and never retried in a loop.
- Weights: each matrix is copied once, packed as the step reads it (W transposed, in tiles
  of 64 output columns: one contiguous stream per tile, 64 outputs in registers). Where
  every weight matrix is exactly a bfloat16 value (the bundled demo is stored in bf16), the
  copies are bf16 (half the bytes; widened to float32 in registers: the same products),
  else float32. The copies are made once per model object and remade when a parameter
  changes (`native_step`).
- `batch_attention`: the same attention loop for several rows at once, each over its own
  slots, for the batched torch step (`decode.FusedDecoder`, one torch thread).
- tests/test_native.py checks logits and cache entries against `GPT.forward` for every
  model switch (and the batched attention for ragged rows, GQA, windows, unscaled scores),
  and that greedy stories are identical.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from slm_tui.devices import cache_dir, cpu_info

if TYPE_CHECKING:
    from slm_tui.model import GPT, KVCache

SOURCE = Path(__file__).with_name("decode.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-fno-math-errno", "-std=gnu11")
TILE = 64  # output columns per packed tile (decode.c)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None  # why the library is not available (built once per process)


class _Mat(ctypes.Structure):
    _fields_ = [("f32", ctypes.c_void_p), ("bf16", ctypes.c_void_p)]


class _Layer(ctypes.Structure):
    _fields_ = [
        ("norm1_w", ctypes.c_void_p),
        ("norm1_b", ctypes.c_void_p),
        ("wqkv", _Mat),
        ("bqkv", ctypes.c_void_p),
        ("wo", _Mat),
        ("bo", ctypes.c_void_p),
        ("norm2_w", ctypes.c_void_p),
        ("norm2_b", ctypes.c_void_p),
        ("wfc", _Mat),
        ("bfc", ctypes.c_void_p),
        ("wp", _Mat),
        ("bp", ctypes.c_void_p),
        ("window", ctypes.c_int),
    ]


class _Model(ctypes.Structure):
    _fields_ = [
        ("n_layer", ctypes.c_int),
        ("d", ctypes.c_int),
        ("n_head", ctypes.c_int),
        ("n_kv_head", ctypes.c_int),
        ("head_dim", ctypes.c_int),
        ("hidden", ctypes.c_int),
        ("vocab", ctypes.c_int),
        ("context", ctypes.c_int),
        ("layernorm", ctypes.c_int),
        ("act", ctypes.c_int),
        ("rope", ctypes.c_int),
        ("norm_eps", ctypes.c_float),
        ("attn_scale", ctypes.c_float),
        ("tok_emb", ctypes.c_void_p),
        ("pos_emb", ctypes.c_void_p),
        ("rope_cos", ctypes.c_void_p),
        ("rope_sin", ctypes.c_void_p),
        ("normf_w", ctypes.c_void_p),
        ("normf_b", ctypes.c_void_p),
        ("head", _Mat),
        ("layers", ctypes.POINTER(_Layer)),
    ]


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _library_path(cc: str) -> Path:
    version = subprocess.run(
        [cc, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    _, flags = cpu_info()
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(FLAGS).encode(),
                 platform.machine().encode(), " ".join(sorted(flags or ())).encode()):  # fmt: skip
        key.update(part)
        key.update(b"\0")
    return cache_dir() / "native" / f"decode-{key.hexdigest()[:16]}.so"


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise OSError("no C compiler (cc, gcc or clang) on the PATH")
    path = _library_path(cc)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".decode-", suffix=".so", dir=path.parent)
        os.close(fd)
        try:
            done = subprocess.run(
                [cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["failed"])[0]
                raise OSError(f"building the native decode step failed: {first}")
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    lib = ctypes.CDLL(str(path))
    if (lib.slm_sizeof_model(), lib.slm_sizeof_layer()) != (
        ctypes.sizeof(_Model),
        ctypes.sizeof(_Layer),
    ):
        raise OSError("the native decode step's structs do not match this module")
    lib.slm_decode_step.restype = ctypes.c_int
    lib.slm_decode_step.argtypes = [
        ctypes.POINTER(_Model), ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    lib.slm_batch_attention.restype = ctypes.c_int
    lib.slm_batch_attention.argtypes = [
        ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long,
        ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_void_p,
    ]  # fmt: skip
    return lib


def batch_attention(
    q: Tensor, k: Tensor, v: Tensor, first: Tensor, slot: int, window: int, scale: float
) -> Tensor | None:
    """One decode step's attention for B rows, each over its own slots `first[b]` .. `slot`
    (`window` > 0: the newest `window` of them) of `k`, `v` (B, Hkv, S, hd), in C; q (B, H, 1,
    hd) -> (B, H, 1, hd), as `attend` with the mask of those slots computes it. None where
    the C library is not here or the tensors are not float32 CPU tensors in the layouts it
    reads (callers then use `attend`)."""
    lib = library()
    if lib is None:
        return None
    B, H, _, hd = q.shape
    Hkv = k.size(1)
    ok = (
        q.dtype == k.dtype == v.dtype == torch.float32 and q.device.type == "cpu"
        and k.stride() == v.stride() and k.stride(3) == 1 and k.stride(2) == hd
        and q.stride(3) == 1 and q.stride(1) == hd and first.dtype == torch.int32
        and first.is_contiguous() and slot < k.size(2)
    )  # fmt: skip
    if not ok:
        return None
    out = torch.empty(B, H, 1, hd)
    code = lib.slm_batch_attention(
        q.data_ptr(), q.stride(0), k.data_ptr(), v.data_ptr(), k.stride(0), k.stride(1),
        first.data_ptr(), slot, B, H, Hkv, hd, window, scale, out.data_ptr(),
    )  # fmt: skip
    return out if code == 0 else None


def library() -> ctypes.CDLL | None:
    """The built library, or None (`unavailable()` says why)."""
    global _library, _failure
    if os.environ.get("SLM_TUI_NATIVE", "1") == "0":
        return None
    with _lock:
        if _library is None and _failure is None:
            try:
                _library = _build()
            except (OSError, subprocess.SubprocessError) as exc:
                _failure = str(exc) or type(exc).__name__
        return _library


def unavailable() -> str | None:
    """Why the native step cannot run on this machine (None: it can)."""
    if os.environ.get("SLM_TUI_NATIVE", "1") == "0":
        return "SLM_TUI_NATIVE=0"
    library()
    return _failure


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeStep:
    """One decode step for one row of `model` in C (see the module docstring)."""

    def __init__(self, model: GPT, lib: ctypes.CDLL) -> None:
        cfg = model.cfg
        self.lib = lib
        self.key: tuple = ()  # the parameters it was built from (`native_step`)
        self.vocab = model.vocab_size
        self._keep: list[Tensor] = []  # every tensor the struct points into stays alive
        matrices = [model.tok_emb.weight, model.lm_head.weight]
        for b in model.layers:
            matrices += [b.attn.qkv.weight, b.attn.proj.weight, b.mlp.fc.weight,
                         b.mlp.proj.weight]  # fmt: skip
        self.bf16 = all(bool((w == w.bfloat16().float()).all()) for w in matrices)

        def mat(w: Tensor) -> _Mat:
            """W (out, in) packed as decode.c reads it: [ceil(out/TILE)][in][TILE]."""
            out, n_in = w.shape
            tiles = -(-out // TILE)
            padded = w.detach().new_zeros(tiles * TILE, n_in)
            padded[:out] = w.detach()
            packed = padded.view(tiles, TILE, n_in).transpose(1, 2).contiguous()
            if self.bf16:
                packed = packed.bfloat16().view(torch.int16)
                self._keep.append(packed)
                return _Mat(None, packed.data_ptr())
            self._keep.append(packed)
            return _Mat(packed.data_ptr(), None)

        def vec(t: Tensor | None) -> int | None:
            if t is None:
                return None
            t = t.detach().contiguous()
            self._keep.append(t)
            return t.data_ptr()

        layers = (_Layer * cfg.n_layer)()
        for layer, b in zip(layers, model.layers, strict=True):
            layer.norm1_w, layer.norm1_b = vec(b.norm1.weight), vec(getattr(b.norm1, "bias", None))
            layer.wqkv, layer.bqkv = mat(b.attn.qkv.weight), vec(b.attn.qkv.bias)
            layer.wo, layer.bo = mat(b.attn.proj.weight), vec(b.attn.proj.bias)
            layer.norm2_w, layer.norm2_b = vec(b.norm2.weight), vec(getattr(b.norm2, "bias", None))
            layer.wfc, layer.bfc = mat(b.mlp.fc.weight), vec(b.mlp.fc.bias)
            layer.wp, layer.bp = mat(b.mlp.proj.weight), vec(b.mlp.proj.bias)
        windows = list(getattr(cfg, "attention_windows", ())) or [0] * cfg.n_layer
        for layer, window in zip(layers, windows, strict=True):
            layer.window = window
        self._layers = layers
        self.model = _Model(
            n_layer=cfg.n_layer,
            d=cfg.d_model,
            n_head=cfg.n_head,
            n_kv_head=model.n_kv_head,
            head_dim=model.head_dim,
            hidden=model.layers[0].mlp.proj.weight.size(1),
            vocab=cfg.vocab_size,
            context=cfg.context_length,
            layernorm=int(cfg.norm == "layernorm"),
            act=("swiglu", "gelu", "gelu_tanh").index(cfg.mlp),
            rope=int(model.rope_cos is not None),
            norm_eps=float(model.norm_f.eps),
            attn_scale=model.head_dim**-0.5 if getattr(cfg, "scale_attention", True) else 1.0,
            tok_emb=vec(model.tok_emb.weight),
            pos_emb=vec(None if model.pos_emb is None else model.pos_emb.weight),
            rope_cos=vec(model.rope_cos),
            rope_sin=vec(model.rope_sin),
            normf_w=vec(model.norm_f.weight),
            normf_b=vec(getattr(model.norm_f, "bias", None)),
            head=mat(model.lm_head.weight),
            layers=layers,
        )
        hidden = self.model.hidden
        H, Hkv, hd = cfg.n_head, model.n_kv_head, model.head_dim
        size = 3 * cfg.d_model + (H + 2 * Hkv) * hd + 2 * hidden + cfg.context_length + 16
        self._work = torch.empty(size, dtype=torch.float32)
        self._model_ref = ctypes.byref(self.model)

    def __call__(
        self,
        idx: Tensor,
        cache: KVCache,
        positions: Tensor | None = None,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        """Next-token logits (1, V) after `idx` (1, 1): `FusedDecoder.__call__` for one row."""
        slot = cache.length
        if slot >= cache.max_len:
            raise ValueError(f"{slot + 1} positions do not fit the KV cache of {cache.max_len}")
        k, v = cache.k, cache.v  # (L, B, Hkv, S, hd) views; row 0 is ours
        pos = slot if positions is None else int(positions.view(-1)[0])
        mask_ptr = None
        if key_mask is not None:
            mask = key_mask.view(-1)[: slot + 1].to(torch.uint8).contiguous()
            mask_ptr = mask.data_ptr()
        logits = torch.empty(1, self.vocab, dtype=torch.float32)
        self.lib.slm_decode_step(
            self._model_ref, int(idx.view(-1)[0]), pos, slot,
            k.data_ptr(), v.data_ptr(), k.stride(0), k.stride(2),
            mask_ptr, logits.data_ptr(), self._work.data_ptr(),
        )  # fmt: skip
        cache.length = slot + 1
        return logits


def native_step(model: GPT) -> NativeStep | None:
    """The C step for `model` where it can run (module docstring), else None. One step is
    kept per model object and reused while its parameters are unchanged (the same storage,
    no in-place update since), so a new story costs no copy of the weights."""
    weight = model.tok_emb.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    lib = library()
    if lib is None:
        return None
    key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    step = model.__dict__.get("_native_step")
    if step is None or step.key != key:
        step = NativeStep(model, lib)
        step.key = key
        model.__dict__["_native_step"] = step
    return step
