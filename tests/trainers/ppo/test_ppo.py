"""PPO trainer: end-to-end smoke run, reward placement through the trainer, accumulation invariance,
non-finite values, and learning a tiny programmatic task."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from prefalign.cli import main
from prefalign.rewards.registry import register_task_reward
from prefalign.rollout.generate import build_rollout
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.logging import read_metrics
from prefalign.trainers.ppo import update as ppo_update_module
from prefalign.trainers.ppo.trainer import (
    build_context,
    run_ppo,
    stage_rewards,
    stage_score,
)
from prefalign.trainers.ppo.update import ppo_update
from tests.trainers.ppo.helpers import METRIC_NAMES, checkpoint_tensors, experience_at, sgd_update_parts, tiny_config


def test_cli_smoke_run_writes_metrics_checkpoint_and_models(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "ppo",
            "--preset",
            "tiny",
            "--run.output_dir",
            str(out),
            "--run.threads",
            "1",
            "--batch.steps",
            "2",
            "--run.tensorboard",
            "True",
            "--run.eval_every",
            "1",
        ]
    )
    assert code == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for name in METRIC_NAMES + ("eval/reward",):
        assert all(isinstance(r[name], float) for r in rows), name
    assert 0.0 <= rows[-1]["truncated_fraction"] <= 1.0 and rows[-1]["response_length"] > 0
    for path in (
        "config.yaml",
        "results.json",
        "best.json",
        "model/config.json",
        "best/config.json",
        "checkpoints/latest",
    ):
        assert (out / path).exists(), path
    assert list((out / "tensorboard").glob("events.*"))
    results = json.loads((out / "results.json").read_text())
    assert results["finished"] and results["steps"] == 2


def _model_reward_context(tmp_path, truncated_reward=None):
    config = tiny_config(
        tmp_path,
        {
            "critic_init": "reward",
            "kl": {"coef": 0.1},
            "reward": {"kind": "model", "model": {"name_or_path": "tiny-random"}, "truncated_reward": truncated_reward},
        },
    )
    return build_context(config, make_accelerator(config.run))


@pytest.mark.parametrize("truncated_reward", [None, -10.0])
def test_sequence_reward_lands_on_the_last_real_token_through_the_trainer(tmp_path, truncated_reward):
    ctx = _model_reward_context(tmp_path, truncated_reward)
    tok, eos = ctx.parts.tokenizer, ctx.parts.tokenizer.eos_token_id
    prompts = ctx.train_prompts[:3]
    prompt_ids = ctx.train_ids[:3]
    responses = [[70, 71, eos], [72, 73, 74, 75], [eos]]  # the second is cut off without EOS
    ro = build_rollout(prompt_ids, responses, [True, False, True], [0, 1, 2], tok)
    scored = stage_score(ctx, ro, prompts, step=0)
    learned = ctx.parts.scorer.parts[0][1]
    for i in range(3):  # the reward model read each row at its last real token
        n = int(ro.attention_mask[i].sum())
        alone = learned.score_tokens(ro.sequences[i : i + 1, :n], ro.attention_mask[i : i + 1, :n])
        torch.testing.assert_close(scored["raw_scores"][i : i + 1], alone, atol=1e-5, rtol=0)
    scores, token_rewards, kl = stage_rewards(ctx, ro, scored)
    expected_scores = scored["raw_scores"].clone()
    if truncated_reward is not None:
        expected_scores[1] = truncated_reward
    torch.testing.assert_close(scores, expected_scores)
    sequence_part = token_rewards + 0.1 * kl  # what is left once the per-token KL penalty is removed
    last = ro.prompt_lengths + ro.response_lengths - 1
    for i in range(3):
        expected = torch.zeros(ro.sequences.shape[1])
        expected[last[i]] = scores[i]
        torch.testing.assert_close(sequence_part[i], expected, atol=1e-6, rtol=0)
    assert torch.all(kl[ro.response_mask == 0] == 0)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean"])
def test_more_micro_batches_leave_the_update_unchanged(tmp_path, aggregation):
    """Same rollout batch, micro-batches of 8, 3 and 1 rows: the same parameters after the update (SGD, so
    the update is linear in the gradient and a wrongly normalised micro-batch loss would show)."""
    overrides = {
        "ppo": {"ppo_epochs": 2, "loss_aggregation": aggregation},
        "batch": {"num_minibatches": 2, "micro_batch_size": 8},
    }
    config = tiny_config(tmp_path, overrides)
    ctx = build_context(config, make_accelerator(config.run))
    exp = experience_at(ctx)
    start = {k: copy.deepcopy(v.state_dict()) for k, v in (("policy", ctx.parts.policy), ("critic", ctx.parts.critic))}
    results = {}
    for micro in (8, 3, 1):
        ctx.parts.policy.load_state_dict(start["policy"])
        ctx.parts.critic.load_state_dict(start["critic"])
        settings = dataclasses.replace(
            ctx.settings, micro_batch_size=micro, actor_max_grad_norm=None, critic_max_grad_norm=None
        )
        stats = ppo_update(ctx.accelerator, sgd_update_parts(ctx, lr=0.1), settings, exp, step=0)
        results[micro] = (
            copy.deepcopy(ctx.parts.policy.state_dict()),
            copy.deepcopy(ctx.parts.critic.state_dict()),
            stats,
        )
    moved = max(float((results[8][0][k] - v).abs().max()) for k, v in start["policy"].items())
    assert moved > 1e-3, "the update should move the policy"
    for micro in (3, 1):
        for which in (0, 1):
            for name, tensor in results[8][which].items():
                torch.testing.assert_close(results[micro][which][name], tensor, atol=1e-6, rtol=1e-5, msg=name)
        for key in ("policy_loss", "value_loss", "clipfrac", "approx_kl", "entropy"):
            assert results[micro][2][key] == pytest.approx(results[8][2][key], rel=1e-4, abs=1e-6), key


class _NaNAfter:
    """Finite rewards for the first ``good`` calls, then NaN."""

    def __init__(self, good: int):
        self.calls, self.good, self.name = 0, good, "nan_after"

    def __call__(self, prompts, responses):
        self.calls += 1
        value = float("nan") if self.calls > self.good else 0.5
        return torch.full((len(responses),), value)


def test_non_finite_reward_stops_before_any_checkpoint_is_overwritten(tmp_path):
    register_task_reward("test_nan_after", lambda arg: _NaNAfter(int(arg)))
    config = tiny_config(
        tmp_path, {"reward": {"task": "test_nan_after:2"}, "batch": {"steps": 4}, "run": {"save_every": 1}}
    )
    with pytest.raises(FloatingPointError, match="non-finite reward at step 2"):
        run_ppo(config)
    latest = (tmp_path / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-00000002"
    assert not (tmp_path / "results.json").exists()


def test_non_finite_loss_stops_before_the_optimizer_step(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, {"batch": {"steps": 2}, "run": {"save_every": 1}})
    ctx = build_context(config, make_accelerator(config.run))
    exp = experience_at(ctx)
    before = copy.deepcopy(ctx.parts.policy.state_dict())
    real = ppo_update_module.ppo_policy_loss

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(ppo_update_module, "ppo_policy_loss", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite policy loss"):
        ppo_update(ctx.accelerator, ctx.parts.update_parts(), ctx.settings, exp, step=0)
    for name, tensor in ctx.parts.policy.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_ppo_raises_a_programmatic_reward_on_the_tiny_task(tmp_path):
    """Reward = fraction of lowercase letters in the response; the random tiny policy starts near 0.1."""
    config = tiny_config(
        tmp_path,
        {
            "batch": {"steps": 20, "rollout_batch_size": 32, "num_minibatches": 2, "micro_batch_size": 16},
            "sampling": {"max_new_tokens": 8, "num_samples": 4},
            "kl": {"coef": 0.0},
            "actor_optim": {"learning_rate": 1e-2},
            "critic_optim": {"learning_rate": 1e-2},
        },
    )
    results = run_ppo(config)
    rewards = [r["reward/mean"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    print(
        f"tiny task reward: first 5 steps {first:.3f}, last 5 steps {last:.3f}, validation "
        f"{results['best_eval_reward']:.3f}"
    )
    assert first < 0.25
    assert last > first + 0.3
    assert results["best_eval_reward"] > 0.5
    assert checkpoint_tensors(tmp_path)["policy"]
