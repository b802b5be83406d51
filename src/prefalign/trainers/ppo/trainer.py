"""PPO for language models from a reward function (Xu et al. 2024, section 5; Ivison et al. 2024).

Each step is six numbered stages, read top to bottom in :func:`ppo_step`:

1. rollout: sample ``num_samples`` responses per prompt from the current policy (KV cache, batched);
2. score: one no-grad pass each of the reference, the critic (values) and the reward source, and of
   the policy (old log-probs) unless the rollout engine recorded them while sampling
   (:mod:`prefalign.rollout.experience`);
3. KL-penalised rewards: shaped score at the last response token, -beta * KL_t at every token
   (Ivison et al. Eq. 4);
4. advantages: GAE (Schulman et al. 2016, Eq. 16), whitened over the whole rollout batch when
   advantage normalisation is on (Xu et al. key factor 1); value targets normalised by running
   statistics when value normalisation is on. With a critic-free ``ppo.advantage_estimator`` (grpo,
   rloo, reinforce_pp, remax; :mod:`prefalign.trainers.ppo.estimators`) there is no critic: no values
   at stage 2, no value loss at stage 5, and for remax a greedy response per prompt scored at stage 2;
5. update: clipped policy and value losses over minibatches (:mod:`prefalign.trainers.ppo.update`);
6. reference EMA: ref <- (1 - rate) ref + rate policy every ``ema_interval`` steps (key factor 3).

Departures from the papers and conventions worth knowing:

* Log-probabilities (old, reference and current) are computed at the sampling temperature, as in
  TRL. With ``ppo.logprobs_top_k`` they are also taken under the sampler's top-k mask (the k ids
  recorded per response token at stage 2 from the rollout policy, as ReaLHF's logits mask); without
  it, and always for top-p, over the full vocabulary.
* With ``ppo.recompute_old``, each minibatch's old log-probs, values, KL-penalised rewards,
  advantages and targets are recomputed from the current models before its update
  (:mod:`prefalign.trainers.ppo.targets`; Ivison et al., appendix G).
* A response cut off at ``max_new_tokens`` is treated as a finished episode (no bootstrap), and
  with ``reward.truncated_reward`` set gets that fixed reward instead of its score (the EOS trick).
* Value normalisation keeps running statistics of the GAE returns: the critic predicts normalised
  values, GAE uses de-normalised ones, and value clipping is around the rollout values in the
  normalised space of the rollout (the statistics move between rollouts).
* The adaptive KL controller is updated once per step with the batch's mean summed KL.
* The reference EMA is applied per PPO step (after all of the step's optimizer updates), not per
  optimizer step; ``ema_interval`` counts PPO steps.
* Validation samples one response per held-out prompt at the training temperature with a fixed
  seed and reports the raw reward; the best validation reward selects ``<output_dir>/best``.
* Sampling noise is seeded per (run seed, step, process), so a resumed run draws the same samples.
"""

from __future__ import annotations

import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from prefalign.algorithms.ppo import explained_variance
from prefalign.atomic import write_text_atomic
from prefalign.config import to_dict
from prefalign.data.schema import Prompt
from prefalign.rollout.experience import (
    Experience,
    apply_truncated_reward,
    normalize_and_clip,
    rollout_logprobs,
    rollout_logprobs_top_k,
    rollout_values,
)
from prefalign.rollout.generate import Rollout
from prefalign.trainers.checkpoint import Checkpointer
from prefalign.trainers.common import BatchPlan, check_finite, global_sum, make_accelerator, set_seed, shard
from prefalign.trainers.early_stop import PlateauWatch, check_early_stop
from prefalign.trainers.gather import parameters_for_generation
from prefalign.trainers.logging import MetricLogger, console, start_trackers
from prefalign.trainers.model_card import write_model_card
from prefalign.trainers.ppo.config import PRESETS, PPOConfig
from prefalign.trainers.ppo.estimators import critic_free_advantages, greedy_scores
from prefalign.trainers.ppo.rollout_engine import check_engine, engine_corrections, sample_rollout
from prefalign.trainers.ppo.setup import build_parts, encode_prompts, load_prompt_sets, sft_batches
from prefalign.trainers.ppo.state import PPOContext, PPOState
from prefalign.trainers.ppo.targets import (
    advantages_and_targets,
    gather_rows,
    refresh_minibatch,
    token_rewards_of,
    whiten_advantages,
)
from prefalign.trainers.ppo.update import UpdateSettings, ppo_update
from prefalign.trainers.ppo.validation import maybe_validate, rollout_has_sampler_logprobs, sampling_seed
from prefalign.trainers.run_folder import prepare_run_folder

