"""Training and evaluation: `train(config, output, ...)` and `evaluate(checkpoint, ...)`.

Modules: `loop` (the training loop, exact resume, signals), `optim` (AdamW / Muon, warmup +
cosine or warmup-stable-decay), `distributed` (device choice, torchrun/DDP), `prepare`
(output folder rules, tokenizer and shards before training, every bad-input check),
`evaluate` (validation loss, bits per byte, sample continuations), `report` (reporter hooks,
metrics.jsonl, loss.png). Library code: nothing here prints; the CLI passes a `Reporter`.
"""

from __future__ import annotations

from slm_tui.trainer.evaluate import evaluate
from slm_tui.trainer.loop import TrainResult, train
from slm_tui.trainer.optim import lr_multiplier
from slm_tui.trainer.report import Reporter

__all__ = ["Reporter", "TrainResult", "evaluate", "lr_multiplier", "train"]
