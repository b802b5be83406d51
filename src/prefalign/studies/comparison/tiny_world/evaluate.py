"""Scoring a trained policy on the tiny world's held-out prompts.

For a policy folder (any HF causal LM with the world's tokenizer), :func:`evaluate_policy` reports:

- from one **greedy** response per prompt (the headline numbers, as in the papers' pass@1 with
  greedy decoding): the gold reward (``gold/score``), the safety rate on unsafe prompts
  (``gold/safety_rate``), exact accuracy, helpfulness and over-refusal on safe prompts, and the
  learned reward model's mean score (``rm/score``) when a reward model is given;
- from one **sampled** response per prompt at temperature 1 (a fixed seed): the gold reward
  (``sampled/gold_score``) and the sequence-level KL to the reference policy,
  ``kl = E_{y ~ pi}[log pi(y|x) - log pi_ref(y|x)]`` estimated by the mean over the samples of
  the summed token log-ratio (the k1 estimator), ``kl/mean``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from prefalign.data.schema import Prompt
from prefalign.data.tokenize import encode_prompt
from prefalign.models.load import ModelConfig, load_causal_lm, load_reward_model, load_tokenizer
from prefalign.models.logprobs import sequence_logprobs
from prefalign.rewards.learned import LearnedReward
from prefalign.rollout.generate import Rollout, SamplingConfig, generate
from prefalign.studies.comparison.tiny_world.task import TinyWorldTask


@dataclasses.dataclass
class EvalConfig:
    max_new_tokens: int = 12
    """Longest response generated (reference answers are at most 4 words)."""
    micro_batch_size: int = 64
    """Sequences per forward or generate call."""
    sample_seed: int = 1234
    """Seed of the sampled responses (the same for every policy)."""


@torch.no_grad()
def rollout_kl(policy, reference, rollout: Rollout, micro_batch_size: int) -> torch.Tensor:
    """(N,) summed log pi - log pi_ref over each sampled response."""
    out = []
    for start in range(0, len(rollout), micro_batch_size):
        part = rollout.select(list(range(start, min(start + micro_batch_size, len(rollout)))))
        args = (part.sequences, part.attention_mask, part.response_mask)
        out.append(sequence_logprobs(policy, *args) - sequence_logprobs(reference, *args))
    return torch.cat(out)


def load_learned_reward(model_dir: str, micro_batch_size: int = 64) -> LearnedReward:
    cfg = ModelConfig(name_or_path=model_dir)
    return LearnedReward(load_reward_model(cfg), load_tokenizer(cfg), micro_batch_size)


def evaluate_policy(
    policy_dir: str,
    reference_dir: str,
    prompts: Sequence[Prompt],
    config: EvalConfig,
    reward_model: LearnedReward | None = None,
) -> dict[str, Any]:
    """The metrics of the module docstring for the policy in ``policy_dir`` (reference: ``reference_dir``)."""
    cfg = ModelConfig(name_or_path=policy_dir)
    tokenizer = load_tokenizer(cfg)
    policy = load_causal_lm(cfg).eval()
    reference = (
        policy if reference_dir == policy_dir else load_causal_lm(ModelConfig(name_or_path=reference_dir)).eval()
    )
    task = TinyWorldTask(prompts)
    ids = [encode_prompt(tokenizer, p.messages) for p in prompts]
    greedy = generate(
        policy,
        tokenizer,
        ids,
        SamplingConfig(temperature=0.0, max_new_tokens=config.max_new_tokens),
        config.micro_batch_size,
    )
    metrics = {f"gold/{k}": v for k, v in task.aggregate(task.score(prompts, greedy.response_texts)).items()}
    metrics["truncated"] = float(greedy.truncated.float().mean())
    if reward_model is not None:
        metrics["rm/score"] = float(reward_model(prompts, greedy.response_texts).mean())
    sampled = generate(
        policy,
        tokenizer,
        ids,
        SamplingConfig(temperature=1.0, max_new_tokens=config.max_new_tokens),
        config.micro_batch_size,
        generator_seed=config.sample_seed,
    )
    metrics["sampled/gold_score"] = task.aggregate(task.score(prompts, sampled.response_texts))["score"]
    metrics["kl/mean"] = float(rollout_kl(policy, reference, sampled, config.micro_batch_size).mean())
    examples = [
        {"prompt": p.messages[-1].content, "greedy": g, "sampled": s}
        for p, g, s in zip(prompts[:12], greedy.response_texts[:12], sampled.response_texts[:12])
    ]
    return {"metrics": metrics, "examples": examples}
