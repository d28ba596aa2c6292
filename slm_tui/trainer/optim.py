"""Optimizers and learning-rate schedules.

- Schedules are pure functions of the optimizer step (`lr_multiplier`), so resuming needs
  nothing but the step: linear warmup, then cosine to `min_lr_ratio`, or warmup-stable-decay
  (flat at the peak, then a linear decay over the last `decay_fraction` of the steps).
- AdamW (fused kernel where the device has one) with weight decay on matrices and
  embeddings only; norms' gains and biases are not decayed (nanoGPT's split).
- `optimizer: muon` uses `torch.optim.Muon` (Newton-Schulz orthogonalised momentum) for the
  2-D weight matrices inside the blocks, and AdamW for what Muon is not meant for:
  embeddings, the output head, norms and biases.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from slm_tui.config import TrainConfig
from slm_tui.errors import ConfigError


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """The schedule's factor on the peak learning rate for optimizer step `step` (0-based)."""
    max_steps = max(cfg.max_steps, 1)
    warmup = min(cfg.warmup_steps, max_steps)
    if step < warmup:
        return (step + 1) / warmup
    floor = cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * max_steps))
        decay_start = max(warmup, max_steps - decay_steps)
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start + 1) / max(1, max_steps - decay_start))
        return 1.0 - (1.0 - floor) * progress
    span = max(1, max_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _fused_ok(device: torch.device) -> bool:
    # Fused AdamW exists for CUDA, MPS and (torch >= 2.4) CPU; one kernel per step instead of
    # a dozen foreach launches. Fall back quietly where the build lacks it.
    return device.type in ("cuda", "cpu", "mps")


def _split_params(model: nn.Module) -> tuple[list, list, list]:
    """(matrices for Muon, decayed AdamW params, non-decayed AdamW params).

    Embedding tables and any Linear producing vocabulary logits go to AdamW (decayed);
    the other 2-D weights are block matrices; 1-D params (gains, biases) are not decayed.
    """
    special: set[int] = set()
    vocab = getattr(getattr(model, "cfg", None), "vocab_size", None)
    for module in model.modules():
        is_head = isinstance(module, nn.Linear) and module.out_features == vocab
        if isinstance(module, nn.Embedding) or is_head:
            special.add(id(module.weight))
    matrices, decay, no_decay, seen = [], [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))  # tied weights appear once
        if p.ndim < 2:
            no_decay.append(p)
        elif id(p) in special or p.ndim != 2:
            decay.append(p)
        else:
            matrices.append(p)
    return matrices, decay, no_decay


class Optimizers:
    """One or two torch optimizers stepped together, with the schedule applied per step."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        for opt in optimizers:
            for group in opt.param_groups:
                group["peak_lr"] = group["lr"]

    def set_step(self, step: int, cfg: TrainConfig) -> float:
        """Set every group's lr for optimizer step `step`; returns the AdamW lr (for logs)."""
        mult = lr_multiplier(step, cfg)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["peak_lr"] * mult
        return cfg.lr * mult

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        states = state.get("optimizers", [])
        if len(states) != len(self.optimizers):
            raise ConfigError(
                "the checkpoint's optimizer state does not match train.optimizer; "
                "resume with the optimizer the run started with"
            )
        for opt, sd in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(sd)
            for group in opt.param_groups:
                group.setdefault("peak_lr", group["lr"])


def build_optimizers(model: nn.Module, cfg: TrainConfig, device: torch.device) -> Optimizers:
    """AdamW (or Muon + AdamW) over `model`'s parameters, as `cfg.optimizer` says."""
    matrices, decay, no_decay = _split_params(model)
    fused = _fused_ok(device)

    def adamw(groups: list[dict[str, Any]]) -> torch.optim.AdamW:
        betas = (cfg.beta1, cfg.beta2)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused)

    if cfg.optimizer == "muon":
        if not hasattr(torch.optim, "Muon"):
            raise ConfigError(
                f"train.optimizer muon needs torch.optim.Muon (torch >= 2.9); this is torch "
                f"{torch.__version__}; use train.optimizer=adamw"
            )
        adam_groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opts: list[torch.optim.Optimizer] = [
            adamw(adam_groups),
            torch.optim.Muon(matrices, lr=cfg.muon_lr, weight_decay=cfg.weight_decay),
        ]
    else:
        groups = [
            {"params": matrices + decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opts = [adamw(groups)]
    return Optimizers(opts)
