"""Choosing the next token from one step's logits, and its log-probability (the built-in engine's sampler).

The distribution is Hugging Face's sampler with the same settings: logits divided by the
temperature, then top-k (the k largest logits), then top-p (the smallest set of most likely tokens
whose probability reaches p; the most likely token is always kept), then a draw from the softmax
over what is left. ``temperature == 0`` is greedy (argmax, ties to the lowest id as ``argmax`` does).

The draw: with top-k or top-p, ``torch.multinomial`` over the kept tokens; without them, over the whole
vocabulary, by inverse CDF (:func:`_draw_full`: one uniform per row against the running sum of the
probabilities, ``searchsorted``); on SmolLM2's 49152 tokens it took 1.5 ms instead of 9.5 ms at 8 rows
and 5 ms instead of 46 ms at 32 rows for ``softmax`` + ``torch.multinomial`` (one CPU thread). Same
distribution, a different random stream: a seed gives the same tokens run after run, but not the tokens
``multinomial`` (or Hugging Face ``generate``) would give for that seed.
Random numbers come from ``generator`` when given, else from the global torch RNG. On a vocabulary of
:data:`COMPILED_DRAW_MIN_VOCAB` tokens or more, where the compiled CPU kernels run
(:mod:`prefalign.rollout.cpu_kernels`), the same inverse-CDF draw is one kernel call per step
(``draw``: the division, the maximum, the exponentials, the running sum, the search and the log-probability in
one C++ loop per row instead of about ten torch ops), with the same uniforms: a seed draws the same tokens
up to the rounding of the exponentials (within a few ulp of torch's).

The recorded log-probability is that of the chosen token under the **full** softmax at the sampling
temperature (at 1 for greedy), which is what the PPO scoring stage computes for the old
log-probabilities without ``ppo.logprobs_top_k``.

Work per step on the (B, V) logits: one in-place division, one ``logsumexp``; with top-k, the
k-sized ``topk`` result is all the sampler touches afterwards; only top-p without top-k sorts the
whole vocabulary.
"""

from __future__ import annotations

import torch

from prefalign.rollout import cpu_kernels

#: the smallest vocabulary drawn by the compiled kernel: SmolLM2's 49,152 tokens took ~2.7 ms a decode step at
#: 8 rows in torch ops; the study's tiny models (259 tokens) keep the torch draw, so their runs stay as they were
COMPILED_DRAW_MIN_VOCAB = 4096


def _top_p_keep(sorted_logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, n) logits sorted in descending order -> the same with tokens outside the nucleus at -inf."""
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability of the strictly more likely tokens
    drop = before >= top_p
    drop[:, 0] = False
    return sorted_logits.masked_fill(drop, float("-inf"))


def _draw_full(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) ids drawn from softmax(logits) by inverse CDF: the first id whose running
    probability sum exceeds a uniform draw in [0, total) (ids of probability 0 are never chosen)."""
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    cdf = shifted.exp_().cumsum_(dim=-1)  # (B, V) unnormalised running sums, last column the total
    u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)


def _compiled_draw(logits: torch.Tensor) -> bool:
    """Whether the full-vocabulary draw goes to the compiled kernel (see the module docstring)."""
    return (
        logits.shape[-1] >= COMPILED_DRAW_MIN_VOCAB
        and logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and logits.is_contiguous()
        and cpu_kernels.available()
    )


def next_tokens(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) logits (overwritten) -> (chosen ids (B,) long, their log-probs (B,) float32)."""
    logits = logits.float()
    if temperature == 0:
        chosen = logits.argmax(dim=-1)
    elif top_k == 0 and top_p >= 1.0 and _compiled_draw(logits):  # divides by the temperature itself
        u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device, dtype=logits.dtype)
        return cpu_kernels.draw(logits, temperature, u[:, 0])
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
            pick = torch.multinomial(values.softmax(dim=-1), 1, generator=generator)  # (B, 1) position among kept
            chosen = ids.gather(1, pick).squeeze(1)
        else:
            chosen = _draw_full(logits, generator)
    logprob = logits.gather(1, chosen[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
    return chosen, logprob
