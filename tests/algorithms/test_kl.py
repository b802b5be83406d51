import math

import pytest
import torch

from prefalign.algorithms.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_penalized_rewards,
    kl_per_token,
    last_token_index,
)


def test_estimators_by_hand():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    d = [0.5, -1.0]
    assert kl_per_token(logp, ref, "k1").tolist()[0] == pytest.approx(d)
    assert kl_per_token(logp, ref, "k2").tolist()[0] == pytest.approx([0.5 * x * x for x in d])
    assert kl_per_token(logp, ref, "k3").tolist()[0] == pytest.approx([math.exp(-x) + x - 1 for x in d])
    assert kl_per_token(logp, ref, "abs").tolist()[0] == pytest.approx([abs(x) for x in d])
    with pytest.raises(ValueError):
        kl_per_token(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_on_a_categorical():
    # exact expectation over y ~ p of the per-sample estimates equals KL(p || q)
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    exact = (p * (p.log() - q.log())).sum()
    for estimator in ("k1", "k3"):
        per_sample = kl_per_token(p.log(), q.log(), estimator)
        torch.testing.assert_close((p * per_sample).sum(), exact)
    assert (kl_per_token(p.log(), q.log(), "k3") >= 0).all()


def test_last_token_index():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 2, 0]
    with pytest.raises(ValueError):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def reference_rewards(scores, logp, ref, mask, coef):
    batch, length = logp.shape
    rewards = torch.zeros(batch, length, dtype=torch.float64)
    for b in range(batch):
        positions = [t for t in range(length) if mask[b, t]]
        for t in positions:
            rewards[b, t] = -coef * (logp[b, t] - ref[b, t]).item()
        rewards[b, positions[-1]] += scores[b].item()
    return rewards


def test_score_lands_on_last_real_response_token():
    g = torch.Generator().manual_seed(2)
    # rows: right padded with EOS kept in the mask, right padded truncated (no EOS, full length),
    # left padded prompt then response, prompt + response + right padding
    mask = torch.tensor(
        [
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 1, 1, 0, 0, 0],
        ]
    )
    logp = torch.randn(4, 6, generator=g, dtype=torch.float64)
    ref = torch.randn(4, 6, generator=g, dtype=torch.float64)
    scores = torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=torch.float64)
    rewards, kl = kl_penalized_rewards(scores, logp, ref, mask, 0.1)
    torch.testing.assert_close(rewards, reference_rewards(scores, logp, ref, mask, 0.1))
    assert (kl[mask == 0] == 0).all() and (rewards[mask == 0] == 0).all()
    # the score never goes to column -1 of a row whose response ends earlier
    assert rewards[0, -1].item() == 0.0 and rewards[3, -1].item() == 0.0
    # sum of rewards = score - coef * summed KL, per row
    torch.testing.assert_close(rewards.sum(-1), scores - 0.1 * kl.sum(-1))


def test_kl_coef_can_be_a_tensor_and_estimator_is_used():
    mask = torch.tensor([[1, 1, 0]])
    logp = torch.tensor([[-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-2.0, -0.5, 0.0]])
    rewards, kl = kl_penalized_rewards(torch.tensor([1.0]), logp, ref, mask, torch.tensor(0.5), estimator="k2")
    assert kl[0].tolist() == pytest.approx([0.5, 0.125, 0.0])
    assert rewards[0].tolist() == pytest.approx([-0.25, -0.0625 + 1.0, 0.0])


def test_adaptive_controller_follows_the_formula():
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    expected = 0.2
    for current_kl, n_steps in [(3.0, 256), (6.6, 256), (100.0, 512), (0.0, 64)]:
        controller.update(current_kl, n_steps)
        error = max(min(current_kl / 6.0 - 1.0, 0.2), -0.2)
        expected *= 1 + error * n_steps / 10000
        assert controller.value == pytest.approx(expected)
    controller.update(torch.tensor(6.0), 256)  # on target: unchanged
    assert controller.value == pytest.approx(expected)


def test_controllers_state_dict_round_trip():
    controller = AdaptiveKLController(0.1, 4.0, 1000)
    controller.update(10.0, 100)
    resumed = AdaptiveKLController(0.5, 1.0, 1.0)
    resumed.load_state_dict(controller.state_dict())
    assert resumed.state_dict() == controller.state_dict()
    controller.update(2.0, 50)
    resumed.update(2.0, 50)
    assert resumed.value == controller.value
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05
