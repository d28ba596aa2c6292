"""Text generation: sampling settings, the sampler pipeline, the streaming engine, batches.

One engine serves the TUI (`generate`, a stream of events read with live settings) and
scripts (`generate_batch`, many prompts decoded together). Modules:

- `settings`: `SamplingSettings` (frozen, validated, the defaults), `PRESETS`, `LiveSettings`
- `samplers`: penalty → top-k → top-p → min-p → temperature → sample, pure functions
- `text`: token bytes → whole-UTF-8 text deltas, stop strings across token boundaries
- `engine`: the KV-cache decoding core (prefill, one token per step, sliding window)
- `fastpath`: a fused one-token decode step for the default model on CPU
- `stream`: `generate()` and its `Event`s; `batch`: `generate_batch()`
"""

from slm_tui.generation.batch import GenerationResult, generate_batch
from slm_tui.generation.engine import prepare_prompt, window_keep
from slm_tui.generation.samplers import (
    apply_repetition_penalty,
    apply_temperature,
    min_p_filter,
    sample_from_logits,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from slm_tui.generation.settings import (
    DEFAULTS,
    FIELDS,
    PRESETS,
    LiveSettings,
    SamplingSettings,
    preset,
)
from slm_tui.generation.stream import Event, TokenAlt, generate

__all__ = [
    "DEFAULTS",
    "FIELDS",
    "PRESETS",
    "Event",
    "GenerationResult",
    "LiveSettings",
    "SamplingSettings",
    "TokenAlt",
    "apply_repetition_penalty",
    "apply_temperature",
    "generate",
    "generate_batch",
    "min_p_filter",
    "prepare_prompt",
    "preset",
    "sample_from_logits",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
    "window_keep",
]
