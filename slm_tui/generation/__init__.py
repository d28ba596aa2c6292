"""Text generation: sampling settings, the sampler pipeline, the streaming engine, batches.

One engine serves the TUI (`generate`, a stream of events read with live settings) and
scripts (`generate_batch`, many prompts decoded together). Modules:

- `settings`: `SamplingSettings` (frozen, validated, the defaults), `PRESETS`, `LiveSettings`
- `events`: `Event` and `TokenAlt`, what a story stream emits (torch-free)
- `samplers`: penalty → top-k → top-p → min-p → temperature → sample, pure functions
- `text`: token bytes → whole-UTF-8 text deltas, stop strings across token boundaries
- `engine`: the KV-cache decoding core (prefill, one token per step, sliding window)
- `stream`: `generate()`, one story as events; `batch`: `generate_batch()`

Importing the package does not import torch: the settings and events are loaded at once,
the engine's names (`generate`, `generate_batch`, the samplers, ...) on first use. So the
TUI's widgets and anything else that only reads settings or events stay light.
"""

from __future__ import annotations

from slm_tui.generation.events import FINISH_REASONS, Event, GenerationResult, TokenAlt
from slm_tui.generation.settings import (
    DEFAULTS,
    PRESETS,
    SETTING_NAMES,
    LiveSettings,
    SamplingSettings,
    preset,
)
from slm_tui.lazy import lazy_exports

# name -> the module that defines it (imported on first use: these need torch)
_ENGINE_NAMES = {
    "generate_batch": "batch",
    "generate": "stream",
    "prepare_prompt": "engine",
    "window_keep": "engine",
    "apply_repetition_penalty": "samplers",
    "apply_temperature": "samplers",
    "min_p_filter": "samplers",
    "sample_from_logits": "samplers",
    "sample_next": "samplers",
    "top_k_filter": "samplers",
    "top_p_filter": "samplers",
}


__getattr__ = lazy_exports(__name__, _ENGINE_NAMES)

__all__ = [
    "DEFAULTS",
    "FINISH_REASONS",
    "PRESETS",
    "SETTING_NAMES",
    "Event",
    "GenerationResult",
    "LiveSettings",
    "SamplingSettings",
    "TokenAlt",
    "preset",
    *_ENGINE_NAMES,
]
