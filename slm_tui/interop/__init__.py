"""Interop: exports to Hugging Face transformers and GGUF (llama.cpp, ollama), and imports
from Hugging Face, each judged by the implementation it targets (tests/test_interop.py).

- `export`: `export_checkpoint(checkpoint, output, fmt=slm|hf|gguf, dtype, force)`
- `hf_export` + `hf_layout` + `hf_tokenizer`: the `LlamaForCausalLM` / `GPT2LMHeadModel`
  folder, weights split out of our fused projections, tokenizer.json built directly from
  the SentencePiece model (`sp_model`: a protobuf-free reader of SentencePiece files)
- `gguf_export`: one `.gguf` file, llama architecture, q/k permuted to llama.cpp's layout
- `hf_import` + `hf_tokenizer_import`: an HF Llama / GPT-2 folder -> a checkpoint of ours
- `common`: `InteropError`, the architecture mapping, output checks

Importing this package imports nothing heavy: torch loads with the modules that need it,
`transformers` and `gguf` (the `interop` extra) only inside the functions that use them.
"""

from slm_tui.interop.common import InteropError

__all__ = ["InteropError"]
