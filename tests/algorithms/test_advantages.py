import pytest
import torch

from prefalign.algorithms.advantages import compute_discounted_returns, compute_gae


def reference_gae(rewards, values, mask, gamma, lam):
    """Per-row Python loop over the response positions only (the slow reference)."""
    batch, length = rewards.shape
    advantages = torch.zeros(batch, length, dtype=torch.float64)
    returns = torch.zeros(batch, length, dtype=torch.float64)
    for b in range(batch):
        steps = [t for t in range(length) if mask[b, t]]
        last_gae = 0.0
        for i in reversed(range(len(steps))):
            t = steps[i]
            next_value = values[b, steps[i + 1]].item() if i + 1 < len(steps) else 0.0
            delta = rewards[b, t].item() + gamma * next_value - values[b, t].item()
            last_gae = delta + gamma * lam * last_gae
            advantages[b, t] = last_gae
            returns[b, t] = last_gae + values[b, t].item()
    return advantages, returns


def _batch():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(5, 8, generator=g, dtype=torch.float64)
    values = torch.randn(5, 8, generator=g, dtype=torch.float64)
    mask = torch.tensor(
        [
            [1, 1, 1, 1, 1, 1, 1, 1],  # full
            [1, 1, 1, 0, 0, 0, 0, 0],  # right padded
            [0, 0, 0, 1, 1, 1, 1, 1],  # prompt / left padding in front
            [0, 0, 1, 1, 1, 1, 0, 0],  # prompt in front, padding behind
            [0, 1, 1, 0, 0, 1, 1, 0],  # a masked gap inside the response
        ]
    )
    return rewards, values, mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (1.0, 0.95), (0.99, 0.9), (0.5, 0.0)])
def test_gae_matches_reference_loop(gamma, lam):
    rewards, values, mask = _batch()
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = reference_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, ref_adv)
    torch.testing.assert_close(returns, ref_ret)
    assert (advantages[mask == 0] == 0).all() and (returns[mask == 0] == 0).all()


def test_gae_gamma_lam_one_is_reward_to_go_minus_value():
    rewards, values, mask = _batch()
    advantages, returns = compute_gae(rewards, values, mask, 1.0, 1.0)
    reward_to_go = compute_discounted_returns(rewards, mask, 1.0)
    torch.testing.assert_close(returns, reward_to_go)
    torch.testing.assert_close(advantages, torch.where(mask.bool(), reward_to_go - values, torch.zeros_like(values)))


def test_gae_outputs_are_detached():
    rewards, values, mask = _batch()
    values = values.clone().requires_grad_(True)
    advantages, returns = compute_gae(rewards, values, mask, 1.0, 0.95)
    assert not advantages.requires_grad and not returns.requires_grad


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    out = compute_discounted_returns(rewards, mask, 0.5)
    # G = r_t + 0.5 G_{t+1} over positions 1..3: G3 = 3, G2 = 2 + 1.5, G1 = 1 + 0.5 * 3.5
    torch.testing.assert_close(out, torch.tensor([[0.0, 2.75, 3.5, 3.0, 0.0]]))


def test_gae_splitting_the_batch_changes_nothing():
    rewards, values, mask = _batch()
    full_adv, full_ret = compute_gae(rewards, values, mask, 1.0, 0.95)
    a1, r1 = compute_gae(rewards[:2], values[:2], mask[:2], 1.0, 0.95)
    a2, r2 = compute_gae(rewards[2:], values[2:], mask[2:], 1.0, 0.95)
    torch.testing.assert_close(torch.cat([a1, a2]), full_adv)
    torch.testing.assert_close(torch.cat([r1, r2]), full_ret)


def test_low_precision_inputs_are_upcast():
    rewards, values, mask = _batch()
    advantages, returns = compute_gae(rewards.bfloat16(), values.bfloat16(), mask, 1.0, 0.95)
    assert advantages.dtype == torch.float32 and returns.dtype == torch.float32
    ref_adv, _ = reference_gae(rewards.bfloat16().double(), values.bfloat16().double(), mask, 1.0, 0.95)
    torch.testing.assert_close(advantages.double(), ref_adv, atol=1e-5, rtol=1e-5)
    assert compute_discounted_returns(rewards.half(), mask, 1.0).dtype == torch.float32
