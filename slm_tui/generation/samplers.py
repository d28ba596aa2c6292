"""The sampler pipeline: small pure functions on a batch of logits, applied in a fixed order.

Order (llama.cpp's default chain): repetition penalty over a look-back window → top-k →
top-p → min-p → temperature → sample. The filters see the untempered distribution, so
temperature only reshapes the survivors: raising it never lets in a token that top-p or
min-p removed. Temperature 0 is greedy: argmax of the penalised logits (the filters cannot
change the argmax, so they are skipped).

Efficiency: when top-k cuts the vocabulary, everything after it works on the k survivors
(sorted, with their vocabulary ids alongside). Without top-k, top-p works on the head of
the sorted vocabulary that can survive (the tokens passing min-p, or the top 64 when they
hold the nucleus; a full sort only when neither is small); min-p and sampling need no sort.
Sampling is inverse-CDF with one uniform number per row, drawn by the caller from the row's
own generator, so a row's draws never depend on what other rows, or other stories, did.

Every function takes logits of shape (B, N) (N = vocabulary or survivors) and works on each
row independently: a row gives bit-identical results whatever else is in the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from slm_tui.generation.settings import SamplingSettings

NEG_INF = float("-inf")


def apply_repetition_penalty(
    logits: Tensor, history: Tensor, penalty: float, *, may_pad: bool = True
) -> Tensor:
    """CTRL-style penalty (llama.cpp's `repeat_penalty`) on every token seen in `history`.

    logits (B, V); history (B, W) token ids, -1 marks an empty slot (left padding).
    A seen token's logit is divided by `penalty` when positive and multiplied when negative,
    once however often it occurs. penalty 1 (or an empty window) returns `logits` itself.
    `may_pad=False` promises there is no -1 (fewer ops on the per-token path).
    """
    if penalty == 1.0 or history.numel() == 0:
        return logits
    # Gather/scatter on the window only (W entries, not the whole vocabulary). A padding slot
    # is pointed at the row's first real token, so every write to an id carries the same
    # value (scatter with duplicate ids is then deterministic); a row of padding only
    # writes its logits back unchanged.
    if not may_pad:  # the caller knows every slot holds a token (one unpadded row)
        seen = logits.gather(1, history)
        return logits.scatter(1, history, torch.where(seen > 0, seen / penalty, seen * penalty))
    valid = history >= 0  # (B, W)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # (B, 1)
    idx = torch.where(valid, history, history.gather(1, first)).clamp(min=0)
    seen = logits.gather(1, idx)
    penalized = torch.where(seen > 0, seen / penalty, seen * penalty)
    penalized = torch.where(valid.any(dim=1, keepdim=True), penalized, seen)
    return logits.scatter(1, idx, penalized)


def top_k_filter(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest logits per row, sorted descending, and their ids: ((B, k), (B, k))."""
    return torch.topk(logits, k, dim=-1, largest=True, sorted=True)


def top_p_filter(
    logits: Tensor, p: float, *, is_sorted: bool = False, lse: Tensor | None = None
) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose mass reaches `p`.

    The most likely token is always kept; removed entries become -inf. `is_sorted` says the
    rows are already in descending order (after top-k), which saves the sort. Probabilities
    are normalised over the given entries, or, with `lse` (B, 1), by that log-normaliser
    (the rows are then the head of a larger distribution, e.g. the top 64 of the vocabulary).
    """
    if p >= 1.0:
        return logits
    if not is_sorted:
        values, order = logits.sort(dim=-1, descending=True)
        kept = top_p_filter(values, p, is_sorted=True, lse=lse)
        return torch.empty_like(logits).scatter_(-1, order, kept)
    if lse is None:
        probs = torch.softmax(logits, dim=-1)  # (B, N)
    else:
        probs = torch.exp(logits - lse)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely tokens
    return logits.masked_fill(mass_before >= p, NEG_INF)


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    """Keep tokens whose probability is at least `min_p` times the most likely one's.

    p_i >= min_p * p_max  <=>  logit_i >= max_logit + ln(min_p): no softmax needed.
    """
    if min_p <= 0.0:
        return logits
    threshold = logits.amax(dim=-1, keepdim=True) + math.log(min_p)  # (B, 1)
    return logits.masked_fill(logits < threshold, NEG_INF)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide by the temperature (> 0; temperature 0 is handled as greedy by the caller)."""
    if temperature == 1.0:
        return logits
    return logits / temperature


def sample_from_logits(logits: Tensor, uniform: Tensor) -> Tensor:
    """Inverse-CDF sampling: row i picks the entry where its cumulative probability passes
    `uniform[i]`. logits (B, N) (-inf = removed), uniform (B, 1) in [0, 1) -> (B,) indices.

    The CDF is a running sum of exp(logit - max), not normalised: trailing removed entries
    add exact zeros, so a row sorted best-first gives the same pick whether it carries 64 or
    4096 columns. The draw is clamped just below the total, so float rounding can never land
    on a removed entry at the end of the row."""
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))  # (B, N)
    cdf = torch.cumsum(weights, dim=-1)
    total = cdf[:, -1:]
    target = torch.minimum(uniform * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(-1)


NUCLEUS_HEAD = 64


def _nucleus_head(logits: Tensor, p: float, min_p: float) -> tuple[Tensor, Tensor, Tensor, bool]:
    """The best-first candidates top-p needs over the whole vocabulary, and its normaliser.

    Sorting 4096 logits per row costs more than the model's forward at batch 16 on CPU, and
    only the head of the sorted vocabulary can survive: with min-p on, only the tokens that
    pass min-p (which comes next and is a prefix of the same ranking); else the top 64 when
    they already hold `p` of the mass (the usual case for a trained model). The result is
    the same as a full sort (probabilities use the full-vocabulary normaliser `lse`); the flag
    says min-p is already applied. On an
    accelerator the size check would be a host sync per token, so there it always sorts.
    """
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, 1)
    vocab = logits.size(-1)
    if logits.device.type == "cpu" and vocab > 2 * NUCLEUS_HEAD:
        if min_p > 0.0:
            threshold = logits.amax(dim=-1, keepdim=True) + math.log(min_p)
            head = int((logits >= threshold).sum(dim=-1).max())
            if head <= vocab // 4:
                # exactly the tokens passing min-p: min_p_filter would change nothing
                values, ids = torch.topk(logits, head, dim=-1)
                return values, ids, lse, True
        else:
            values, ids = torch.topk(logits, NUCLEUS_HEAD, dim=-1)
            if bool((torch.exp(values - lse).sum(-1) >= p).all()):
                return values, ids, lse, False
    values, ids = logits.sort(dim=-1, descending=True)
    return values, ids, lse, False


