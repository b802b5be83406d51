"""PPO losses and diagnostics over (B, T) response tokens.

Clipped surrogate (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", Eq. 7),
written as a loss to minimise:

    ratio_t = exp(log pi_theta(y_t) - log pi_old(y_t))
    L_t     = max( -A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps_low, 1 + eps_high) )

Clipped value loss (as in OpenAI baselines' ppo2, TRL and OpenRLHF; the paper's Eq. 9 uses
the plain squared error):

    L^V_t = 0.5 * max( (V_t - R_t)^2, (clip(V_t, V_old - eps_v, V_old + eps_v) - R_t)^2 )

Departures and conventions:
* ``clip_range_high`` (optional) makes the clip range asymmetric (DAPO's "clip-higher");
  by default eps_high = eps_low = ``clip_range``, as in the paper.
* Reduction over tokens is ``aggregate_loss``'s ``aggregation`` mode; "token-mean" is the
  TRL/OpenRLHF default, the paper has no token dimension.
* ``approx_kl`` is the k2 estimator 0.5 * mean((log pi_theta - log pi_old)^2) over response
  tokens, an estimate of KL(pi_old || pi_theta) on samples from pi_old (exact to second order).
* Statistics are detached 0-dim tensors, computed with a token mean whatever the aggregation.
"""

from __future__ import annotations

import torch

from prefalign.algorithms.masked import aggregate_loss, masked_mean, masked_var


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_range: float = 0.2,
    aggregation: str = "token-mean",
    clip_range_high: float | None = None,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-surrogate policy loss (Schulman et al. 2017, Eq. 7), to minimise.

    logprobs:      (B, T) log pi_theta(y_t | ...) of the policy being trained (with grad).
    old_logprobs:  (B, T) log pi_old of the same tokens, from the rollout (no grad).
    advantages:    (B, T) A_t (e.g. ``compute_gae``, possibly whitened).
    response_mask: (B, T) 1 on response tokens.
    normalizer:    passed to ``aggregate_loss`` for gradient accumulation.
    Returns (loss 0-dim, stats) with stats ``clipfrac``, ``approx_kl``, ``ratio_mean``.
    """
    eps_high = clip_range if clip_range_high is None else clip_range_high
    log_ratio = logprobs - old_logprobs.detach()  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.detach()
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + eps_high)  # (B, T)
    loss_mat = torch.maximum(unclipped, clipped)  # (B, T)
    loss = aggregate_loss(loss_mat, response_mask, aggregation, normalizer=normalizer)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(loss_mat.dtype), response_mask),
            "approx_kl": 0.5 * masked_mean(log_ratio.square(), response_mask),
            "ratio_mean": masked_mean(ratio, response_mask),
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    clip_range_value: float | None = 0.2,
    aggregation: str = "token-mean",
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss 0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2), to minimise.

    values:     (B, T) current value predictions (with grad).
    old_values: (B, T) value predictions from the rollout (no grad).
    returns:    (B, T) targets R_t (``compute_gae``'s returns).
    clip_range_value=None disables clipping (plain 0.5 * (V - R)^2; vf_clipfrac is then 0).
    Returns (loss 0-dim, stats) with stats ``vf_clipfrac``.
    """
    targets = returns.detach()
    unclipped = (values - targets).square()  # (B, T)
    if clip_range_value is None:
        loss_mat = 0.5 * unclipped
        clip_hit = torch.zeros_like(unclipped)
    else:
        old = old_values.detach()
        values_clipped = old + torch.clamp(values - old, -clip_range_value, clip_range_value)
        clipped = (values_clipped - targets).square()  # (B, T)
        loss_mat = 0.5 * torch.maximum(unclipped, clipped)
        clip_hit = (clipped > unclipped).to(unclipped.dtype)
    loss = aggregate_loss(loss_mat, response_mask, aggregation, normalizer=normalizer)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean(clip_hit, response_mask)}
    return loss, stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: (B, T, V) -> (B, T).

    H = logsumexp(z) - sum_v softmax(z)_v * z_v, computed as -sum p log p with log p from
    ``log_softmax`` (stable for large logits); vocabulary entries with logit -inf contribute 0.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros((), dtype=p.dtype, device=p.device))
    return -plogp.sum(dim=-1).to(logits.dtype)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[R - V] / Var[R] over the selected tokens, 0-dim (NaN when Var[R] = 0).

    values, returns, mask: (B, T). 1 is a perfect value function, 0 is as good as predicting
    the mean return, negative is worse than that. Uses the biased variance (the ratio does
    not depend on that choice); needs at least one selected token.
    """
    with torch.no_grad():
        var_returns = masked_var(returns, mask, unbiased=False)
        var_error = masked_var(returns - values, mask, unbiased=False)
        nan = torch.full_like(var_returns, float("nan"))
        return torch.where(var_returns > 0, 1.0 - var_error / var_returns, nan)