__all__ = ["PPOConfig", "PRESETS", "PPOState", "run_ppo", "ppo_step", "whiten_advantages"]


def stage_rollout(ctx: PPOContext, step: int) -> tuple[Rollout, list[Prompt]]:
    """1. Sample responses to this process's share of the step's prompts."""
    acc, cfg = ctx.accelerator, ctx.config
    rows = shard(ctx.plan.step_indices(step), acc.process_index, acc.num_processes)
    seed = sampling_seed(cfg.run.seed, step, acc.process_index)
    with parameters_for_generation(acc, ctx.parts.policy) as policy:  # ZeRO-3 / FSDP: gathered once per call
        rollout = sample_rollout(ctx, policy, [ctx.train_ids[i] for i in rows], seed)  # rollout.engine
    return rollout, [ctx.train_prompts[i] for i in rows]


def stage_score(ctx: PPOContext, rollout: Rollout, prompts: list[Prompt], step: int) -> dict[str, torch.Tensor]:
    """2. Old and reference log-probs, values and raw scores: one forward pass of each model."""
    acc, cfg, parts = ctx.accelerator, ctx.config, ctx.parts
    mb, temperature = cfg.batch.micro_batch_size, cfg.sampling.temperature
    out: dict[str, torch.Tensor | None] = {"support": None}  # support: the sampler's top-k ids, when recorded
    policy = acc.unwrap_model(parts.policy)
    if cfg.ppo.logprobs_top_k:  # the sampler's distribution: the rollout policy's own top-k
        out["old_logprobs"], out["support"] = rollout_logprobs_top_k(
            policy, rollout, mb, temperature, cfg.sampling.top_k
        )
    elif rollout_has_sampler_logprobs(rollout, temperature):  # the sampler's own: no policy forward
        out["old_logprobs"] = rollout.logprobs * rollout.response_mask
    else:
        out["old_logprobs"] = rollout_logprobs(policy, rollout, mb, temperature)
    out |= {
        "ref_logprobs": rollout_logprobs(parts.reference.model, rollout, mb, temperature, support=out["support"]),
        "old_values": torch.zeros(rollout.sequences.shape)  # critic-free: no values
        if parts.critic is None
        else rollout_values(acc.unwrap_model(parts.critic), rollout, mb),
        "raw_scores": parts.scorer(rollout, prompts),
    }
    if cfg.ppo.advantage_estimator == "remax":  # the baseline: each prompt's greedy response, scored
        out |= greedy_scores(ctx, rollout, prompts)
        check_finite("greedy reward", gather_rows(out["greedy_raw_scores"], acc), step)
    check_finite("reward", gather_rows(out["raw_scores"], acc), step)
    return out