def sample_next(
    logits: Tensor,
    settings: SamplingSettings,
    history: Tensor,
    uniform: Tensor,
    *,
    may_pad: bool = True,
) -> Tensor:
    """The whole pipeline: (B, V) logits -> (B,) chosen token ids.

    history (B, W): the rows' last tokens (-1 = empty), already cut to the look-back window.
    uniform (B, 1): one draw per row from the row's generator (ignored when greedy).
    """
    if settings.repetition_window > 0:
        logits = apply_repetition_penalty(
            logits, history, settings.repetition_penalty, may_pad=may_pad
        )
    if settings.temperature == 0.0:
        return logits.argmax(dim=-1)
    vocab = logits.size(-1)
    ids = None  # None: `values` columns are vocabulary ids themselves
    values, lse, min_p_done = logits, None, False
    if 0 < settings.top_k < vocab:
        values, ids = top_k_filter(logits, settings.top_k)
    elif settings.top_p < 1.0:
        values, ids, lse, min_p_done = _nucleus_head(logits, settings.top_p, settings.min_p)
    values = top_p_filter(values, settings.top_p, is_sorted=ids is not None, lse=lse)
    if not min_p_done:
        values = min_p_filter(values, settings.min_p)
    values = apply_temperature(values, settings.temperature)
    choice = sample_from_logits(values, uniform)  # (B,)
    if ids is None:
        return choice
    return ids.gather(1, choice.unsqueeze(1)).squeeze(1)
