"""Scoring a trained policy on the tiny world's held-out prompts.

For a policy folder (any HF causal LM with the world's tokenizer), :func:`evaluate_policy` reports:

- from one **greedy** response per prompt (returned as ``greedy_responses``, so other reward models
  can score them) (the headline numbers, as in the papers' pass@1 with
  greedy decoding): the gold reward (``gold/score``), the safety rate on unsafe prompts
  (``gold/safety_rate``), exact accuracy, helpfulness and over-refusal on safe prompts, and the
  learned reward model's mean score (``rm/score``) when a reward model is given;
- from ``samples_per_prompt`` **sampled** responses per prompt at temperature 1 (a fixed seed): the
  gold reward (``sampled/gold_score``), the unbiased pass@k of Chen et al. (2021) for each k of
  ``pass_k`` (``pass@k``: a sample passes when it passes every test case, the verifiable testbed's
  reward), and the sequence-level KL to the reference policy,
  ``kl = E_{y ~ pi}[log pi(y|x) - log pi_ref(y|x)]`` estimated by the mean over the samples of the
  summed token log-ratio (the k1 estimator), ``kl/mean``.

:func:`curve_point` is the cheaper evaluation of a checkpoint during training (the over-optimisation
curves): one sampled response per prompt, its gold reward, learned reward and KL to the reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from prefalign.data.schema import Prompt
from prefalign.data.tokenize import encode_prompt
from prefalign.evaluation.metrics import mean_pass_at_k
from prefalign.models.load import ModelConfig, load_causal_lm, load_reward_model, load_tokenizer
from prefalign.rewards.learned import LearnedReward
from prefalign.rollout.experience import rollout_kl
from prefalign.rollout.generate import Rollout, SamplingConfig, generate
from prefalign.studies.comparison.tiny_world.task import Problem, TinyWorldTask, fully_correct


@dataclasses.dataclass
class EvalConfig:
    max_new_tokens: int = 12
    """Longest response generated (reference answers are at most 4 words)."""
    micro_batch_size: int = 64
    """Sequences per forward or generate call."""
    sample_seed: int = 1234
    """Seed of the sampled responses (the same for every policy)."""
    samples_per_prompt: int = 10
    """Sampled responses per held-out prompt (temperature 1): pass@k, sampled gold reward and KL."""
    pass_k: list[int] = dataclasses.field(default_factory=lambda: [1, 5])
    """The k of the reported pass@k (each at most samples_per_prompt)."""
    curve_prompts: int = 128
    """Held-out prompts of each point of the over-optimisation curves (one sample each)."""

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 1 or any(not 1 <= k <= self.samples_per_prompt for k in self.pass_k):
            raise ValueError(
                f"evaluation: samples_per_prompt must be >= 1 and every pass_k in [1, samples_per_prompt], "
                f"got {self.samples_per_prompt} and {self.pass_k}"
            )


def load_learned_reward(model_dir: str, micro_batch_size: int = 64) -> LearnedReward:
    cfg = ModelConfig(name_or_path=model_dir)
    return LearnedReward(load_reward_model(cfg), load_tokenizer(cfg), micro_batch_size)


def _load(policy_dir: str, reference_dir: str):
    cfg = ModelConfig(name_or_path=policy_dir)
    policy = load_causal_lm(cfg).eval()
    reference = (
        policy if reference_dir == policy_dir else load_causal_lm(ModelConfig(name_or_path=reference_dir)).eval()
    )
    return load_tokenizer(cfg), policy, reference


def pass_at_k_metrics(prompts: Sequence[Prompt], rollout: Rollout, ks: Sequence[int]) -> dict[str, float]:
    """Unbiased pass@k over the prompts from the rollout's samples (every test case passed counts as a pass)."""
    problems = [Problem.from_metadata(p.metadata) for p in prompts]
    correct = [0] * len(prompts)
    counts = [0] * len(prompts)
    for i, text in zip(rollout.prompt_index.tolist(), rollout.response_texts):
        counts[i] += 1
        correct[i] += int(fully_correct(problems[i], text))
    return {f"pass@{k}": mean_pass_at_k(counts, correct, k) for k in ks}


@torch.no_grad()
def evaluate_policy(
    policy_dir: str,
    reference_dir: str,
    prompts: Sequence[Prompt],
    config: EvalConfig,
    reward_model: LearnedReward | None = None,
) -> dict[str, Any]:
    """The metrics of the module docstring for the policy in ``policy_dir`` (reference: ``reference_dir``)."""
    tokenizer, policy, reference = _load(policy_dir, reference_dir)
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
    n = config.samples_per_prompt
    sampled = generate(
        policy,
        tokenizer,
        ids,
        SamplingConfig(temperature=1.0, max_new_tokens=config.max_new_tokens, num_samples=n),
        config.micro_batch_size,
        generator_seed=config.sample_seed,
    )
    repeated = [prompts[i] for i in sampled.prompt_index.tolist()]
    metrics["sampled/gold_score"] = task.aggregate(task.score(repeated, sampled.response_texts))["score"]
    metrics.update(pass_at_k_metrics(prompts, sampled, config.pass_k))
    metrics["kl/mean"] = float(rollout_kl(policy, reference, sampled, config.micro_batch_size).mean())
    first = [j for j, i in enumerate(sampled.prompt_index.tolist()) if j % n == 0][:12]
    examples = [
        {"prompt": p.messages[-1].content, "greedy": g, "sampled": sampled.response_texts[j]}
        for p, g, j in zip(prompts[:12], greedy.response_texts[:12], first)
    ]
    return {"metrics": metrics, "examples": examples, "greedy_responses": greedy.response_texts}


@torch.no_grad()
def curve_point(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Prompt],
    config: EvalConfig,
    reward_model: LearnedReward | None = None,
) -> dict[str, float]:
    """Gold reward, learned reward and KL to ``reference`` of one sampled response per prompt (fixed seed)."""
    prompts = list(prompts)[: config.curve_prompts]
    ids = [encode_prompt(tokenizer, p.messages) for p in prompts]
    sampled = generate(
        policy,
        tokenizer,
        ids,
        SamplingConfig(temperature=1.0, max_new_tokens=config.max_new_tokens),
        config.micro_batch_size,
        generator_seed=config.sample_seed,
    )
    task = TinyWorldTask(prompts)
    point = {
        "gold": task.aggregate(task.score(prompts, sampled.response_texts))["score"],
        "kl": float(rollout_kl(policy, reference, sampled, config.micro_batch_size).mean()),
    }
    if reward_model is not None:
        point["rm"] = float(reward_model(prompts, sampled.response_texts).mean())
    return point
