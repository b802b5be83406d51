"""Critic-free advantage estimators: GRPO, RLOO, REINFORCE++ and ReMax.

Each replaces GAE's learned baseline V(s_t) with one computed from the rewards themselves, so no
value model is built or trained. Notation: a rollout batch of B = P * k rows, the k samples of a
prompt adjacent (``repeat_interleave`` order, as :func:`prefalign.rollout.generate.generate` returns
them); r_i the sequence reward of row i; groups are the k rows of one prompt.

* **GRPO** (Shao et al. 2024, "DeepSeekMath", section 4.1.2, outcome supervision):
  ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)``, the same advantage at every token of the
  response. ``unbiased`` names the standard deviation's convention (True: Bessel-corrected, as
  ``torch.std`` in verl and TRL; the paper does not say); ``eps`` keeps a group whose rewards are all
  equal at advantage 0 instead of 0/0.
* **RLOO** (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
  Learning from Human Feedback in LLMs", section 3.2): the leave-one-out baseline
  ``A_i = r_i - 1/(k-1) * sum_{j != i} r_j`` (equal to ``k/(k-1) * (r_i - mean(r_group))``).
* **REINFORCE++** (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language
  Models", section 3): token rewards carry the per-token KL penalty and the score at the last token
  (``r_t = 1[t = last] r(x, y) - beta KL_t``), the advantage is the discounted return
  ``G_t = sum_{s >= t} gamma^{s-t} r_s``, whitened over every response token of the batch:
  ``A_t = (G_t - mean(G)) / sqrt(var(G) + 1e-8)`` (:func:`prefalign.algorithms.masked.masked_whiten`,
  Bessel-corrected variance).
* **ReMax** (Li et al. 2023, "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method
  for Aligning Large Language Models", Algorithm 1 and Eq. 5): the baseline is the reward of the
  greedy response to the same prompt, ``A_i = r(x, y_i) - r(x, y_greedy(x))``.

Departures and conventions (listed here, as the architecture asks):

* GRPO, RLOO and ReMax apply to one sequence reward per row. The trainer passes the KL-penalised
  return ``r(x, y) - beta * sum_t KL_t`` (the KL in the reward, as Ahmadian et al. do for RLOO, who
  treat the whole completion as one action). DeepSeekMath's GRPO instead adds the KL as a loss term
  (its Eq. 3, the k3 estimator); with ``kl.coef 0`` the two agree.
* ReMax's baseline is the greedy response's *score* without its KL term: any baseline that does not
  depend on the sampled response keeps the estimator unbiased, and this one needs no extra forward
  pass of the policy and the reference over the greedy response.
* Sequence advantages are broadcast to every response token (:func:`broadcast_to_tokens`).
"""

from __future__ import annotations

import torch

from prefalign.algorithms.advantages import compute_discounted_returns
from prefalign.algorithms.masked import masked_whiten

ADVANTAGE_ESTIMATORS = ("gae", "grpo", "rloo", "reinforce_pp", "remax")
#: estimators that compare the k samples of one prompt (need k >= 2)
GROUP_ESTIMATORS = ("grpo", "rloo")


def _groups(rewards: torch.Tensor, group_size: int, name: str) -> torch.Tensor:
    """(B,) -> (B / k, k) in float32 or wider, checking the shape."""
    if rewards.dim() != 1:
        raise ValueError(f"{name}: rewards must be (B,), got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"{name} needs at least 2 samples per prompt (group_size), got {group_size}")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{name}: {rewards.shape[0]} rows do not split into groups of {group_size}")
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    return rewards.detach().to(dtype).view(-1, group_size)


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6, unbiased: bool = True) -> torch.Tensor:
    """GRPO's group-normalised advantage (Shao et al. 2024, section 4.1.2), one per row.

    rewards: (B,) sequence rewards, the ``group_size`` samples of a prompt adjacent. Returns (B,).
    """
    groups = _groups(rewards, group_size, "GRPO")  # (P, k)
    mean = groups.mean(dim=1, keepdim=True)  # (P, 1)
    std = groups.std(dim=1, keepdim=True, unbiased=unbiased)  # (P, 1)
    return ((groups - mean) / (std + eps)).reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO's leave-one-out advantage (Ahmadian et al. 2024, section 3.2), one per row.

    rewards: (B,) sequence rewards, the ``group_size`` samples of a prompt adjacent. Returns (B,).
    """
    groups = _groups(rewards, group_size, "RLOO")  # (P, k)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)  # (P, k) mean of the other samples
    return (groups - others).reshape(-1)


def remax_advantages(rewards: torch.Tensor, greedy_rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """ReMax's advantage (Li et al. 2023, Eq. 5): the reward minus the greedy response's reward.

    rewards: (B,) sequence rewards, the ``group_size`` samples of a prompt adjacent;
    greedy_rewards: (P,) reward of the greedy response to each prompt, B = P * group_size. Returns (B,).
    """
    if rewards.dim() != 1 or greedy_rewards.dim() != 1 or rewards.shape[0] != greedy_rewards.shape[0] * group_size:
        raise ValueError(
            f"ReMax: rewards {tuple(rewards.shape)} must be (P * {group_size},) for greedy rewards "
            f"{tuple(greedy_rewards.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(rewards.dtype, greedy_rewards.dtype), torch.float32)
    baseline = greedy_rewards.detach().to(dtype).repeat_interleave(group_size)  # (B,)
    return rewards.detach().to(dtype) - baseline


def reinforce_pp_returns(token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """REINFORCE++'s un-normalised advantage: the discounted return of the KL-penalised token rewards.

    token_rewards, response_mask: (B, T). Returns (B, T), 0 off the response. The trainer whitens it over
    the rows of every process; :func:`reinforce_pp_advantages` does both on one process.
    """
    return compute_discounted_returns(token_rewards, response_mask, gamma)


def reinforce_pp_advantages(token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """REINFORCE++ (Hu 2025, section 3): discounted returns whitened over every response token of the batch.

    token_rewards, response_mask: (B, T). Returns (B, T), 0 off the response.
    """
    return masked_whiten(reinforce_pp_returns(token_rewards, response_mask, gamma), response_mask)


def broadcast_to_tokens(sequence_advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(B,) advantages -> (B, T): the row's advantage on each of its response tokens, 0 elsewhere."""
    mask = response_mask.bool()
    values = sequence_advantages[:, None].expand(mask.shape)
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
