"""How a run uses the machine: the autocast dtype, `torch.compile` and the attention kernel,
decided from what the machine has (`train.dtype: auto`, `train.compile: auto`).

Explicit values win. Otherwise:
- **CUDA**: bf16 autocast where the GPU supports it, compiled.
- **CPU dtype**: the CPU's own flags decide where they are conclusive. AMX-BF16 (matrix
  units: a bf16 matmul ran ~7x float32 on one of this project's machines) -> bf16; no bf16
  instructions at all -> float32. AVX512-BF16 without AMX (about 2x in matmuls, but casts
  eat into it), an ARM `bf16` flag, or flags that cannot be read are not conclusive: a short
  measured probe times a few forward+backward passes of this model shape in each dtype and
  picks the faster (bf16 must win by 5%). Its result is cached per CPU model + flags + torch
  version + threads + model shape in the user cache folder, so only the first run pays.
- **CPU compile**: inductor needs a C++ compiler, and its warm-up (~15-35 s the first time,
  ~5 s from its on-disk cache) pays only over a long run: on from `COMPILE_MIN_STEPS`
  optimizer steps in the run (its `max_steps`, not the steps left: a resumed run must
  compute as it did before, or its loss curve would not match the uninterrupted one).
  Inductor's cache lives in the user cache folder (it survives a reboot, unlike torch's
  default under /tmp).
- **Attention**: CPU training in bf16 uses SDPA's math kernel: torch's CPU flash-attention
  backward in bf16 took ~47% of the compiled demo step (T = 128); the math formulation is
  plain matmuls plus a softmax inductor fuses (11.5k -> 18.5k tokens/s on 2 cores).

A run decides once: the choice is recorded in the run (`as_record()`: trainer_state.pt, the
start event of metrics.jsonl, meta.json) and `--resume` keeps it (`resumed`) whatever the
probe or its cache would say now, so a resumed run computes exactly as the uninterrupted one
(explicit `train.dtype` / `train.compile` values still win; another kind of device decides
anew). The probe never touches the random state a run draws from (it runs inside its own
fork of the CPU generator), so a cold and a warm probe cache give the same losses.

`describe()` is the line the run prints first ("why" included); `slm-train eval` and the
in-run validation use the same dtype (forward only; compile is left to training): the
dtype the checkpoint's run recorded, on the same kind of device, and the same matmul
precision (`set_matmul_precision`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch

from slm_tui.config import ModelConfig, TrainConfig
from slm_tui.devices import cache_dir, cpu_info
from slm_tui.fileio import atomic_write_text

DTYPES = ("float32", "bfloat16")
WHY_LIMIT = 400  # characters of the reason kept in a run's record
KEPT = "as the run started: "  # a resumed run's reason, before the one it started with
COMPILE_MIN_STEPS = 300  # optimizer steps left before compiling on CPU pays its warm-up
PROBE_MARGIN = 1.05  # bf16 must be this much faster in the probe to be chosen
PROBE_FILE = "speed-probe.json"


@dataclass(frozen=True)
class SpeedChoice:
    dtype: str  # "float32" | "bfloat16": the autocast dtype of forward and backward
    compile: bool
    math_attention: bool  # SDPA's math kernel instead of flash (CPU bf16 training)
    why: str  # one line: what decided each part

    def describe(self) -> str:
        parts = ["bf16 autocast" if self.dtype == "bfloat16" else "float32"]
        parts.append("torch.compile" if self.compile else "eager")
        if self.math_attention:
            parts.append("math attention")
        return f"{' + '.join(parts)} ({self.why})"

    def as_record(self, device: torch.device) -> dict[str, Any]:
        """What a run keeps of its choice (trainer_state.pt, meta.json, the start event)."""
        return {
            "device": device.type,
            "dtype": self.dtype,
            "compile": self.compile,
            "math_attention": self.math_attention,
            "why": self.why[:WHY_LIMIT],
        }


def recorded_choice(record: Any) -> SpeedChoice | None:
    """The SpeedChoice an `as_record()` dict holds; None when it is missing or malformed
    (a checkpoint saved before runs recorded their choice, or a damaged one)."""
    if not isinstance(record, dict):
        return None
    dtype, compiled, math_attention = (
        record.get(k) for k in ("dtype", "compile", "math_attention")
    )
    why = record.get("why", "")
    if (
        dtype not in DTYPES
        or not isinstance(compiled, bool)
        or not isinstance(math_attention, bool)
        or not isinstance(record.get("device"), str)
        or not isinstance(why, str)
    ):
        return None
    return SpeedChoice(dtype, compiled, math_attention, why[:WHY_LIMIT])


def resumed(
    record: Any,
    tc: TrainConfig,
    device: torch.device,
    model_cfg: ModelConfig,
    micro: int,
    steps: int,
) -> SpeedChoice:
    """The choice of a resumed run: the one it recorded when it started, so it computes as
    the uninterrupted run would have, whatever the probe (or its cache) says now. Explicit
    `train.dtype` / `train.compile` values win; a run recorded on another kind of device (or
    before runs recorded their choice) decides anew with `choose`."""
    saved = recorded_choice(record)
    if saved is None or record.get("device") != device.type:
        return choose(tc, device, model_cfg, micro, steps)
    dtype = saved.dtype if tc.dtype == "auto" else tc.dtype
    compiled = saved.compile if isinstance(tc.compile, str) else tc.compile
    first = saved.why.removeprefix(KEPT)  # a run resumed before: say it once
    why = [f"{KEPT}{first}" if first else KEPT.removesuffix(": ")]
    if dtype != saved.dtype:
        why.append(f"train.dtype {dtype}")
    if compiled != saved.compile:
        why.append(f"train.compile {str(compiled).lower()}")
    math_attention = (
        saved.math_attention
        if dtype == saved.dtype
        else (device.type == "cpu" and dtype == "bfloat16")
    )
    return SpeedChoice(dtype, compiled, math_attention, "; ".join(why))


def cpu_bf16_unit(flags: frozenset[str] | None) -> str | None:
    """ "AMX-BF16", "AVX512-BF16", "ARM BF16", "none" (no bf16 instructions), or None when
    the flags are unknown."""
    if flags is None:
        return None
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    if "bf16" in flags:
        return "ARM BF16"
    return "none"


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use, if there is one."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def use_inductor_cache() -> None:
    """Keep inductor's compiled kernels in the user cache folder (unless already set)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")


