import math

import pytest
import torch

from prefalign.algorithms.ppo import entropy_from_logits, explained_variance, ppo_policy_loss, ppo_value_loss


def test_policy_loss_clipping_by_hand():
    # ratios e^{log r}: 1.5 (A>0, clipped to 1.2), 0.5 (A>0, unclipped is smaller), 0.5 (A<0, clipped
    # to 0.8), 1.0 (A<0), and one padded position whose numbers must not count
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.0, 5.0]])
    adv = torch.tensor([[2.0, 1.0, -1.0, -3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    old = torch.zeros(1, 5)
    logp = ratios.log()
    loss, stats = ppo_policy_loss(logp, old, adv, mask, clip_range=0.2)
    per_token = [-2.0 * 1.2, -1.0 * 0.5, 1.0 * 0.8, 3.0 * 1.0]
    assert loss.item() == pytest.approx(sum(per_token) / 4)
    assert stats["clipfrac"].item() == pytest.approx(2 / 4)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 0.5 + 1.0) / 4)
    log_r = [math.log(1.5), math.log(0.5), math.log(0.5), 0.0]
    assert stats["approx_kl"].item() == pytest.approx(0.5 * sum(x * x for x in log_r) / 4)


def test_policy_loss_asymmetric_clip():
    logp = torch.tensor([[math.log(1.25)]])
    loss, stats = ppo_policy_loss(
        logp, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2, clip_range_high=0.28
    )
    assert loss.item() == pytest.approx(-1.25)
    assert stats["clipfrac"].item() == 0.0


def test_policy_gradient_direction_and_clipped_tokens_have_no_gradient():
    logp = torch.log(torch.tensor([[1.0, 1.5]])).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0]])
    loss, _ = ppo_policy_loss(logp, torch.zeros(1, 2), adv, torch.ones(1, 2))
    loss.backward()
    assert logp.grad[0, 0].item() < 0  # descending raises log-prob of a positive-advantage token
    assert logp.grad[0, 1].item() == 0.0  # ratio 1.5 > 1.2 is clipped


def test_policy_loss_aggregation_modes():
    logp = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    token_mean, _ = ppo_policy_loss(logp, logp, adv, mask, aggregation="token-mean")
    seq_sum, _ = ppo_policy_loss(logp, logp, adv, mask, aggregation="seq-mean-token-sum")
    seq_mean, _ = ppo_policy_loss(logp, logp, adv, mask, aggregation="seq-mean-token-mean")
    assert token_mean.item() == pytest.approx(-10 / 4)
    assert seq_sum.item() == pytest.approx(-(6 + 4) / 2)
    assert seq_mean.item() == pytest.approx(-(2 + 4) / 2)


def test_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0, 2.0, 7.0]])
    old = torch.tensor([[0.0, 0.0, 1.9, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = ppo_value_loss(values, old, returns, mask, clip_range_value=0.2)
    # token 0: unclipped (1-0)^2 = 1, clipped V = 0.2 -> 0.04; max = 1 (not clipped-counted)
    # token 1: both 1; token 2: unclipped 1, clipped V = 2.0 -> 1 (equal)
    assert loss.item() == pytest.approx(0.5 * (1 + 1 + 1) / 3)
    assert stats["vf_clipfrac"].item() == 0.0
    values = torch.tensor([[1.0]])
    loss, stats = ppo_value_loss(values, torch.zeros(1, 1), torch.tensor([[2.0]]), torch.ones(1, 1), 0.2)
    # unclipped (1-2)^2 = 1, clipped V = 0.2 -> 3.24; the pessimistic max wins
    assert loss.item() == pytest.approx(0.5 * 3.24)
    assert stats["vf_clipfrac"].item() == 1.0
    loss, stats = ppo_value_loss(values, torch.zeros(1, 1), torch.tensor([[2.0]]), torch.ones(1, 1), None)
    assert loss.item() == pytest.approx(0.5)
    assert stats["vf_clipfrac"].item() == 0.0


def test_entropy_matches_definition_and_is_stable():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 11, generator=g, dtype=torch.float64)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy_from_logits(logits), -(p * p.log()).sum(-1))
    big = torch.tensor([[[1000.0, 1000.0, -1000.0, float("-inf")]]])
    assert entropy_from_logits(big).item() == pytest.approx(math.log(2))


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.0), returns, mask).item() == pytest.approx(0.0)
    values = torch.tensor([[1.5, 2.0, 2.0, 0.0]])
    err = [1.0 - 1.5, 0.0, 1.0]
    mean_err = sum(err) / 3
    var_err = sum((e - mean_err) ** 2 for e in err) / 3
    assert explained_variance(values, returns, mask).item() == pytest.approx(1 - var_err / (2 / 3))
    assert math.isnan(explained_variance(returns, torch.ones_like(returns), mask).item())


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum"])
def test_gradient_accumulation_over_half_batches_equals_full_batch(mode):
    g = torch.Generator().manual_seed(8)
    logp = (torch.randn(4, 6, generator=g, dtype=torch.float64) * 0.1 - 1).requires_grad_(True)
    old = logp.detach() + torch.randn(4, 6, generator=g, dtype=torch.float64) * 0.2
    adv = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0]])
    full, _ = ppo_policy_loss(logp, old, adv, mask, aggregation=mode)
    (full_grad,) = torch.autograd.grad(full, logp)
    normalizer = mask.sum() if mode == "token-mean" else mask.shape[0]
    total = 0.0
    for rows in (slice(0, 2), slice(2, 4)):
        part, _ = ppo_policy_loss(logp[rows], old[rows], adv[rows], mask[rows], aggregation=mode, normalizer=normalizer)
        total = total + part
    (split_grad,) = torch.autograd.grad(total, logp)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(split_grad, full_grad)
