"""Pluggable tokenizers: the protocol, a registry of kinds, and the built-in kinds.

Public API: `train_tokenizer(kind, stories, vocab_size, output_dir, **options)`,
`load_tokenizer(path)`, `available_kinds()`, `register_tokenizer(kind, cls)`, `Tokenizer`.
Built in: `sentencepiece-bpe` (default), `sentencepiece-unigram`, `byte`, `bytelevel-bpe`
(GPT-2-style byte-level BPE trained with Hugging Face `tokenizers`), `gpt2` (GPT-2's BPE
through tiktoken, pretrained: the seed notebook's tokenizer) and `sentencepiece` (any
SentencePiece model as found, for imported checkpoints; nothing to train); other packages add
kinds through the entry-point group `slm_tui.tokenizers` (pyproject.toml declares the
built-ins there too). Code outside this
package never hard-codes special ids: it reads `bos_id`, `eos_id`, `pad_id`, `unk_id`.
"""

from slm_tui.tokenizers.base import META_FILE, Tokenizer
from slm_tui.tokenizers.registry import (
    DEFAULT_KIND,
    ENTRY_POINT_GROUP,
    available_kinds,
    get_tokenizer_class,
    load_tokenizer,
    register_tokenizer,
    train_tokenizer,
)

__all__ = [
    "DEFAULT_KIND",
    "ENTRY_POINT_GROUP",
    "META_FILE",
    "Tokenizer",
    "available_kinds",
    "get_tokenizer_class",
    "load_tokenizer",
    "register_tokenizer",
    "train_tokenizer",
]
