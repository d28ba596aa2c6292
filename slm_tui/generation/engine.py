"""The decoding core: B rows of token ids through one KV cache, one token per step.

It knows nothing about text (nanochat's seam): prompts arrive as id lists, tokens leave as
id tensors. `generate()` drives it with one row, `generate_batch()` with many.

- Prefill once (`last_only=True`: only the last position's logits go through the head).
- Left-padded rows: positions = cumsum(mask) - 1 and a key mask over cache slots, so each
  row sees exactly its own tokens at the positions it would have alone.
- Sliding window: a row whose context is full keeps its last 3/4 context of tokens
  (`window_keep`) and is re-prefilled from position 0, then decoding goes on. With one row
  the cache is reset and refilled. With several, the other rows' keys and values are kept
  (shifted left in the cache, not recomputed) and only the sliding rows are prefilled,
  in a scratch cache copied into place, so a row slides exactly when it would alone.
- Each row samples with its own `torch.Generator`: one uniform per token, drawn in blocks.
- Per token: one decode step through the model's `FusedDecoder` (the same function as
  `GPT.forward` with about half the ops; `fused=False` uses `GPT.forward`, for comparison),
  the sampler on (B, V), no host sync (the caller reads the chosen ids once, to emit them).
- The model must be in eval mode (no dropout): a model in training mode is refused.
"""

from __future__ import annotations

import secrets

import torch
from torch import Tensor

from slm_tui.errors import GenerationError
from slm_tui.generation.samplers import sample_next
from slm_tui.generation.settings import MAX_SEED, SamplingSettings

# Each row's generator draws this many uniforms at a time (one is used per token): fewer
# calls per token, the same stream whatever the batch.
UNIFORM_BLOCK = 64


