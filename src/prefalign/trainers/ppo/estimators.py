"""Stage 4 of the PPO step with a critic-free advantage estimator (``ppo.advantage_estimator``), and the
greedy rollout ReMax scores as its baseline.

The estimators themselves are pure functions in :mod:`prefalign.algorithms.critic_free` (equations and
departures listed there). Here they meet the trainer:

* grpo, rloo, remax: the sequence reward of a row is the sum of its KL-penalised token rewards,
  ``score - beta * sum_t KL_t`` (stage 3 unchanged); its advantage goes to every response token.
* reinforce_pp: the discounted returns of the KL-penalised token rewards, whitened over the rows of
  every process (``ppo.gamma`` is the discount).
* ``ppo.advantage_normalization`` whitens rloo's and remax's advantages over the batch as it does
  GAE's; grpo and reinforce_pp already normalise (per prompt, per batch), so it changes nothing there.
* Groups: a process samples ``sampling.num_samples`` responses for each of its prompts, adjacent
  rows, so every group lies on one process and the group estimators need no communication.
* remax: the greedy response to each prompt (temperature 0, one per prompt) is generated and scored
  after the sampled ones in stage 2; its score is shaped as the sampled scores are (the EOS trick,
  then normalisation with the statistics this step's scores updated, then clipping).
"""

from __future__ import annotations

import dataclasses

import torch

from prefalign.algorithms.critic_free import (
    broadcast_to_tokens,
    grpo_advantages,
    reinforce_pp_returns,
    remax_advantages,
    rloo_advantages,
)
from prefalign.algorithms.masked import masked_sum
from prefalign.data.schema import Prompt
from prefalign.rollout.experience import apply_truncated_reward, normalize_and_clip
from prefalign.rollout.generate import Rollout, generate
from prefalign.trainers.ppo.state import PPOContext
from prefalign.trainers.ppo.targets import whiten_advantages


def greedy_scores(ctx: PPOContext, rollout: Rollout, prompts: list[Prompt]) -> dict[str, torch.Tensor]:
    """ReMax's baseline rollout: the greedy response to each of the rollout's P prompts, scored.

    Returns {"greedy_raw_scores": (P,), "greedy_ended_with_eos": (P,) bool}.
    """
    cfg, acc = ctx.config, ctx.accelerator
    k = cfg.sampling.num_samples
    firsts = range(0, len(rollout), k)  # the first row of each prompt's group
    prompt_ids = [rollout.sequences[i, : int(rollout.prompt_lengths[i])].tolist() for i in firsts]
    greedy = dataclasses.replace(cfg.sampling, temperature=0.0, num_samples=1)
    size = cfg.batch.generation_batch_size or cfg.batch.micro_batch_size
    baseline = generate(acc.unwrap_model(ctx.parts.policy), ctx.parts.tokenizer, prompt_ids, greedy, size)
    return {"greedy_raw_scores": ctx.parts.scorer(baseline, prompts), "greedy_ended_with_eos": baseline.ended_with_eos}


def shaped_greedy_scores(ctx: PPOContext, scored: dict[str, torch.Tensor]) -> torch.Tensor:
    """(P,) the greedy scores shaped like the sampled ones (EOS trick, normalisation without updating, clipping)."""
    cfg = ctx.config
    scores = apply_truncated_reward(
        scored["greedy_raw_scores"], scored["greedy_ended_with_eos"], cfg.reward.truncated_reward
    )
    return normalize_and_clip(scores, ctx.state.reward_stats, cfg.reward.clip)


def critic_free_advantages(
    ctx: PPOContext, token_rewards: torch.Tensor, mask: torch.Tensor, scored: dict[str, torch.Tensor]
) -> torch.Tensor:
    """(N, T) advantages of the configured critic-free estimator from the KL-penalised token rewards (N, T)."""
    cfg, acc = ctx.config, ctx.accelerator
    estimator, k = cfg.ppo.advantage_estimator, cfg.sampling.num_samples
    if estimator == "reinforce_pp":
        return whiten_advantages(reinforce_pp_returns(token_rewards, mask, cfg.ppo.gamma), mask, acc)
    sequence = masked_sum(token_rewards, mask, dim=1)  # (N,) score - beta * sum_t KL_t
    if estimator == "grpo":
        return broadcast_to_tokens(grpo_advantages(sequence, k), mask)
    if estimator == "rloo":
        advantages = rloo_advantages(sequence, k)
    elif estimator == "remax":
        advantages = remax_advantages(sequence, shaped_greedy_scores(ctx, scored).to(sequence), k)
    else:
        raise ValueError(f"ppo.advantage_estimator={estimator!r} is not a critic-free estimator")
    advantages = broadcast_to_tokens(advantages, mask)
    if cfg.ppo.advantage_normalization:
        advantages = whiten_advantages(advantages, mask, acc)
    return advantages
