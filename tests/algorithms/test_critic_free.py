"""Critic-free estimators against plain Python loops (the slow references), equal-reward groups, shapes."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.algorithms.critic_free import (
    broadcast_to_tokens,
    grpo_advantages,
    reinforce_pp_advantages,
    reinforce_pp_returns,
    remax_advantages,
    rloo_advantages,
)


def _rewards(groups: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(groups * k, generator=g, dtype=torch.float64)
    r[:k] = 0.7  # the first group: every reward equal
    return r


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("unbiased", [True, False])
def test_grpo_matches_a_loop(k, unbiased):
    rewards = _rewards(4, k)
    out = grpo_advantages(rewards, k, eps=1e-6, unbiased=unbiased)
    for p in range(4):
        group = [rewards[p * k + j].item() for j in range(k)]
        mean = sum(group) / k
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / (k - 1 if unbiased else k))
        for j in range(k):
            assert out[p * k + j].item() == pytest.approx((group[j] - mean) / (std + 1e-6), abs=1e-9)
    assert torch.isfinite(out).all() and out[:k].abs().max() < 1e-9  # equal rewards: 0 (up to rounding), no NaN


@pytest.mark.parametrize("k", [2, 4])
def test_rloo_matches_a_loop(k):
    rewards = _rewards(3, k, seed=1)
    out = rloo_advantages(rewards, k)
    for p in range(3):
        for i in range(k):
            others = [rewards[p * k + j].item() for j in range(k) if j != i]
            assert out[p * k + i].item() == pytest.approx(rewards[p * k + i].item() - sum(others) / (k - 1), abs=1e-12)
    assert out[:k].abs().max() < 1e-12
    # the closed form k/(k-1) (r - mean) of Ahmadian et al.
    groups = rewards.view(-1, k)
    assert torch.allclose(out.view(-1, k), k / (k - 1) * (groups - groups.mean(dim=1, keepdim=True)))


def test_remax_subtracts_the_greedy_reward_of_the_rows_prompt():
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.5, 0.5])
    greedy = torch.tensor([2.0, 0.5])
    out = remax_advantages(rewards, greedy, group_size=3)
    assert out.tolist() == [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert remax_advantages(torch.tensor([1.0, 4.0]), torch.tensor([1.5, 1.0]), 1).tolist() == [-0.5, 3.0]
    with pytest.raises(ValueError, match="ReMax"):
        remax_advantages(rewards, torch.tensor([1.0]), group_size=3)


def test_reinforce_pp_matches_a_loop_and_whitens_over_the_batch():
    g = torch.Generator().manual_seed(2)
    token_rewards = torch.randn(3, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
    gamma = 0.9
    returns = torch.zeros(3, 6, dtype=torch.float64)
    for b in range(3):
        steps = [t for t in range(6) if mask[b, t]]
        running = 0.0
        for t in reversed(steps):
            running = token_rewards[b, t].item() + gamma * running
            returns[b, t] = running
    assert torch.allclose(reinforce_pp_returns(token_rewards, mask, gamma), returns)
    values = [returns[b, t].item() for b in range(3) for t in range(6) if mask[b, t]]
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    expected = torch.where(mask.bool(), (returns - mean) / math.sqrt(var + 1e-8), torch.zeros_like(returns))
    assert torch.allclose(reinforce_pp_advantages(token_rewards, mask, gamma), expected)


def test_reinforce_pp_with_equal_returns_gives_zeros_not_nan():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = reinforce_pp_advantages(torch.zeros(2, 3), mask, 1.0)
    assert torch.equal(out, torch.zeros(2, 3))


def test_group_estimators_refuse_one_sample_per_prompt_and_ragged_groups():
    with pytest.raises(ValueError, match="at least 2 samples"):
        grpo_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        rloo_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="groups of 3"):
        rloo_advantages(torch.ones(4), 3)


def test_broadcast_puts_the_sequence_advantage_on_response_tokens_only():
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])
    out = broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask)
    assert out.tolist() == [[0.0, 2.0, 2.0, 0.0], [-1.0, -1.0, -1.0, -1.0]]