def stage_rewards(ctx: PPOContext, rollout: Rollout, scored: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """3. Shaped scores and KL-penalised token rewards (Ivison et al. Eq. 4)."""
    cfg, state = ctx.config, ctx.state
    scores = apply_truncated_reward(scored["raw_scores"], rollout.ended_with_eos, cfg.reward.truncated_reward)
    if state.reward_stats is not None:
        state.reward_stats.update(gather_rows(scores, ctx.accelerator))
    scores = normalize_and_clip(scores, state.reward_stats, cfg.reward.clip)
    token_rewards, kl = token_rewards_of(
        ctx, scores, scored["old_logprobs"], scored["ref_logprobs"], rollout.response_mask
    )
    return scores, token_rewards, kl


def stage_advantages(ctx: PPOContext, token_rewards: torch.Tensor, scored: dict[str, torch.Tensor], mask: torch.Tensor):
    """4. Advantages and value targets; returns (advantages, targets, values used, returns). Critic-free
    estimators have no values or targets (zeros)."""
    if ctx.parts.critic is None:
        advantages = critic_free_advantages(ctx, token_rewards, mask, scored)
        zeros = torch.zeros_like(advantages)
        return advantages, zeros, zeros, zeros
    return advantages_and_targets(ctx, token_rewards, scored["old_values"], mask, update_stats=True)


def _global_mean(x: torch.Tensor, acc: Accelerator) -> float:
    return global_sum(x.float().sum(), acc) / max(global_sum(x.numel(), acc), 1.0)


def rollout_metrics(ctx: PPOContext, exp: Experience, values: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
    acc, mask = ctx.accelerator, exp.response_mask
    raw = gather_rows(exp.raw_scores, acc)
    metrics = {
        "reward/mean": float(raw.mean()),
        "reward/std": float(raw.std()) if raw.numel() > 1 else 0.0,
        "reward/shaped_mean": _global_mean(exp.scores, acc),
        "reward/kl_penalized_mean": _global_mean(exp.token_rewards.sum(dim=1), acc),
        "kl/mean": _global_mean(exp.kl.sum(dim=1), acc),
        "kl/coef": float(ctx.state.kl_controller.value),
        "response_length": _global_mean(mask.sum(dim=1), acc),
        "truncated_fraction": _global_mean((~exp.ended_with_eos).float(), acc),
    }
    if ctx.parts.critic is not None:  # critic-free estimators have no values to explain returns
        ev = explained_variance(gather_rows(values, acc), gather_rows(returns, acc), gather_rows(mask, acc))
        metrics["explained_variance"] = float(ev)
    return metrics


def build_experience(
    ctx: PPOContext, rollout: Rollout, scored: dict[str, torch.Tensor]
) -> tuple[Experience, torch.Tensor, torch.Tensor]:
    """Stages 3 and 4 on a scored rollout: (the Experience the update reads, de-normalised values, returns)."""
    scores, token_rewards, kl = stage_rewards(ctx, rollout, scored)  # 3. KL-penalised rewards
    mask = rollout.response_mask
    advantages, targets, values, returns = stage_advantages(ctx, token_rewards, scored, mask)  # 4. advantages
    exp = Experience(
        rollout.sequences,
        rollout.attention_mask,
        mask,
        scored["old_logprobs"],
        scored["ref_logprobs"],
        scored["old_values"],
        scored["raw_scores"],
        scores,
        rollout.ended_with_eos,
        kl,
        token_rewards,
        advantages,
        targets,
        scored["support"],
    )
    return exp, values, returns


def ppo_step(ctx: PPOContext, step: int) -> dict[str, float]:
    """One PPO step (0-based ``step``): the six stages of the module docstring; returns its metrics."""
    acc, cfg, parts = ctx.accelerator, ctx.config, ctx.parts
    t0 = time.perf_counter()
    rollout, prompts = stage_rollout(ctx, step)  # 1. rollout
    t1 = time.perf_counter()
    scored = stage_score(ctx, rollout, prompts, step)  # 2. score
    exp, values, returns = build_experience(ctx, rollout, scored)  # 3. KL-penalised rewards, 4. GAE
    metrics = rollout_metrics(ctx, exp, values, returns) | engine_corrections(ctx, exp)  # vllm: mismatch, TIS
    t2 = time.perf_counter()
    metrics.update(
        ppo_update(
            acc, parts.update_parts(), ctx.settings, exp, step, sft_batches(ctx, step), partial(refresh_minibatch, ctx)
        )
    )  # 5. update
    ctx.state.kl_controller.update(metrics["kl/mean"], cfg.batch.rollout_batch_size)
    if cfg.ppo.reference_ema and (step + 1) % cfg.ppo.ema_interval == 0:  # 6. reference EMA
        parts.reference.ema_update_(acc.unwrap_model(parts.policy), cfg.ppo.ema_rate)
    t3 = time.perf_counter()
    metrics.update(
        {
            "time/generate": t1 - t0,
            "time/score": t2 - t1,
            "time/update": t3 - t2,
            "lr/actor": parts.actor_scheduler.get_last_lr()[0],
            "samples": (step + 1) * cfg.batch.rollout_batch_size,
        }
    )
    return metrics


def _checkpoint_models(ctx: PPOContext) -> dict[str, torch.nn.Module]:
    return ctx.parts.checkpoint_models()


def _optimization(ctx: PPOContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """(optimizers, schedulers) by name: actor, and critic when there is one."""
    p = ctx.parts
    optimizers, schedulers = {"actor": p.actor_optimizer}, {"actor": p.actor_scheduler}
    if p.critic is not None:
        optimizers["critic"], schedulers["critic"] = p.critic_optimizer, p.critic_scheduler
    return optimizers, schedulers


def save_checkpoint(ctx: PPOContext, ckpt: Checkpointer, steps_done: int) -> None:
    state = {"step": steps_done, "trainer": ctx.state.state_dict(), "config": to_dict(ctx.config)}
    ckpt.save(steps_done, _checkpoint_models(ctx), state, *_optimization(ctx)[::-1])


def resume(ctx: PPOContext, ckpt: Checkpointer, keep_new_settings: bool = False) -> int:
    """Restore the latest checkpoint when ``run.resume``; returns the number of steps already done. With
    ``keep_new_settings`` (settings changed under ``run.allow_changes``) the new optimizer settings apply."""
    path = ckpt.latest() if ctx.config.run.resume else None
    if path is None:
        if ctx.config.run.resume and ctx.accelerator.is_main_process:
            console.print(f"[yellow]resume: no checkpoint in {ckpt.root}; starting fresh")
        return 0
    state = ckpt.load(path, _checkpoint_models(ctx), *_optimization(ctx), keep_new_settings=keep_new_settings)
    ctx.state.load_state_dict(state["trainer"])
    if ctx.accelerator.is_main_process:
        console.print(f"resumed from {path} after step {state['step']}")
    return int(state["step"])


def build_context(config: PPOConfig, acc: Accelerator) -> PPOContext:
    check_engine(config)
    train, val = load_prompt_sets(config.data)
    check_early_stop(config.run.early_stop, config.run.eval_every, bool(val), "data.validation_prompts is 0")
    parts = build_parts(config, acc)
    train_ids = encode_prompts(parts.tokenizer, train, config.data.max_prompt_length)
    val_ids = encode_prompts(parts.tokenizer, val, config.data.max_prompt_length)
    plan = BatchPlan(len(train), config.prompts_per_step, seed=config.run.seed, max_steps=config.batch.steps)
    if config.prompts_per_step % acc.num_processes:
        raise ValueError(f"{config.prompts_per_step} prompts per step do not split over {acc.num_processes} processes")
    settings = UpdateSettings(
        clip_range=config.ppo.clip_range,
        clip_range_value=config.ppo.clip_range_value,
        aggregation=config.ppo.loss_aggregation,
        ppo_epochs=config.ppo.ppo_epochs,
        num_minibatches=config.batch.num_minibatches,
        micro_batch_size=config.batch.micro_batch_size,
        temperature=config.sampling.temperature,
        recompute_old=config.ppo.recompute_old,
        actor_max_grad_norm=config.actor_optim.max_grad_norm,
        critic_max_grad_norm=config.critic_optim.max_grad_norm,
        sft_coef=config.ppo.sft_coef,
        seed=config.run.seed,
    )
    return PPOContext(config, acc, parts, PPOState.fresh(config), plan, train, train_ids, val, val_ids, settings)


def run_ppo(config: PPOConfig) -> dict[str, Any]:
    """Train a policy with PPO; returns (and writes to ``results.json``) the run's summary."""
    acc = make_accelerator(config.run)
    set_seed(config.run.seed)
    out = Path(config.run.output_dir)
    folder = prepare_run_folder(acc, config.run, config)  # a used folder, a resume with changed settings: refused
    ctx = build_context(config, acc)
    ckpt = Checkpointer(out, acc, config.run.keep_checkpoints, config.run.seed, ctx.parts.companion_accelerators())
    start = resume(ctx, ckpt, keep_new_settings=bool(folder.changes))
    total = config.batch.steps
    logger = MetricLogger(
        out,
        is_main=acc.is_main_process,
        total_steps=total,
        description="ppo",
        tensorboard="tensorboard" in config.run.trackers(),
        progress=config.run.progress,
        resume_step=start,
        progress_every=config.run.progress_every,
        accelerator=acc,
    )
    start_trackers(acc, to_dict(config), out.name)
    metrics: dict[str, float] = {}
    steps_done, plateaued = start, False
    watch = PlateauWatch(config.run.early_stop, "eval/objective", higher_is_better=True)
    watch.restore(out / "metrics.jsonl", start)
    try:
        for step in range(start, total):
            metrics = ppo_step(ctx, step)
            steps_done = step + 1
            metrics.update(maybe_validate(ctx, steps_done, out))
            logger.log(steps_done, metrics, show=("reward/mean", "kl/mean", "eval/reward"))
            plateaued = watch.update_from(metrics, steps_done) and steps_done < total
            stopping = config.stop_after is not None and steps_done - start >= config.stop_after and steps_done < total
            every = config.run.save_every
            if plateaued or stopping or steps_done == total or (every > 0 and steps_done % every == 0):
                save_checkpoint(ctx, ckpt, steps_done)
            if plateaued and acc.is_main_process:
                console.print(f"eval/objective plateaued (run.early_stop): stopping after step {steps_done} of {total}")
            if plateaued or stopping:
                break
    finally:
        logger.close()
    finished = steps_done == total or plateaued
    if finished:
        ctx.parts.save_policy(acc, out / "model")
    results = {
        "steps": steps_done,
        "planned_steps": total,
        "finished": finished,
        "early_stop": watch.summary(plateaued),
        "final": metrics,
        "best_eval_reward": ctx.state.best_eval if math.isfinite(ctx.state.best_eval) else None,
        "best_step": ctx.state.best_step,
        "output_dir": str(out),
    }
    if acc.is_main_process:
        write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=float) + "\n")
        if (out / "model").is_dir():
            write_model_card(out / "model", config, results)
    acc.wait_for_everyone()
    return results
