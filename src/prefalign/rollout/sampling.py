"""Choosing the next token from one step's logits, and its log-probability (the built-in engine's sampler).

The distribution is Hugging Face's sampler with the same settings: logits divided by the
temperature, then top-k (the k largest logits), then top-p (the smallest set of most likely tokens
whose probability reaches p; the most likely token is always kept), then a draw from the softmax
over what is left (``torch.multinomial``, from the global torch RNG). ``temperature == 0`` is greedy
(argmax, ties to the lowest id as ``argmax`` does).

The recorded log-probability is that of the chosen token under the **full** softmax at the sampling
temperature (at 1 for greedy), which is what the PPO scoring stage computes for the old
log-probabilities without ``ppo.logprobs_top_k``.

Work per step on the (B, V) logits: one in-place division, one ``logsumexp``; with top-k, the
k-sized ``topk`` result is all the sampler touches afterwards; only top-p without top-k sorts the
whole vocabulary.
"""

from __future__ import annotations

import torch


def _top_p_keep(sorted_logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, n) logits sorted in descending order -> the same with tokens outside the nucleus at -inf."""
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability of the strictly more likely tokens
    drop = before >= top_p
    drop[:, 0] = False
    return sorted_logits.masked_fill(drop, float("-inf"))


def next_tokens(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) logits (overwritten) -> (chosen ids (B,) long, their log-probs (B,) float32)."""
    logits = logits.float()
    if temperature == 0:
        chosen = logits.argmax(dim=-1)
    else:
        if temperature != 1.0:
            logits.div_(temperature)
        if top_k > 0 or top_p < 1.0:
            if top_k > 0:
                values, ids = logits.topk(min(top_k, logits.shape[-1]), dim=-1)  # sorted, descending
            else:
                values, ids = logits.sort(dim=-1, descending=True)
            if top_p < 1.0:
                values = _top_p_keep(values, top_p)
            pick = torch.multinomial(values.softmax(dim=-1), 1)  # (B, 1) position within the kept tokens
            chosen = ids.gather(1, pick).squeeze(1)
        else:
            chosen = torch.multinomial(logits.softmax(dim=-1), 1).squeeze(1)
    logprob = logits.gather(1, chosen[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
    return chosen, logprob
