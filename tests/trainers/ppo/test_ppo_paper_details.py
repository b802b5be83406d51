"""The PPO details of issue 12: the value-loss coefficient, per-minibatch recomputation of advantages,
the sampler's top-k mask in the log-probs, and value normalisation with EMA statistics in a run."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

from prefalign.algorithms.advantages import compute_gae
from prefalign.algorithms.kl import kl_penalized_rewards
from prefalign.algorithms.masked import masked_whiten
from prefalign.algorithms.normalize import ExponentialMeanStd
from prefalign.models.logprobs import forward_logits, token_logprobs
from prefalign.models.tiny import tiny_model_and_tokenizer
from prefalign.rollout.experience import aligned_values, rollout_logprobs, rollout_logprobs_top_k
from prefalign.rollout.generate import SamplingConfig, generate
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.ppo import update as update_module
from prefalign.trainers.ppo.targets import refresh_minibatch
from prefalign.trainers.ppo.trainer import (
    build_context,
    ppo_step,
)
from tests.trainers.ppo.helpers import experience_at, tiny_config


def _context(tmp_path, overrides):
    cfg = tiny_config(tmp_path, overrides)
    return build_context(cfg, make_accelerator(cfg.run))


def test_adamw_ignores_a_constant_loss_scale():
    """Why the coefficient cannot scale the critic's loss: AdamW takes the same step for loss and 0.1 * loss."""
    steps = []
    for scale in (1.0, 0.1):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 1)
        opt = torch.optim.AdamW(layer.parameters(), lr=1e-2)
        before = layer.weight.detach().clone()
        for _ in range(3):
            (scale * layer(torch.randn(8, 4)).square().mean()).backward()
            opt.step()
            opt.zero_grad()
        steps.append(layer.weight.detach() - before)
    torch.testing.assert_close(steps[0], steps[1], rtol=1e-4, atol=1e-7)


def test_value_loss_coefficient_scales_the_critic_step_and_leaves_the_actor(tmp_path):
    """alpha = 0.1 moves the critic a tenth as far as alpha = 1 on the same minibatch (the step SGD takes on
    alpha * value_loss); the policy's update is the same."""
    after = {}
    for coef in (1.0, 0.1):
        overrides = {"ppo": {"value_loss_coef": coef}, "batch": {"num_minibatches": 1, "steps": 1}}
        ctx = _context(tmp_path / str(coef), overrides)
        critic0 = {k: v.detach().clone() for k, v in ctx.parts.critic.named_parameters()}
        policy0 = {k: v.detach().clone() for k, v in ctx.parts.policy.named_parameters()}
        ppo_step(ctx, 0)
        after[coef] = (
            {k: v.detach() - critic0[k] for k, v in ctx.parts.critic.named_parameters()},
            {k: v.detach() - policy0[k] for k, v in ctx.parts.policy.named_parameters()},
        )
        assert ctx.parts.critic_optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * coef)
    (critic_1, policy_1), (critic_01, policy_01) = after[1.0], after[0.1]
    moved = [k for k in critic_1 if critic_1[k].abs().max() > 0]
    assert moved
    for k in moved:
        torch.testing.assert_close(critic_01[k], 0.1 * critic_1[k], rtol=1e-3, atol=1e-9)
    for k in policy_1:
        torch.testing.assert_close(policy_01[k], policy_1[k])


