"""One PPO step on the embedded SmolLM2-135M (policy, reference, critic and reward model)."""

from __future__ import annotations

import math

import pytest

from prefalign.config import build_config
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.ppo.trainer import PRESETS, PPOConfig, build_context, ppo_step


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["ivison", "xu"])
def test_one_ppo_step_on_smollm2(tmp_path, preset):
    config = build_config(
        PPOConfig,
        presets=PRESETS,
        preset=preset,
        overrides={
            "policy": {"name_or_path": "smollm2-135m-instruct"},
            "reward": {"model": {"name_or_path": "smollm2-135m-instruct"}},  # a fresh scalar head on the backbone
            "data": {"source": "synthetic", "num_prompts": 8, "validation_prompts": 0},
            "sampling": {"max_new_tokens": 8, "num_samples": 2},
            "batch": {"rollout_batch_size": 4, "num_minibatches": 2, "micro_batch_size": 2, "steps": 1},
            "run": {"output_dir": str(tmp_path), "threads": 1, "tensorboard": False, "progress": False},
        },
    )
    ctx = build_context(config, make_accelerator(config.run))
    assert ctx.parts.scorer.parts[0][2], "the reward model shares the policy's tokenizer: token path"
    metrics = ppo_step(ctx, 0)
    for name in ("reward/mean", "kl/mean", "entropy", "value_loss", "approx_kl", "clipfrac"):
        assert math.isfinite(metrics[name]), name
    assert abs(metrics["kl/mean"]) < 1e-4  # the reference is the policy before the step
    assert metrics["entropy"] > 0 and 1 <= metrics["response_length"] <= 8
