"""Stage 1's sampler, chosen by ``rollout.engine``, and what a separate engine adds after stage 4.

- ``builtin``: :func:`prefalign.rollout.generate.generate` on the (gathered) policy, as always;
- ``vllm``: :class:`prefalign.rollout.vllm_engine.VLLMEngine`, made at the first rollout from the policy's
  weights and given them again before every later rollout (after each update); it also returns its own
  log-probs of the samples, kept in ``ctx.engine_logprobs``.

Stage 2 recomputes the old log-probs with the trainer whichever engine sampled. :func:`engine_corrections`
then logs the mismatch between the two (``rollout/mismatch_mean`` and ``rollout/mismatch_max``: mean and max
|pi_old / pi_rollout - 1| over all processes' response tokens) and, with ``rollout.importance_sampling_cap``,
applies truncated importance sampling by scaling each token's advantage by min(pi_old / pi_rollout, cap):
the clipped surrogate max(-A r, -A clip(r)) is positively homogeneous in A, so this weights each token's
policy-gradient term exactly (the value loss is untouched).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefalign.algorithms.rollout_correction import logprob_mismatch, truncated_importance_weights
from prefalign.rollout.experience import Experience
from prefalign.rollout.generate import Rollout, generate
from prefalign.trainers.common import global_sum
from prefalign.trainers.ppo.state import PPOContext


def check_engine(config) -> None:
    """Fail before any model is loaded when the selected engine cannot run here."""
    if config.rollout.engine != "vllm":
        return
    from prefalign.rollout.vllm_engine import require_vllm

    require_vllm()
    if not torch.cuda.is_available():
        raise ValueError("rollout.engine=vllm needs a GPU; use rollout.engine=builtin on a CPU")


def sample_rollout(ctx: PPOContext, policy: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], seed: int) -> Rollout:
    """Stage 1 with the configured engine (``policy``: the unwrapped policy with its full parameters)."""
    cfg = ctx.config
    if cfg.rollout.engine == "builtin":
        size = cfg.batch.generation_batch_size or cfg.batch.micro_batch_size
        return generate(policy, ctx.parts.tokenizer, prompt_ids, cfg.sampling, size, generator_seed=seed)
    from prefalign.rollout.vllm_engine import VLLMEngine

    if ctx.engine is None:
        ctx.engine = VLLMEngine(policy, ctx.parts.tokenizer, cfg.rollout.gpu_memory_utilization, cfg.run.seed)
    else:
        ctx.engine.push_weights(policy)  # the weights of the latest update
    rollout, ctx.engine_logprobs = ctx.engine.generate(prompt_ids, cfg.sampling, seed)
    return rollout.to(ctx.accelerator.device)


def engine_corrections(ctx: PPOContext, exp: Experience) -> dict[str, float]:
    """Mismatch metrics and (optional) truncated importance weights for a separate engine's samples; {} for builtin."""
    engine_logprobs = ctx.engine_logprobs
    if engine_logprobs is None:
        return {}
    acc = ctx.accelerator
    engine_logprobs = engine_logprobs.to(exp.old_logprobs.device)
    known = exp.response_mask.bool() & ~torch.isnan(engine_logprobs)  # an EOS the engine did not report: left out
    filled = torch.where(known, engine_logprobs, exp.old_logprobs)
    gap = logprob_mismatch(exp.old_logprobs, filled, known)
    count = int(known.sum())
    largest = gap["max"].reshape(1).to(acc.device)
    if acc.num_processes > 1:
        largest = acc.gather(largest)
    metrics = {
        "rollout/mismatch_mean": global_sum(gap["mean"] * count, acc) / max(global_sum(count, acc), 1.0),
        "rollout/mismatch_max": float(largest.max()),
    }
    cap = ctx.config.rollout.importance_sampling_cap
    if cap is not None:
        weights = truncated_importance_weights(exp.old_logprobs, filled, known, cap)
        weights = torch.where(known, weights, torch.ones_like(weights))  # prompt and unknown EOS: weight 1
        exp.advantages = exp.advantages * weights.to(exp.advantages.dtype)
        metrics["rollout/is_weight_mean"] = global_sum(weights[known].sum(), acc) / max(global_sum(count, acc), 1.0)
    ctx.engine_logprobs = None
    return metrics
