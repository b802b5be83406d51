"""Advantage and return estimators over token sequences.

Generalised Advantage Estimation (Schulman et al. 2016, "High-Dimensional Continuous Control
Using Generalized Advantage Estimation", Eq. 16):

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = sum_{l >= 0} (gamma * lam)^l * delta_{t+l}
            = delta_t + gamma * lam * A_{t+1}            (the recursion computed here)
    R_t     = A_t + V(s_t)                               (the value-function target, "returns")

Settings of the papers we reproduce: Xu et al. (2024) use gamma = lam = 1 (the advantage is
then the Monte-Carlo return minus the value); Ivison et al. (2024) use gamma = 1, lam = 0.95.

Conventions (and departures from a plain "one episode per row" reading):

* Only response positions are time steps. ``response_mask`` may have leading zeros (prompt
  tokens) and trailing zeros (right padding); those positions get advantage and return 0.
* The episode ends after the last response token: V after it is 0 (no bootstrap), which is
  right for responses that stopped at EOS and the usual choice (TRL, OpenRLHF) for responses
  truncated at the length limit.
* A masked *gap inside* a response (e.g. a tool output in a multi-turn rollout) is skipped:
  the step before the gap bootstraps from the value at the first response token after it,
  with one factor of gamma, as verl's multi-turn GAE does.
* Outputs are detached: they are regression and policy-gradient targets. The recursion runs
  in at least float32 (bf16/fp16 inputs are upcast, float64 stays float64), and the outputs
  have that dtype: a long bf16 recursion would lose most of its precision.
"""

from __future__ import annotations

import torch


def compute_gae(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns (Schulman et al. 2016, Eq. 16).

    token_rewards: (B, T) reward r_t at each response token (e.g. from ``kl_penalized_rewards``).
    values:        (B, T) value estimates V(s_t) from the rollout (old) value head.
    response_mask: (B, T) 1 on response tokens, 0 on prompt and padding.
    Returns (advantages, returns), both (B, T), 0 on masked positions, detached.
    """
    dtype = torch.promote_types(torch.promote_types(token_rewards.dtype, values.dtype), torch.float32)
    rewards = token_rewards.detach().to(dtype)
    vals = values.detach().to(dtype)
    mask = response_mask.bool()
    batch, length = rewards.shape
    zero = torch.zeros(batch, dtype=vals.dtype, device=vals.device)  # (B,)
    next_value = zero  # (B,) V at the next response position; 0 past the end
    next_advantage = zero  # (B,) A at the next response position; 0 past the end
    advantages = torch.zeros_like(vals)  # (B, T)
    for t in reversed(range(length)):
        m = mask[:, t]  # (B,)
        delta = rewards[:, t] + gamma * next_value - vals[:, t]  # (B,)
        advantage = delta + gamma * lam * next_advantage  # (B,)
        advantages[:, t] = torch.where(m, advantage, zero)
        # masked positions pass the carried values through untouched
        next_value = torch.where(m, vals[:, t], next_value)
        next_advantage = torch.where(m, advantage, next_advantage)
    returns = torch.where(mask, advantages + vals, torch.zeros_like(vals))
    return advantages, returns


def compute_discounted_returns(
    token_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Discounted reward-to-go G_t = r_t + gamma * G_{t+1} over response positions.

    token_rewards, response_mask: (B, T). Returns (B, T), 0 on masked positions, detached.
    Same time-step conventions as ``compute_gae`` (it equals GAE with V = 0 and lam = 1);
    this is the REINFORCE / RLOO return.
    """
    rewards = token_rewards.detach().to(torch.promote_types(token_rewards.dtype, torch.float32))
    mask = response_mask.bool()
    batch, length = rewards.shape
    zero = torch.zeros(batch, dtype=rewards.dtype, device=rewards.device)  # (B,)
    next_return = zero  # (B,)
    returns = torch.zeros_like(rewards)  # (B, T)
    for t in reversed(range(length)):
        m = mask[:, t]
        current = rewards[:, t] + gamma * next_return
        returns[:, t] = torch.where(m, current, zero)
        next_return = torch.where(m, current, next_return)
    return returns