def choose(
    tc: TrainConfig,
    device: torch.device,
    model_cfg: ModelConfig,
    micro: int,
    steps: int,
    *,
    flags: frozenset[str] | bool | None = True,
) -> SpeedChoice:
    """The dtype, compile and attention choice for training `model_cfg` on `device` with
    micro-batches of `micro` rows, in a run of `steps` optimizer steps. `flags` (tests):
    True reads the CPU's own; a set or None stands for what a CPU reports."""
    name, found = cpu_info()
    if flags is not True:
        found = flags  # type: ignore[assignment]
    why: list[str] = []

    if tc.dtype != "auto":
        dtype = tc.dtype
        why.append(f"train.dtype {dtype}")
    elif device.type == "cuda":
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
        why.append("CUDA" + (" with bf16" if dtype == "bfloat16" else " without bf16"))
    elif device.type == "cpu":
        unit = cpu_bf16_unit(found)
        if unit == "AMX-BF16":
            dtype = "bfloat16"
            why.append("AMX-BF16 in the CPU flags")
        elif unit == "none":
            dtype = "float32"
            why.append("no bf16 instructions in the CPU flags")
        else:
            fp32, bf16, cached = probe(name, found, model_cfg, micro)
            dtype = "bfloat16" if fp32 > bf16 * PROBE_MARGIN else "float32"
            what = unit or "unknown CPU flags"
            why.append(
                f"{what}: measured bf16 {1000 * bf16:.0f} ms vs float32 {1000 * fp32:.0f} ms "
                f"a micro-step{' (cached)' if cached else ''}"
            )
    else:
        dtype = "float32"
        why.append(f"{device.type}: float32")

    if isinstance(tc.compile, bool):
        compiled = tc.compile
        why.append(f"train.compile {str(compiled).lower()}")
    elif device.type == "cuda":
        compiled = True
        why.append("compiled on CUDA")
    elif device.type != "cpu":
        compiled = False
        why.append(f"no compile on {device.type}")
    elif cxx_compiler() is None:
        compiled = False
        why.append("no C++ compiler for torch.compile")
    elif steps < COMPILE_MIN_STEPS:
        compiled = False
        why.append(f"{steps} steps are too few to repay compiling")
    else:
        compiled = True
        why.append(f"{steps:,} steps repay compiling")
    math_attention = device.type == "cpu" and dtype == "bfloat16"
    return SpeedChoice(dtype, compiled, math_attention, "; ".join(why))


