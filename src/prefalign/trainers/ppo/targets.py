"""Stages 3 and 4 of the PPO step as functions of (context, tensors): KL-penalised token rewards, GAE
advantages and value targets; and their recomputation per minibatch from the current models.

Used by :mod:`.trainer` once per step on the whole rollout batch, and, with ``ppo.recompute_old``,
by :func:`refresh_minibatch` before every minibatch update (Ivison et al., appendix G: the
advantages of a minibatch come from the current policy and critic, not from the rollout-time ones).
In the refresh:

* old log-probs (under the sampler's top-k mask when ``ppo.logprobs_top_k``) and values come from the
  current models; the reference log-probs and the shaped scores are the rollout's (the reference
  and the reward do not change within a step);
* the KL-penalised rewards use the current KL coefficient; GAE uses the current values
  (de-normalised when value normalisation is on, with the statistics of this step, not updated again);
* advantage whitening is over the minibatch (its rows on all processes), as the minibatch is what
  the refreshed advantages exist for.
"""

from __future__ import annotations

import dataclasses

import torch
from accelerate import Accelerator

from prefalign.algorithms.advantages import compute_gae
from prefalign.algorithms.kl import kl_penalized_rewards
from prefalign.algorithms.masked import masked_mean, masked_var, masked_whiten
from prefalign.rollout.experience import Experience
from prefalign.trainers.ppo.state import PPOContext
from prefalign.trainers.ppo.update import recompute_old


def gather_rows(t: torch.Tensor, acc: Accelerator) -> torch.Tensor:
    """Rows of every process concatenated (a (N, T) tensor is right-padded to a common T first)."""
    if acc.num_processes == 1:
        return t
    t = t.to(acc.device)
    if t.dim() == 2:
        t = acc.pad_across_processes(t, dim=1)
    return acc.gather(t).cpu()


def whiten_advantages(advantages: torch.Tensor, mask: torch.Tensor, acc: Accelerator) -> torch.Tensor:
    """``masked_whiten`` with mean and (unbiased) variance over the rows of all processes."""
    if acc.num_processes == 1:
        return masked_whiten(advantages, mask)
    every, every_mask = gather_rows(advantages, acc), gather_rows(mask, acc)
    mean, var = masked_mean(every, every_mask), masked_var(every, every_mask)
    return torch.where(mask.bool(), (advantages - mean) * torch.rsqrt(var + 1e-8), torch.zeros_like(advantages))


def token_rewards_of(
    ctx: PPOContext, scores: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token rewards, per-token KL): -beta * KL_t at every response token, plus the score at the last one."""
    return kl_penalized_rewards(
        scores, old_logprobs, ref_logprobs, mask, ctx.state.kl_controller.value, ctx.config.kl.estimator
    )


def advantages_and_targets(
    ctx: PPOContext, token_rewards: torch.Tensor, old_values: torch.Tensor, mask: torch.Tensor, *, update_stats: bool
):
    """GAE advantages and value targets; returns (advantages, targets, values used, returns).

    ``old_values`` are the critic's outputs (normalised space under value normalisation); the
    statistics take this batch's returns first when ``update_stats``.
    """
    cfg, state, acc = ctx.config, ctx.state, ctx.accelerator
    values = old_values
    if state.value_stats is not None:
        values = state.value_stats.denormalize(old_values) * mask
    advantages, returns = compute_gae(token_rewards, values, mask, cfg.ppo.gamma, cfg.ppo.lam)
    targets = returns
    if state.value_stats is not None:
        if update_stats:
            state.value_stats.update(gather_rows(returns, acc), gather_rows(mask, acc))
        targets = state.value_stats.normalize(returns) * mask
    if cfg.ppo.advantage_normalization:
        advantages = whiten_advantages(advantages, mask, acc)
    return advantages, targets, values, returns


def refresh_minibatch(ctx: PPOContext, mb: Experience) -> Experience:
    """The minibatch with old log-probs, values, KL, token rewards, advantages and value targets recomputed
    from the current models (Ivison et al., appendix G); see the module docstring."""
    acc, cfg = ctx.accelerator, ctx.config
    policy, critic = acc.unwrap_model(ctx.parts.policy), acc.unwrap_model(ctx.parts.critic)
    mb = recompute_old(mb, policy, critic, cfg.batch.micro_batch_size, cfg.sampling.temperature)
    mask = mb.response_mask
    token_rewards, kl = token_rewards_of(ctx, mb.scores, mb.old_logprobs, mb.ref_logprobs, mask)
    advantages, targets, _, _ = advantages_and_targets(ctx, token_rewards, mb.old_values, mask, update_stats=False)
    return dataclasses.replace(mb, kl=kl, token_rewards=token_rewards, advantages=advantages, returns=targets)
