"""PPO's held-out validation: the reward, the KL to the reference and the objective PPO maximises
(reward - KL coefficient x KL) of one sampled response per validation prompt, every ``run.eval_every`` steps;
the best policy by reward is kept in ``best/``. ``eval/objective`` is the series ``run.early_stop`` watches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from prefalign.atomic import write_text_atomic
from prefalign.rollout.experience import rollout_kl
from prefalign.rollout.generate import Rollout, generate
from prefalign.trainers.common import check_finite, global_sum
from prefalign.trainers.gather import parameters_for_generation
from prefalign.trainers.ppo.state import PPOContext


def sampling_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + 17) % 2**63


def rollout_has_sampler_logprobs(rollout: Rollout, temperature: float) -> bool:
    """The rollout carries its sampler's log-probs at ``temperature`` (the built-in engine records them from
    the generation logits, within 1e-5 of a policy forward, tested), so scoring skips the policy forward."""
    return rollout.logprobs is not None and temperature > 0


@torch.no_grad()
def validate(ctx: PPOContext) -> dict[str, float]:
    """Mean raw reward of one sampled response per held-out prompt (fixed sampling seed)."""
    acc, cfg = ctx.accelerator, ctx.config
    rows = list(range(acc.process_index, len(ctx.val_prompts), acc.num_processes))
    total = length = torch.tensor(0.0)
    sampling = dataclasses.replace(cfg.sampling, num_samples=1)
    size = cfg.batch.generation_batch_size or cfg.batch.micro_batch_size
    with parameters_for_generation(acc, ctx.parts.policy) as policy:  # a collective: every process enters
        rollout = None
        if rows:
            rollout = generate(
                policy,
                ctx.parts.tokenizer,
                [ctx.val_ids[i] for i in rows],
                sampling,
                size,
                generator_seed=sampling_seed(cfg.run.seed + 1, 0, acc.process_index),
            )
    kl = torch.tensor(0.0)
    if rollout is not None:
        scores = ctx.parts.scorer(rollout, [ctx.val_prompts[i] for i in rows])
        total, length = scores.sum(), rollout.response_lengths.float().sum()
        kl = validation_kl(ctx, rollout, size).sum()
    count = max(global_sum(len(rows), acc), 1.0)
    reward, kl_mean = global_sum(total, acc) / count, global_sum(kl, acc) / count
    return {
        "eval/reward": reward,
        "eval/kl": kl_mean,
        "eval/objective": reward - float(ctx.state.kl_controller.value) * kl_mean,
        "eval/response_length": global_sum(length, acc) / count,
    }


def validation_kl(ctx: PPOContext, rollout: Rollout, micro_batch_size: int) -> torch.Tensor:
    """Per response: the summed log-ratio log pi - log pi_ref of the sampled tokens (the KL estimate the penalty
    uses), against the run's own reference (the EMA one where ppo.reference_ema)."""
    policy = ctx.accelerator.unwrap_model(ctx.parts.policy)
    temperature = ctx.config.sampling.temperature
    return rollout_kl(policy, ctx.parts.reference.model, rollout, micro_batch_size, temperature)


def maybe_validate(ctx: PPOContext, steps_done: int, out: Path) -> dict[str, float]:
    cfg = ctx.config
    every, last = cfg.run.eval_every, steps_done == cfg.batch.steps
    if not ctx.val_prompts or not (last or (every > 0 and steps_done % every == 0)):
        return {}
    metrics = validate(ctx)
    check_finite("validation reward", metrics["eval/reward"], steps_done)
    if metrics["eval/reward"] > ctx.state.best_eval:
        ctx.state.best_eval, ctx.state.best_step = metrics["eval/reward"], steps_done
        ctx.parts.save_policy(ctx.accelerator, out / "best")
        if ctx.accelerator.is_main_process:
            write_text_atomic(
                out / "best.json", json.dumps({"step": steps_done, "eval/reward": metrics["eval/reward"]}) + "\n"
            )
    return metrics