def eval_dtype(
    tc: TrainConfig,
    device: torch.device,
    model_cfg: ModelConfig,
    micro: int,
    record: Any = None,
) -> str:
    """The dtype evaluation runs in: with `train.dtype: auto`, the one the checkpoint's run
    recorded (`record`, from meta.json) when it trained on this kind of device, so `slm-train
    eval` computes what the in-run validation did; else the choice training would make now
    (compile aside)."""
    saved = recorded_choice(record)
    if tc.dtype == "auto" and saved is not None and record.get("device") == device.type:
        return saved.dtype
    return choose(tc, device, model_cfg, micro, 0).dtype


def set_matmul_precision(device: torch.device) -> None:
    """The float32 matmul precision training runs with (TF32 on CUDA), set for evaluation
    too: in-run validation runs under it, so `slm-train eval` must, to compute the same."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")


def _probe_key(name: str, flags: frozenset[str] | None, model_cfg: ModelConfig, micro: int) -> str:
    shape = (
        f"{model_cfg.vocab_size}v {model_cfg.n_layer}L {model_cfg.d_model}d {model_cfg.n_head}h "
        f"{model_cfg.n_kv_head}kv {model_cfg.mlp} {model_cfg.mlp_hidden}m "
        f"{micro}x{model_cfg.context_length}"
    )
    digest = hashlib.sha256(" ".join(sorted(flags or ())).encode()).hexdigest()[:12]
    threads = torch.get_num_threads()
    return f"{name} | flags {digest} | torch {torch.__version__} | {threads} threads | {shape}"


def probe(
    name: str, flags: frozenset[str] | None, model_cfg: ModelConfig, micro: int
) -> tuple[float, float, bool]:
    """(float32 s, bf16 s) for one forward+backward micro-step of this shape on the CPU, and
    whether they came from the cache. Measured once per key; the random state is untouched
    (see `_measure`)."""
    path = cache_dir() / PROBE_FILE
    key = _probe_key(name, flags, model_cfg, micro)
    cache: dict = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(path.read_text(encoding="utf-8"))
        cache = loaded if isinstance(loaded, dict) else {}
    hit = cache.get(key)
    if isinstance(hit, dict) and all(
        isinstance(hit.get(k), float) for k in ("float32", "bfloat16")
    ):
        return hit["float32"], hit["bfloat16"], True
    fp32, bf16 = _measure("float32", model_cfg, micro), _measure("bfloat16", model_cfg, micro)
    cache[key] = {"float32": fp32, "bfloat16": bf16, "measured": time.strftime("%Y-%m-%d")}
    with contextlib.suppress(OSError):  # an unwritable cache only means measuring again
        atomic_write_text(path, json.dumps(cache, indent=1) + "\n", make_parents=True)
    return fp32, bf16, False


def _measure(dtype: str, model_cfg: ModelConfig, micro: int, steps: int = 3) -> float:
    """Seconds of the fastest of `steps` forward+backward passes (after one warm-up), in
    train mode as training runs them. Everything runs inside a fork of the CPU generator:
    the model's initial weights and its dropout masks draw from it, and the run's random
    state (seeded or restored from a checkpoint before this may run) comes back exactly as
    it was. The probe runs on the CPU only, so no CUDA generator is touched."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from slm_tui.model import GPT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT(model_cfg)
        T = model_cfg.context_length
        idx = torch.randint(0, model.vocab_size, (micro, T + 1))
        x, y = idx[:, :-1], idx[:, 1:]
        times = []
        for i in range(steps + 1):
            start = time.perf_counter()
            kernel = (
                sdpa_kernel(SDPBackend.MATH) if dtype == "bfloat16" else contextlib.nullcontext()
            )
            with kernel, torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16"):
                loss = model(x, y)[1]
            loss.backward()
            if i:  # the first pass warms up
                times.append(time.perf_counter() - start)
    return min(times)
