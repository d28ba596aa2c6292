"""Interop: exports to Hugging Face transformers and GGUF (llama.cpp, ollama), and imports
from Hugging Face, each judged by the implementation it targets (tests/test_interop.py).

- `export`: `export_checkpoint(checkpoint, output, fmt=slm|hf|gguf, dtype, force)`
- `hf_export` + `hf_layout` + `hf_tokenizer`: the `LlamaForCausalLM` / `GPT2LMHeadModel` /
  `GPTNeoForCausalLM` folder, weights split out of our fused projections, tokenizer.json
  built directly from the SentencePiece model (`sp_model`: a protobuf-free reader of
  SentencePiece files) or the byte-level vocabulary and merges (`hf_bytelevel`)
- `gguf_export`: one `.gguf` file, llama architecture, q/k permuted to llama.cpp's layout;
  llama.cpp's `llama` (SentencePiece) or `gpt2` (byte-level BPE) tokenizer
- `hf_import` + `hf_tokenizer_import` + `hf_bytelevel`: an HF Llama / GPT-2 / GPT-Neo folder
  -> a checkpoint of ours
- `common`: `InteropError`, the architecture mapping, output checks

Importing this package imports nothing heavy: torch loads with the modules that need it,
`transformers` and `gguf` (the `interop` extra) only inside the functions that use them.
"""

from slm_tui.interop.common import InteropError

__all__ = ["InteropError"]