def window_keep(context_length: int) -> int:
    """How many tokens a full context keeps when it slides (and an over-long prompt keeps)."""
    return max(1, context_length * 3 // 4)


def prepare_prompt(tokenizer, prompt: str, context_length: int) -> tuple[list[int], bool]:
    """[BOS] + ids of `prompt` (an empty prompt is BOS alone), and whether it was cut.

    A prompt longer than the context keeps its last `window_keep(context_length)` tokens
    (so there is room to write); the caller warns the user when the flag is True.
    """
    if not isinstance(prompt, str):
        raise GenerationError(f"a prompt must be text, got {type(prompt).__name__}")
    ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
    if len(ids) > context_length:
        return ids[-window_keep(context_length) :], True
    return ids, False


def fresh_seed() -> int:
    """A random seed small enough to read and retype (reported so a story can be replayed)."""
    return secrets.randbelow(2**32)


def row_seeds(n: int, seed: int | None) -> list[int]:
    """Seeds for the n rows of a job: seed + i when a seed is given, else fresh ones."""
    if seed is None:
        return [fresh_seed() for _ in range(n)]
    return [(seed + i) % (MAX_SEED + 1) for i in range(n)]


def model_device(model) -> torch.device:
    return next(model.parameters()).device


class Decoder:
    """B rows decoding together. After construction `logits` (B, V) predict each row's next
    token; `sample()` picks them, `advance()` feeds them and refreshes `logits`, `finish(row)`
    marks a row done (it stays in the batch, its output ignored, and never slides)."""

    @torch.inference_mode()
    def __init__(
        self, model, contexts: list[list[int]], seeds: list[int], *, fused: bool = True
    ) -> None:
        if model.training:
            raise GenerationError("generation needs the model in eval mode (model.eval())")
        self.model = model
        self.context_length = model.cfg.context_length
        self.keep = window_keep(self.context_length)
        self.device = model_device(model)
        self.batch = len(contexts)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        self.seqs = [list(c) for c in contexts]  # each row's tokens: prompt + generated
        self.finished = [False] * self.batch
        self.cache = model.new_cache(self.batch)
        self.padded = self.batch > 1
        self.step = model.fused_decoder() if fused else None  # None: GPT.forward
        # History for the repetition penalty, right-aligned: every row gains one token per
        # step, so column n is "step n" for all rows; -1 marks left padding.
        width = max(len(c) for c in contexts)
        self.hist = torch.full((self.batch, width + 256), -1, dtype=torch.long, device=self.device)
        for i, c in enumerate(contexts):
            self.hist[i, width - len(c) : width] = torch.tensor(c, dtype=torch.long)
        self.hist_len = width
        # Cache bookkeeping (set by _prefill / _slide): each row's tokens in the cache, and,
        # for padded batches, the next position of each row and which slots hold real tokens.
        self.lengths = [len(c) for c in contexts]
        self.positions = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.key_mask = torch.zeros(
            self.batch, self.context_length, dtype=torch.bool, device=self.device
        )  # (B, S) True = a real token
        # Uniforms are drawn per row in blocks, one used per token.
        self._uniforms = torch.empty(self.batch, UNIFORM_BLOCK, device=self.device)
        self._drawn = UNIFORM_BLOCK  # all used: the first sample() draws a block
        self.logits = self._prefill(contexts)  # (B, V)

    def finish(self, row: int) -> None:
        """Row `row` is done: it keeps its slot in the batch but is never slid again."""
        self.finished[row] = True

    # --- prefill and sliding -----------------------------------------------------------------
    def _prefill(self, contexts: list[list[int]]) -> Tensor:
        """Fill the (reset) cache with left-padded contexts; return last logits (B, V)."""
        self.cache.reset()
        self.lengths = [len(c) for c in contexts]
        if not self.padded:
            idx = torch.tensor([contexts[0]], dtype=torch.long, device=self.device)
            logits, _ = self.model(idx, cache=self.cache, last_only=True)
            return logits[:, -1]
        width = max(self.lengths)
        idx, mask = self._left_pad(contexts, width)
        self.key_mask.zero_()
        self.key_mask[:, :width] = mask
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        logits, _ = self.model(
            idx, cache=self.cache, positions=positions, key_mask=mask, last_only=True
        )
        self.positions = torch.tensor(self.lengths, dtype=torch.long, device=self.device)
        return logits[:, -1]

    def _left_pad(self, contexts: list[list[int]], width: int) -> tuple[Tensor, Tensor]:
        idx = torch.zeros(len(contexts), width, dtype=torch.long)
        mask = torch.zeros(len(contexts), width, dtype=torch.bool)
        for i, c in enumerate(contexts):
            if c:
                idx[i, width - len(c) :] = torch.tensor(c, dtype=torch.long)
                mask[i, width - len(c) :] = True
        return idx.to(self.device), mask.to(self.device)

    def _slide(self) -> None:
        """The cache is full: rows at the full context keep their last `keep - 1` tokens
        (the token about to be fed makes `keep`); other rows keep their entries."""
        full = [
            i
            for i in range(self.batch)
            if not self.finished[i] and self.lengths[i] >= self.context_length
        ]
        if not self.padded:
            if self.keep > 1:
                self._prefill([self.seqs[0][-self.keep : -1]])
            else:  # a 1-token window: the fed token starts an empty cache
                self.cache.reset()
                self.lengths = [0]
            return
        S, C = self.cache.length, self.context_length
        new_len = [
            0 if self.finished[i] else self.keep - 1 if i in full else self.lengths[i]
            for i in range(self.batch)
        ]
        width = max(max(new_len), 1)
        # Shift every row's newest `width` slots to the front (clone: the ranges overlap).
        for t in (self.cache.k, self.cache.v):  # (L, B, H, S, hd)
            t[:, :, :, :width] = t[:, :, :, S - width : S].clone()
        if full and self.keep > 1:
            contexts = [self.seqs[i][-self.keep : -1] for i in full]  # equal lengths: no pad
            scratch = self.model.new_cache(len(full), self.keep - 1)
            idx = torch.tensor(contexts, dtype=torch.long, device=self.device)
            self.model(idx, cache=scratch, last_only=True)
            rows = torch.tensor(full, dtype=torch.long, device=self.device)
            n = self.keep - 1
            self.cache.k[:, rows, :, width - n : width] = scratch.k[:, :, :, :n]
            self.cache.v[:, rows, :, width - n : width] = scratch.v[:, :, :, :n]
        self.cache.length = width
        slots = torch.arange(C, device=self.device)
        starts = torch.tensor([width - n for n in new_len], device=self.device)
        self.key_mask = (slots.unsqueeze(0) >= starts.unsqueeze(1)) & (slots < width)
        self.lengths = new_len
        self.positions = torch.tensor(new_len, dtype=torch.long, device=self.device)

    # --- the per-token path ------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, settings: SamplingSettings) -> Tensor:
        """Each row's next token id (B,), from `logits` and the row's own generator."""
        if self._drawn == UNIFORM_BLOCK:
            self._uniforms = torch.stack(
                [
                    torch.rand(UNIFORM_BLOCK, generator=g, device=self.device)
                    for g in self.generators
                ]
            )  # (B, UNIFORM_BLOCK)
            self._drawn = 0
        uniform = self._uniforms[:, self._drawn : self._drawn + 1]  # (B, 1)
        self._drawn += 1
        window = settings.repetition_window
        history = self.hist[:, max(0, self.hist_len - window) : self.hist_len]
        return sample_next(self.logits, settings, history, uniform, may_pad=self.padded)

    @torch.inference_mode()
    def advance(self, next_ids: Tensor, next_list: list[int]) -> None:
        """Append the chosen tokens (as a (B,) tensor and the same ids on the host) and run
        one decode step, sliding first if the cache is full."""
        for i, tok in enumerate(next_list):
            self.seqs[i].append(tok)
        if self.hist_len == self.hist.size(1):
            self.hist = torch.cat([self.hist, torch.full_like(self.hist, -1)], dim=1)
        self.hist[:, self.hist_len] = next_ids
        self.hist_len += 1
        if self.cache.length >= self.cache.max_len:
            self._slide()
        idx = next_ids.view(self.batch, 1)
        positions = key_mask = None
        if self.padded:
            slot = self.cache.length
            self.key_mask[:, slot] = True
            # Rows that all fill every slot (equal prompts, no slide apart yet) need no mask
            # and share one position: the cheaper, unmasked attention.
            if min(self.lengths) < slot:
                positions, key_mask = self.positions.view(-1, 1), self.key_mask[:, : slot + 1]
        if self.step is not None:
            logits = self.step(idx, self.cache, positions, key_mask)  # (B, V)
        else:
            out, _ = self.model(
                idx, cache=self.cache, positions=positions, key_mask=key_mask, last_only=True
            )
            logits = out[:, -1]
        if self.padded:
            self.positions += 1
        self.lengths = [n + 1 for n in self.lengths]
        self.logits = logits  # (B, V)
