"""Rollout-engine vs trainer log-probabilities: the mismatch metric and truncated importance sampling.

A separate inference engine (vLLM) samples with its own kernels, precision and sampling code, so the
probability it assigned to a sampled token, pi_rollout(y_t), differs from the trainer's pi_old(y_t) for the
same weights; at temperature != 1 an engine that reports log-probs of the raw logits differs by far more
(the peers' users saw ratios of 2.0: TRL #4159, #6789). prefalign always recomputes pi_old with the trainer
(stage 2) and uses the engine's numbers only here:

- :func:`logprob_mismatch`: mean and max of |pi_old / pi_rollout - 1| over response tokens, logged every step;
- :func:`truncated_importance_weights`: the truncated importance-sampling (TIS) correction of Yao et al.
  (2025, "Your efficient RL framework secretly brings you off-policy RL training"): the policy-gradient term of
  token t is weighted by w_t = min(pi_old(y_t) / pi_rollout(y_t), C), which makes the gradient an (truncated,
  so biased but bounded-variance) estimate of the on-policy one although the samples came from pi_rollout.

Both take (B, T) tensors aligned as everywhere in prefalign (position t holds log p(token t)); positions off
``response_mask`` are ignored. No gradient flows through either.
"""

from __future__ import annotations

import torch


def logprob_mismatch(
    trainer_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, response_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``{"mean": mean |r - 1|, "max": max |r - 1|, "log_ratio_mean": mean log r}`` over response tokens, with
    r_t = exp(trainer_t - rollout_t) = pi_old(y_t) / pi_rollout(y_t); zeros when there is no response token."""
    mask = response_mask.bool()
    log_ratio = (trainer_logprobs.detach() - rollout_logprobs.detach()).float()[mask]
    if log_ratio.numel() == 0:
        zero = torch.zeros((), dtype=torch.float32, device=trainer_logprobs.device)
        return {"mean": zero, "max": zero.clone(), "log_ratio_mean": zero.clone()}
    gap = (log_ratio.exp() - 1.0).abs()
    return {"mean": gap.mean(), "max": gap.max(), "log_ratio_mean": log_ratio.mean()}


def truncated_importance_weights(
    trainer_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, response_mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """(B, T) w_t = min(pi_old(y_t) / pi_rollout(y_t), cap) on response tokens, 0 elsewhere (no gradient)."""
    if cap <= 0:
        raise ValueError(f"the truncation cap must be positive, got {cap}")
    ratio = (trainer_logprobs.detach() - rollout_logprobs.detach()).float().exp()
    return torch.clamp(ratio, max=cap) * response_mask.to(ratio.dtype)
