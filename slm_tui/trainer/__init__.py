"""Training and evaluation: `train(config, output, ...)` and `evaluate(checkpoint, ...)`.

Modules: `loop` (the training loop, signals), `run` (a run's parts and state, built fresh or
restored for an exact resume, saved with each checkpoint), `step` (one optimizer step),
`optim` (AdamW / Muon, warmup + cosine or warmup-stable-decay), `distributed` (torchrun/DDP),
`prepare` (output folder rules, tokenizer and shards before training, every bad-input
check), `evaluation` (validation loss, bits per byte, `slm-train eval`, sample
continuations), `report` (the records, reporter hooks, metrics.jsonl, loss.png). Library
code: nothing here prints; the CLI passes a `Reporter`.

Importing the package does not import torch: `Reporter` and the records are loaded at
once, `train`, `evaluate` and the rest on first use, so `slm-train --help` stays quick.
"""

from __future__ import annotations

from slm_tui.lazy import lazy_exports
from slm_tui.trainer.report import (
    EvalRecord,
    EventRecord,
    Reporter,
    RunStart,
    Sample,
    SamplesRecord,
    TrainRecord,
)

# name -> the module that defines it (imported on first use: these need torch)
_LAZY = {
    "EvalResult": "evaluation",
    "TrainResult": "loop",
    "evaluate": "evaluation",
    "lr_multiplier": "optim",
    "train": "loop",
}


__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "EvalRecord",
    "EventRecord",
    "Reporter",
    "RunStart",
    "Sample",
    "SamplesRecord",
    "TrainRecord",
    *_LAZY,
]
