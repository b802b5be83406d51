"""DPO-Iter's held-out objective: the KL-regularised reward of one sampled response per validation prompt.

For the model after round r (the starting model M_0 for r = 0), on the ``validation_prompts`` held out of
every round: ``eval/reward`` is the mean reward (the run's own reward source) of one response per prompt,
``eval/kl`` the mean over those responses of the summed log M_r - log M_0 of their tokens (a forward pass of
M_0; the sampler's own log-probs of M_r where it sampled at temperature 1, else a forward pass), and
``eval/objective = eval/reward - beta x eval/kl``: the KL-regularised objective of RLHF (Xu et al. eq. 1,
with DPO-Iter's own beta and its starting model as the reference) that each round's DPO approximates
against the previous round's model. Its raw reward alone is not the objective: labelled by a learned reward
model it keeps rising while the policy drifts (reward over-optimisation), so it has no plateau short of that.

Responses are sampled at ``sampling.temperature`` (the KL estimate is unbiased at 1.0), seeded by the round, so
every process computes the same numbers on its own (the sets are small).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from prefalign.data.schema import Prompt
from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer
from prefalign.rewards.base import RewardFunction
from prefalign.rollout.experience import rollout_kl
from prefalign.rollout.generate import generate
from prefalign.trainers.preference.iterative_config import IterativeDPOConfig
from prefalign.trainers.preference.labelling import chunk_seed, prompt_token_ids

#: sampling seeds of the validation passes: round index offset so they never share a stream with a round's sampling
VALIDATION_ROUND = 100_000


@torch.no_grad()
def validation_objective(
    config: IterativeDPOConfig,
    model_cfg: ModelConfig,
    validation: Sequence[Prompt],
    round_index: int,
    reward_fn: RewardFunction,
    device: torch.device,
) -> dict[str, float]:
    """``eval/reward``, ``eval/kl`` and ``eval/objective`` of the model in ``model_cfg`` (see the module docstring)."""
    policy = load_causal_lm(model_cfg, seed=config.run.seed).to(device).eval()
    starting = model_cfg.name_or_path == config.model.name_or_path
    reference = None if starting else load_causal_lm(config.model, seed=config.run.seed).to(device).eval()
    tokenizer = load_tokenizer(model_cfg)
    ids = prompt_token_ids(tokenizer, validation, config.data)
    sampling = dataclasses.replace(config.sampling, num_samples=1)
    size = max(1, config.generation_micro_batch_size)
    rewards: list[float] = []
    kls: list[float] = []
    for chunk, begin in enumerate(range(0, len(validation), size)):
        index = list(range(begin, min(begin + size, len(validation))))
        rollout = generate(
            policy,
            tokenizer,
            [ids[i] for i in index],
            sampling,
            micro_batch_size=len(index),
            generator_seed=chunk_seed(config.run.seed, VALIDATION_ROUND + round_index, chunk),
        )
        rows = [index[int(j)] for j in rollout.prompt_index]
        rewards += [float(r) for r in reward_fn([validation[i] for i in rows], rollout.response_texts)]
        if reference is None:
            kls += [0.0] * len(rows)  # the starting model is its own reference
        else:  # at temperature 1; the sampler's own log-probs serve when it sampled at 1
            kls += rollout_kl(policy, reference, rollout, size, sampler_logprobs=sampling.temperature == 1.0).tolist()
    reward, kl = sum(rewards) / len(rewards), sum(kls) / len(kls)
    return {"eval/reward": reward, "eval/kl": kl, "eval/objective": reward - config.beta * kl}