def test_recompute_refreshes_advantages_and_targets_from_the_current_models(tmp_path):
    ctx = _context(tmp_path, {"ppo": {"recompute_old": True}})
    exp = experience_at(ctx)
    critic = ctx.parts.critic
    with torch.no_grad():  # the critic after "an update": every value moves
        for p in critic.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mb = exp.select(list(range(len(exp) // 2)))
    fresh = refresh_minibatch(ctx, mb)
    mask = mb.response_mask
    # The hand composition from the current models: values, KL rewards, GAE, whitening over the minibatch.
    with torch.no_grad():
        values = aligned_values(critic, mb.sequences, mb.attention_mask) * mask
        logprobs = token_logprobs(ctx.parts.policy, mb.sequences, mb.attention_mask, mask)
    rewards, _ = kl_penalized_rewards(mb.scores, logprobs, mb.ref_logprobs, mask, ctx.config.kl.coef, "k1")
    advantages, returns = compute_gae(rewards, values, mask, ctx.config.ppo.gamma, ctx.config.ppo.lam)
    torch.testing.assert_close(fresh.old_values, values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fresh.returns, returns, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fresh.advantages, masked_whiten(advantages, mask), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fresh.returns, mb.returns, atol=1e-3)  # not the rollout-time targets
    assert not torch.allclose(fresh.advantages, mb.advantages, atol=1e-3)


def test_recompute_feeds_the_refreshed_advantages_to_every_minibatch(tmp_path, monkeypatch):
    ctx = _context(tmp_path, {"ppo": {"recompute_old": True}})
    exp = experience_at(ctx)
    seen, refreshed = [], []
    real_loss, real_refresh = update_module.ppo_policy_loss, refresh_minibatch

    def spy_loss(logprobs, old_logprobs, advantages, *args, **kwargs):
        seen.append(advantages.clone())
        return real_loss(logprobs, old_logprobs, advantages, *args, **kwargs)

    def spy_refresh(mb):
        out = real_refresh(ctx, mb)
        refreshed.append(out.advantages.clone())
        return out

    monkeypatch.setattr(update_module, "ppo_policy_loss", spy_loss)
    update_module.ppo_update(ctx.accelerator, ctx.parts.update_parts(), ctx.settings, exp, 0, None, spy_refresh)
    assert len(refreshed) == ctx.config.batch.num_minibatches <= len(seen)  # rows may run in length groups
    used_rows = torch.sort(torch.cat([used.sum(dim=1) for used in seen])).values  # every row once, any order
    fresh_rows = torch.sort(torch.cat([fresh.sum(dim=1) for fresh in refreshed])).values
    torch.testing.assert_close(used_rows, fresh_rows)
    with pytest.raises(ValueError, match="refresh"):
        update_module.ppo_update(ctx.accelerator, ctx.parts.update_parts(), ctx.settings, exp, 0)


def test_top_k_logprobs_are_the_samplers_distribution():
    """Log-probs under the recorded top-k support equal log softmax of Hugging Face's temperature + top-k
    warped logits (what `generate` samples from), for the sampling policy; the reference and the
    per-minibatch recomputation reuse the recorded support."""
    model, tok = tiny_model_and_tokenizer(seed=0)
    model.eval()
    sampling = SamplingConfig(temperature=0.7, top_k=5, max_new_tokens=8, num_samples=2)
    rollout = generate(model, tok, [[5, 6, 7], [8, 9, 10, 11, 12]], sampling, micro_batch_size=4, generator_seed=3)
    logprobs, support = rollout_logprobs_top_k(model, rollout, 3, 0.7, 5)
    assert support.shape == (*rollout.sequences.shape, 5)
    warpers = (TemperatureLogitsWarper(0.7), TopKLogitsWarper(5))
    with torch.no_grad():
        logits = forward_logits(model, rollout.sequences, rollout.attention_mask)  # (N, T, V)
    for i in range(len(rollout)):
        for t in rollout.response_mask[i].nonzero().flatten().tolist():
            scores = logits[i, t - 1][None].float()
            for warp in warpers:
                scores = warp(rollout.sequences[i, :t][None], scores)
            expected = torch.log_softmax(scores, dim=-1)[0, rollout.sequences[i, t]]
            assert torch.isfinite(expected)  # the sampled token is in the sampler's top-k
            assert abs(float(logprobs[i, t]) - float(expected)) < 1e-5
            assert set(support[i, t].tolist()) == set(torch.isfinite(scores[0]).nonzero().flatten().tolist())
    again = rollout_logprobs(model, rollout, 2, 0.7, support=support)
    torch.testing.assert_close(again, logprobs, atol=1e-5, rtol=0)
    full = rollout_logprobs(model, rollout, 2, 0.7)
    assert torch.all(logprobs >= full - 1e-6) and (logprobs - full).abs().max() > 1e-3


def test_xu_style_run_uses_the_top_k_support_and_ema_value_statistics(tmp_path):
    overrides = {
        "sampling": {"top_k": 20},
        "ppo": {"logprobs_top_k": True, "value_normalization": True, "value_normalization_beta": 0.9},
        "batch": {"steps": 1},
    }
    ctx = _context(tmp_path, overrides)
    assert isinstance(ctx.state.value_stats, ExponentialMeanStd)
    exp = experience_at(ctx)
    assert exp.support is not None and exp.support.shape[-1] == 20
    sub = exp.select([0, 1])
    assert sub.support.shape == (2, sub.sequences.shape[1], 20)
    assert float(ctx.state.value_stats.debias) == pytest.approx(0.1)  # one update, weight 1 - beta
    metrics = ppo_step(ctx, 1)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    with pytest.raises(ValueError, match="top_k"):
        tiny_config(tmp_path, {"ppo": {"logprobs_top_k": True}})
