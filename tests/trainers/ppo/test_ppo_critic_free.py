"""PPO with a critic-free advantage estimator (ppo.advantage_estimator): the settings it refuses, no critic
anywhere (models, checkpoint, metrics), the advantages the trainer feeds the update, resume, and each
estimator raising a programmatic reward on the tiny task."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from prefalign.algorithms.critic_free import grpo_advantages, rloo_advantages
from prefalign.config import ConfigError, merge
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.logging import read_metrics
from prefalign.trainers.ppo.trainer import build_context, build_experience, run_ppo, stage_rollout, stage_score
from tests.trainers.ppo.helpers import tiny_config

CRITIC_FREE = ("grpo", "rloo", "reinforce_pp", "remax")


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_group_estimators_refuse_one_sample_per_prompt_naming_the_fields(tmp_path, estimator):
    with pytest.raises(ConfigError, match=rf"advantage_estimator={estimator}.*sampling\.num_samples >= 2, got 1"):
        tiny_config(tmp_path, {"ppo": {"advantage_estimator": estimator}, "sampling": {"num_samples": 1}})


def test_critic_settings_and_unknown_estimators_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="ppo.value_normalization needs a critic"):
        tiny_config(tmp_path, {"ppo": {"advantage_estimator": "rloo", "value_normalization": True}})
    with pytest.raises(ConfigError, match="ppo.recompute_old needs a critic"):
        tiny_config(tmp_path, {"ppo": {"advantage_estimator": "remax", "recompute_old": True}})
    with pytest.raises(ConfigError, match="advantage_estimator must be one of"):
        tiny_config(tmp_path, {"ppo": {"advantage_estimator": "vtrace"}})
    # no critic: critic_init=reward with a programmatic reward is no longer a contradiction
    config = tiny_config(tmp_path, {"ppo": {"advantage_estimator": "remax"}, "critic_init": "reward"})
    assert not config.ppo.uses_critic


def _context(tmp_path, estimator, **extra):
    overrides = merge({"ppo": {"advantage_estimator": estimator}, "sampling": {"num_samples": 4}}, extra)
    config = tiny_config(tmp_path, overrides)
    return build_context(config, make_accelerator(config.run))


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_trainer_feeds_the_group_advantage_of_the_kl_penalised_sequence_reward(tmp_path, estimator):
    ctx = _context(tmp_path, estimator, kl={"coef": 0.1}, ppo={"advantage_normalization": False})
    assert ctx.parts.critic is None and ctx.parts.critic_optimizer is None
    rollout, prompts = stage_rollout(ctx, 0)
    exp = build_experience(ctx, rollout, stage_score(ctx, rollout, prompts, 0))[0]
    mask = exp.response_mask.bool()
    sequence = exp.scores - 0.1 * (exp.kl * mask).sum(dim=1)  # score - beta * sum_t KL_t
    expected = grpo_advantages(sequence, 4) if estimator == "grpo" else rloo_advantages(sequence, 4)
    for i in range(len(exp)):
        assert torch.allclose(exp.advantages[i][mask[i]], expected[i].expand(int(mask[i].sum())), atol=1e-5)
        assert exp.advantages[i][~mask[i]].abs().sum() == 0
    assert torch.equal(exp.old_values, torch.zeros_like(exp.old_values))


def test_remax_subtracts_the_score_of_a_greedy_response_to_the_same_prompt(tmp_path):
    from prefalign.rollout.generate import generate

    ctx = _context(tmp_path, "remax", kl={"coef": 0.0}, ppo={"advantage_normalization": False})
    rollout, prompts = stage_rollout(ctx, 0)
    scored = stage_score(ctx, rollout, prompts, 0)
    exp = build_experience(ctx, rollout, scored)[0]
    # the baseline, recomputed here: greedy decoding of each prompt, scored by the same reward
    prompt_ids = [rollout.sequences[i, : int(rollout.prompt_lengths[i])].tolist() for i in range(0, len(rollout), 4)]
    greedy_sampling = type(ctx.config.sampling)(temperature=0.0, max_new_tokens=ctx.config.sampling.max_new_tokens)
    greedy = generate(ctx.parts.policy, ctx.parts.tokenizer, prompt_ids, greedy_sampling, 8)
    baseline = ctx.parts.scorer(greedy, prompts)
    assert torch.allclose(scored["greedy_raw_scores"], baseline)
    mask = exp.response_mask.bool()
    for i in range(len(exp)):
        assert torch.allclose(exp.advantages[i][mask[i]], (exp.scores[i] - baseline[i // 4]).expand(int(mask[i].sum())))


def test_no_critic_is_built_trained_or_saved_and_a_resume_is_exact(tmp_path):
    overrides = {"ppo": {"advantage_estimator": "rloo"}, "batch": {"steps": 3}, "run": {"eval_every": 1}}
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_ppo(tiny_config(whole, overrides))
    run_ppo(tiny_config(parts, {**overrides, "stop_after": 1}))
    run_ppo(tiny_config(parts, merge(overrides, {"run": {"resume": True}})))
    for run in (whole, parts):
        checkpoint = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
        # prepared models go through accelerate's save_state (one file per model), frozen ones beside it
        assert sorted(p.name for p in checkpoint.glob("*.safetensors")) == ["reference.safetensors"]
        assert sorted(p.name for p in (checkpoint / "accelerate").glob("model*.safetensors")) == ["model.safetensors"]
        state = torch.load(checkpoint / "state.pt", weights_only=False)
        assert state["layout"]["prepared_models"] == ["policy"]
        assert set(state["schedulers"]) == {"actor"}
    rows = read_metrics(whole / "metrics.jsonl")
    assert all("value_loss" not in r and "explained_variance" not in r and "grad_norm/critic" not in r for r in rows)
    assert all("policy_loss" in r for r in rows)
    a, b = (
        load_file(str(r / "checkpoints" / "step-00000003" / "accelerate" / "model.safetensors")) for r in (whole, parts)
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((parts / "results.json").read_text())["finished"]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", CRITIC_FREE)
def test_each_estimator_raises_a_programmatic_reward_on_the_tiny_task(tmp_path, estimator):
    """Reward = fraction of lowercase letters in the response; the random tiny policy starts near 0.1. RLOO and
    ReMax without whitening, as their presets (their raw advantages, about 0.1 here)."""
    config = tiny_config(
        tmp_path,
        {
            "ppo": {"advantage_estimator": estimator, "advantage_normalization": estimator not in ("rloo", "remax")},
            "batch": {"steps": 20, "rollout_batch_size": 32, "num_minibatches": 2, "micro_batch_size": 16},
            "sampling": {"max_new_tokens": 8, "num_samples": 4},
            "kl": {"coef": 0.0},
            "actor_optim": {"learning_rate": 1e-2},
        },
    )
    results = run_ppo(config)
    rewards = [r["reward/mean"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print(
        f"{estimator}: first 5 steps {first:.3f}, last 5 steps {last:.3f}, validation {results['best_eval_reward']:.3f}"
    )
    assert first < 0.25
    assert last > first + 0.3
    assert results["best_eval_reward"] > 0.5
