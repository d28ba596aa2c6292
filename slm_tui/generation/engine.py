"""The decoding core: rows of token ids through one KV cache, one token per step, with rows
joining and leaving between steps (continuous batching).

It knows nothing about text (nanochat's seam): prompts arrive as id lists, tokens leave as
id tensors, each row is named by a caller's tag. `generate()` drives it with one row,
`generate_batch()` and the server with many, refilling the batch as rows finish.

- Rows share cache slots and are right-aligned: every row's newest token is in the same
  slot. A row with fewer tokens has padding slots on its left, masked out (`key_mask`), and
  its own positions (RoPE / learned), so each row sees exactly its own tokens at the
  positions it would have alone.
- Joining (`add`): the new rows are prefilled together (left-padded among themselves) and
  their keys and values copied into free rows of the cache, right-aligned with the others
  (shifting the others right when the newcomers are longer). Leaving (`finish`): a row's
  place is taken by the last row (one row copied, not the cache), so the active rows stay
  a contiguous prefix of the preallocated cache.
- Sliding window: when the shared slots are full, rows at the full context keep their
  last 3/4 context of tokens (`window_keep`), re-prefilled from position 0 in a scratch
  cache and copied into place; the other rows keep their entries, shifted left. A row slides
  exactly when it would alone.
- Each row samples with its own `torch.Generator` (one uniform per token, drawn in blocks of
  64 per row) and its own settings (rows with equal settings share one sampler call): a
  row's draws never depend on what else is in the batch.
- Per token: one decode step through the model's `FusedDecoder` (slm_tui/decode.py: the
  same function as `GPT.forward` with about half the ops, one C call for one row;
  `fused=False` uses `GPT.forward`, for comparison), the sampler on (B, V), no host sync
  (the caller reads the chosen ids once, to emit them).
- The model must be in eval mode (no dropout): a model in training mode is refused.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from slm_tui.briefing import brief_prompt
from slm_tui.decode import GraphedSteps, bucket
from slm_tui.errors import GenerationError
from slm_tui.generation.samplers import sample_next
from slm_tui.generation.settings import MAX_SEED, SamplingSettings

if TYPE_CHECKING:
    from slm_tui.briefs import Brief
    from slm_tui.model import GPT
    from slm_tui.tokenizers.base import Tokenizer

# Each row's generator draws this many uniforms at a time (one is used per token): fewer
# calls per token, the same stream whatever the batch.
UNIFORM_BLOCK = 64
# The repetition-penalty history keeps at least this many of each row's newest tokens (more
# when a larger window is asked for).
HISTORY_KEEP = 256


def window_keep(context_length: int) -> int:
    """How many tokens a full context keeps when it slides (and an over-long prompt keeps)."""
    return max(1, context_length * 3 // 4)


def prepare_prompt(
    tokenizer: Tokenizer,
    prompt: str,
    context_length: int,
    *,
    brief: Brief | None = None,
    truncate: bool = True,
) -> tuple[list[int], bool]:
    """[BOS] + ids of `prompt` (an empty prompt is BOS alone), and whether it is longer than
    the context. With a `brief`, its block comes first (`briefing.brief_prompt`): every
    path to the model (`generate`, `generate_batch`, the server) builds its prompt here.

    A prompt longer than the context keeps its last `window_keep(context_length)` tokens
    (so there is room to write); the caller warns the user when the flag is True. With
    `truncate=False` the ids are returned whole (a caller that refuses such prompts).
    """
    if not isinstance(prompt, str):
        raise GenerationError(f"a prompt must be text, got {type(prompt).__name__}")
    ids = [tokenizer.bos_id, *tokenizer.encode(brief_prompt(brief, prompt))]
    if len(ids) > context_length:
        return (ids[-window_keep(context_length) :] if truncate else ids), True
    return ids, False


def fresh_seed() -> int:
    """A random seed small enough to read and retype (reported so a story can be replayed)."""
    return secrets.randbelow(2**32)


def row_seeds(n: int, seed: int | None) -> list[int]:
    """Seeds for the n rows of a job: seed + i when a seed is given, else fresh ones."""
    if seed is None:
        return [fresh_seed() for _ in range(n)]
    return [(seed + i) % (MAX_SEED + 1) for i in range(n)]


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def read_choices(
    logits: Tensor, next_ids: Tensor, top_n: int
) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """Each row's chosen id, its probability under the raw softmax, and the top_n (id, prob)
    alternatives, read to the host in one transfer. logits (B, V), next_ids (B,)."""
    B = logits.size(0)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, 1)
    chosen = logits.gather(1, next_ids.view(B, 1))  # (B, 1)
    parts = [next_ids.view(B).double(), (chosen - lse).exp().view(B).double()]
    if top_n:
        vals, idx = torch.topk(logits, top_n, dim=-1)  # (B, n)
        parts += [idx.flatten().double(), (vals - lse).exp().flatten().double()]
    packed = torch.cat(parts).tolist()
    out = []
    for r in range(B):
        top = [
            (int(packed[2 * B + r * top_n + j]), packed[2 * B + B * top_n + r * top_n + j])
            for j in range(top_n)
        ]
        out.append((int(packed[r]), packed[B + r], top))
    return out


class Decoder:
    """Rows decoding together, each named by a tag. `logits` (B, V) predict each row's next
    token, rows in `tags` order; `sample()` picks them, `advance()` feeds them and refreshes
    `logits`; `add()` prefills new rows, `finish()` takes rows out, between steps.

    `capacity` preallocates the cache for that many rows (it grows when more join)."""

    # Every per-row field, in `tags` order: tensors with one row per row, and host lists.
    # `add` appends to each and `finish` reorders each: a new per-row field goes here.
    ROW_TENSORS = ("positions", "key_mask", "hist", "_uniforms", "logits")
    ROW_LISTS = ("tags", "generators", "seqs", "lengths", "_drawn")

    @torch.inference_mode()
    def __init__(
        self,
        model: GPT,
        contexts: Sequence[Sequence[int]] = (),
        seeds: Sequence[int] = (),
        *,
        tags: Sequence[Hashable] | None = None,
        fused: bool = True,
        capacity: int = 0,
        static: bool | None = None,
    ) -> None:
        if model.training:
            raise GenerationError("generation needs the model in eval mode (model.eval())")
        self.model = model
        self.context_length = model.cfg.context_length
        self.keep = window_keep(self.context_length)
        self.device = model_device(model)
        self.step = model.fused_decoder() if fused else None  # None: GPT.forward
        # On a GPU with SLM_TUI_CUDA_GRAPHS=1 the step has fixed shapes and is replayed as
        # CUDA graphs (`GraphedSteps`); opt-in until a GPU run has measured and checked it
        # (written and tested on CPUs: the fixed-shape step, not the capture). `static`
        # forces the fixed-shape step without graphs (tests, on a CPU).
        self.graphs: GraphedSteps | None = None
        cuda_graphs = self.device.type == "cuda" and os.environ.get("SLM_TUI_CUDA_GRAPHS") == "1"
        if self.step is not None and (static or (static is None and cuda_graphs)):
            self.graphs = GraphedSteps(self.step, capture=cuda_graphs)
            capacity = bucket(max(1, capacity, len(contexts)))  # whole buckets of rows
        # The cache, preallocated for `capacity` rows; `kv` is the view over the active ones.
        self.cache = model.new_cache(max(1, capacity, len(contexts)))
        self.kv = self.cache.rows(0)
        # Per row, in `tags` order: the caller's tag, its generator, all its tokens (prompt +
        # generated), how many of them the cache holds, the next position (tensor), which
        # cache slots hold its tokens, its sampling history and drawn uniforms.
        self.tags: list[Hashable] = []
        self.generators: list[torch.Generator] = []
        self.seqs: list[list[int]] = []
        self.lengths: list[int] = []
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,)
        self.key_mask = torch.zeros(0, self.context_length, dtype=torch.bool, device=self.device)
        # History for the repetition penalty, right-aligned: every row gains one token per
        # step, so column n is "step n" for all rows; -1 marks a row's empty slots.
        self.hist = torch.full((0, HISTORY_KEEP), -1, dtype=torch.long, device=self.device)
        self.hist_len = 0
        self.hist_padded = False  # some row has -1 entries (rows of different lengths)
        self.window_kept = HISTORY_KEEP  # how many newest tokens `hist` keeps per row
        self._uniforms = torch.zeros(0, UNIFORM_BLOCK, device=self.device)  # (B, BLOCK)
        self._drawn: list[int] = []  # uniforms each row has used of its block
        self.logits = torch.zeros(0, model.vocab_size, device=self.device)  # (B, V)
        if contexts:
            self.add(contexts, seeds, tags=tags)

    @property
    def batch(self) -> int:
        return len(self.tags)

    # --- rows joining and leaving ----------------------------------------------------------
    @torch.inference_mode()
    def add(
        self,
        contexts: Sequence[Sequence[int]],
        seeds: Sequence[int],
        *,
        tags: Sequence[Hashable] | None = None,
    ) -> None:
        """Prefill new rows (contexts of 1 to context_length ids) and add them to the batch;
        their next-token logits join `logits`. Tags default to 0, 1, 2, ... in join order."""
        n = len(contexts)
        if n == 0:
            return
        if len(seeds) != n or (tags is not None and len(tags) != n):
            raise GenerationError(f"{n} rows need {n} seeds and tags")
        if any(not 1 <= len(c) <= self.context_length for c in contexts):
            raise GenerationError(f"a row needs 1 to {self.context_length} tokens of context")
        if tags is None:
            tags = list(range(len(self.tags), len(self.tags) + n))
        B, S = self.batch, self.kv.length
        width = max(len(c) for c in contexts)
        new_len = max(S, width)
        self._reserve(B + n)
        if B and width > S:  # the newcomers are longer: shift everyone right
            d = width - S
            for t in (self.cache.k, self.cache.v):  # (L, B, Hkv, S, hd)
                t[:, :B, :, d:width] = t[:, :B, :, :S].clone()
            self.key_mask = torch.cat(
                [self.key_mask.new_zeros(B, d), self.key_mask[:, : self.context_length - d]], 1
            )
        # Prefill the newcomers alone (left-padded among themselves), then copy them in.
        scratch = self.model.new_cache(n, width)
        idx, mask = self._left_pad(contexts, width)
        positions = key_mask = None
        if n > 1 and any(len(c) < width for c in contexts):
            positions, key_mask = (mask.long().cumsum(-1) - 1).clamp(min=0), mask
        logits, _ = self.model(
            idx, cache=scratch, positions=positions, key_mask=key_mask, last_only=True
        )
        start = new_len - width
        for t, src in ((self.cache.k, scratch.k), (self.cache.v, scratch.v)):
            t[:, B : B + n, :, start:new_len] = src
        rows_mask = torch.zeros(n, self.context_length, dtype=torch.bool, device=self.device)
        rows_mask[:, start:new_len] = mask
        self.key_mask = torch.cat([self.key_mask, rows_mask])
        self.kv = self.cache.rows(B + n)
        self.kv.length = new_len
        lengths = [len(c) for c in contexts]
        self.tags += list(tags)
        self.generators += [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        self.seqs += [list(c) for c in contexts]
        self.lengths += lengths
        self.positions = torch.cat([self.positions, torch.tensor(lengths, device=self.device)])
        self._add_history(contexts)
        self._uniforms = torch.cat([self._uniforms, self._uniforms.new_zeros(n, UNIFORM_BLOCK)])
        self._drawn += [UNIFORM_BLOCK] * n  # a block is drawn at the first sample
        self.logits = torch.cat([self.logits, logits[:, -1]])

    @torch.inference_mode()
    def finish(self, tags: Sequence[Hashable]) -> None:
        """Take the rows with these tags out of the batch (their tokens are forgotten)."""
        gone = set(tags)
        keep = [t not in gone for t in self.tags]
        if all(keep):
            return
        B, new_B = self.batch, sum(keep)
        # Fill each hole below the new size with a kept row from beyond it.
        holes = [i for i in range(new_B) if not keep[i]]
        movers = [i for i in range(new_B, B) if keep[i]]
        order = list(range(new_B))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
            for t in (self.cache.k, self.cache.v):
                t[:, hole] = t[:, mover]
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        for name in self.ROW_TENSORS:
            setattr(self, name, getattr(self, name)[index])
        for name in self.ROW_LISTS:
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in order])
        length = self.kv.length if new_B else 0
        self.kv = self.cache.rows(new_B)
        self.kv.length = length
        if new_B == 0:
            self.hist_len, self.hist_padded = 0, False

    def _reserve(self, rows: int) -> None:
        """Grow the preallocated cache (doubling) so it holds `rows` rows."""
        have = self.cache.k.size(1)
        if rows <= have:
            return
        bigger = self.model.new_cache(max(rows, 2 * have))
        bigger.k[:, :have] = self.cache.k
        bigger.v[:, :have] = self.cache.v
        self.cache = bigger
        length = self.kv.length
        self.kv = self.cache.rows(self.batch)
        self.kv.length = length

    def _left_pad(self, contexts: Sequence[Sequence[int]], width: int) -> tuple[Tensor, Tensor]:
        idx = torch.zeros(len(contexts), width, dtype=torch.long)
        mask = torch.zeros(len(contexts), width, dtype=torch.bool)
        for i, c in enumerate(contexts):
            idx[i, width - len(c) :] = torch.tensor(c, dtype=torch.long)
            mask[i, width - len(c) :] = True
        return idx.to(self.device), mask.to(self.device)

    def _add_history(self, contexts: Sequence[Sequence[int]]) -> None:
        """Append rows to the right-aligned history (their newest tokens last)."""
        width = max(len(c) for c in contexts)
        if self.batch == len(contexts):  # the first rows: start the history from them
            self.hist = torch.full(
                (0, width + HISTORY_KEEP), -1, dtype=torch.long, device=self.device
            )
            self.hist_len = width
        elif width > self.hist_len:  # longer than the history so far: pad everyone's left
            pad = self.hist.new_full((self.hist.size(0), width - self.hist_len), -1)
            self.hist = torch.cat([pad, self.hist], dim=1)
            self.hist_len = width
        rows = self.hist.new_full((len(contexts), self.hist.size(1)), -1)
        for i, c in enumerate(contexts):
            tail = list(c)[-self.window_kept :] if len(c) > self.window_kept else list(c)
            rows[i, self.hist_len - len(tail) : self.hist_len] = torch.tensor(tail)
        self.hist = torch.cat([self.hist, rows])
        self.hist_padded = self.hist_padded or self.batch > 1 or len(set(map(len, contexts))) > 1

    # --- sliding -----------------------------------------------------------------------------
    def _slide(self) -> None:
        """The shared slots are full: rows at the full context keep their last `keep - 1`
        tokens (the token about to be fed makes `keep`); other rows keep their entries."""
        C, S = self.context_length, self.kv.length
        full = [i for i in range(self.batch) if self.lengths[i] >= C]
        new_len = [self.keep - 1 if i in full else n for i, n in enumerate(self.lengths)]
        width = max(max(new_len), 1)
        # Shift every row's newest `width` slots to the front (clone: the ranges overlap).
        for t in (self.kv.k, self.kv.v):  # (L, B, H, S, hd)
            t[:, :, :, :width] = t[:, :, :, S - width : S].clone()
        if full and self.keep > 1:
            contexts = [self.seqs[i][-self.keep : -1] for i in full]  # equal lengths: no pad
            n = self.keep - 1
            scratch = self.model.new_cache(len(full), n)
            idx = torch.tensor(contexts, dtype=torch.long, device=self.device)
            self.model(idx, cache=scratch, last_only=True)
            rows = torch.tensor(full, dtype=torch.long, device=self.device)
            self.kv.k[:, rows, :, width - n : width] = scratch.k
            self.kv.v[:, rows, :, width - n : width] = scratch.v
        self.kv.length = width
        slots = torch.arange(C, device=self.device)
        starts = torch.tensor([width - n for n in new_len], device=self.device)
        self.key_mask = (slots.unsqueeze(0) >= starts.unsqueeze(1)) & (slots < width)
        self.lengths = new_len
        self.positions = torch.tensor(new_len, dtype=torch.long, device=self.device)

    # --- the per-token path ------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, settings: SamplingSettings | Sequence[SamplingSettings]) -> Tensor:
        """Each row's next token id (B,), from `logits`, the row's own generator and its
        settings (one for every row, or one per row in `tags` order)."""
        drawn = self._drawn
        for i, used in enumerate(drawn):
            if used == UNIFORM_BLOCK:
                self._uniforms[i] = torch.rand(
                    UNIFORM_BLOCK, generator=self.generators[i], device=self.device
                )
                drawn[i] = 0
        if min(drawn) == max(drawn):  # rows in step (always so for one row): a slice
            uniform = self._uniforms[:, drawn[0] : drawn[0] + 1]  # (B, 1)
        else:
            at = torch.tensor(drawn, dtype=torch.long, device=self.device).unsqueeze(1)
            uniform = self._uniforms.gather(1, at)
        self._drawn = [d + 1 for d in drawn]
        if isinstance(settings, SamplingSettings):
            return self._sample_rows(self.logits, uniform, settings, None)
        groups: dict[SamplingSettings, list[int]] = {}
        for i, s in enumerate(settings):
            groups.setdefault(s, []).append(i)
        if len(groups) == 1:
            return self._sample_rows(self.logits, uniform, settings[0], None)
        out = torch.empty(self.batch, dtype=torch.long, device=self.device)
        for s, rows in groups.items():
            index = torch.tensor(rows, dtype=torch.long, device=self.device)
            out[index] = self._sample_rows(self.logits[index], uniform[index], s, index)
        return out

    def _sample_rows(
        self, logits: Tensor, uniform: Tensor, settings: SamplingSettings, rows: Tensor | None
    ) -> Tensor:
        window = settings.repetition_window
        if window > self.window_kept:  # a larger window than the history holds: rebuild it
            self._rebuild_history(window)
        history = self.hist[:, max(0, self.hist_len - window) : self.hist_len]
        if rows is not None:
            history = history[rows]
        return sample_next(logits, settings, history, uniform, may_pad=self.hist_padded)

    def _rebuild_history(self, window: int) -> None:
        """Keep `window` newest tokens per row from now on (they come from `seqs`)."""
        self.window_kept = window
        width = max(len(s) for s in self.seqs)
        keep = min(width, window)
        self.hist = torch.full(
            (self.batch, keep + HISTORY_KEEP), -1, dtype=torch.long, device=self.device
        )
        for i, seq in enumerate(self.seqs):
            tail = seq[-keep:]
            self.hist[i, keep - len(tail) : keep] = torch.tensor(tail, dtype=torch.long)
        self.hist_len = keep
        self.hist_padded = self.hist_padded or len({min(len(s), keep) for s in self.seqs}) > 1

    @torch.inference_mode()
    def advance(self, next_ids: Tensor, next_list: list[int]) -> None:
        """Append the chosen tokens (as a (B,) tensor and the same ids on the host) and run
        one decode step, sliding first if the shared slots are full."""
        for i, tok in enumerate(next_list):
            self.seqs[i].append(tok)
        if self.hist_len == self.hist.size(1):  # full: keep the newest, start a new block
            keep = min(self.window_kept, self.hist_len)
            fresh = self.hist.new_full((self.batch, keep + HISTORY_KEEP), -1)
            fresh[:, :keep] = self.hist[:, self.hist_len - keep : self.hist_len]
            self.hist, self.hist_len = fresh, keep
        self.hist[:, self.hist_len] = next_ids
        self.hist_len += 1
        if self.kv.length >= self.kv.max_len:
            self._slide()
        idx = next_ids.view(self.batch, 1)
        slot = self.kv.length
        positions = key_mask = None
        self.key_mask[:, slot] = True
        # Rows that all fill every slot (equal prompts, no slide apart yet) need no mask and
        # share one position: the cheaper, unmasked attention.
        if min(self.lengths) < slot:
            positions, key_mask = self.positions.view(-1, 1), self.key_mask[:, : slot + 1]
        if self.graphs is not None:  # every row's position and mask, fixed shapes
            logits = self.graphs(idx, self.cache, self.batch, slot, self.positions,
                                 self.key_mask)  # fmt: skip
            self.kv.length = slot + 1
        elif self.step is not None:
            logits = self.step(idx, self.kv, positions, key_mask)  # (B, V)
        else:
            out, _ = self.model(
                idx, cache=self.kv, positions=positions, key_mask=key_mask, last_only=True
            )
            logits = out[:, -1]
        self.positions += 1
        self.lengths = [n + 1 for n in self.lengths]
        self.logits = logits  # (B, V)
