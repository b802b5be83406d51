import math

import pytest
import torch

from prefalign.algorithms.preference import bradley_terry_loss, dpo_loss, pro_loss, rrhf_loss


def _softplus(x):
    return math.log1p(math.exp(x))


def test_bradley_terry_by_hand():
    chosen = torch.tensor([2.0, 0.0])
    rejected = torch.tensor([1.0, 3.0])
    assert bradley_terry_loss(chosen, rejected).tolist() == pytest.approx([_softplus(-1.0), _softplus(3.0)])
    with_margin = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5, 1.0]))
    assert with_margin.tolist() == pytest.approx([_softplus(-0.5), _softplus(4.0)])


def test_dpo_is_log2_when_policy_equals_reference():
    logps = torch.tensor([-3.0, -10.0, -0.5])
    other = torch.tensor([-4.0, -1.0, -7.0])
    losses, chosen, rejected = dpo_loss(logps, other, logps, other, beta=0.1)
    torch.testing.assert_close(losses, torch.full((3,), math.log(2.0)))
    assert chosen.abs().max().item() == 0.0 and rejected.abs().max().item() == 0.0


def test_dpo_by_hand_and_cdpo():
    args = (torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]))
    losses, chosen, rejected = dpo_loss(*args, beta=0.1)
    # h = (-1 + 1.5) - (-2 + 1.5) = 1, beta h = 0.1
    assert losses.item() == pytest.approx(_softplus(-0.1))
    assert chosen.item() == pytest.approx(0.05) and rejected.item() == pytest.approx(-0.05)
    smoothed, _, _ = dpo_loss(*args, beta=0.1, label_smoothing=0.2)
    assert smoothed.item() == pytest.approx(0.8 * _softplus(-0.1) + 0.2 * _softplus(0.1))
    with pytest.raises(ValueError):
        dpo_loss(*args, beta=0.1, label_smoothing=0.5)


def test_dpo_gradient_raises_chosen_relative_to_rejected():
    chosen = torch.tensor([-5.0, -2.0], requires_grad=True)
    rejected = torch.tensor([-4.0, -3.0], requires_grad=True)
    losses, chosen_rewards, _ = dpo_loss(chosen, rejected, torch.tensor([-5.0, -2.5]), torch.tensor([-4.5, -3.0]), 0.5)
    assert not chosen_rewards.requires_grad
    losses.sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
    torch.testing.assert_close(chosen.grad, -rejected.grad)


def test_rrhf_by_hand():
    seq_logps = torch.tensor([[-4.0, -6.0, -3.0]])
    scores = torch.tensor([[1.0, 3.0, 2.0]])
    lengths = torch.tensor([[2, 3, 1]])
    # p = [-2, -2, -3]; ranked pairs (r_i < r_j): (0,1) hinge 0, (0,2) hinge 1, (2,1) hinge 0
    loss, stats = rrhf_loss(seq_logps, scores, lengths=lengths, sft_weight=0.5)
    assert stats["rank_loss"].item() == pytest.approx(1.0)
    assert stats["sft_loss"].item() == pytest.approx(6.0)  # NLL (summed) of the best, index 1
    assert loss.item() == pytest.approx(1.0 + 0.5 * 6.0)
    # without length normalisation p = [-4, -6, -3]: hinges 2, 0, 3
    loss, stats = rrhf_loss(seq_logps, scores, length_normalized=False)
    assert stats["rank_loss"].item() == pytest.approx(5.0)
    assert loss.item() == pytest.approx(5.0 + 6.0)
    # separate log-probs for the fine-tuning term
    loss, _ = rrhf_loss(seq_logps, scores, sft_logps=torch.tensor([[0.0, -1.5, 0.0]]), lengths=lengths)
    assert loss.item() == pytest.approx(1.0 + 1.5)
    with pytest.raises(ValueError):
        rrhf_loss(seq_logps, scores)  # length-normalised needs lengths


def test_rrhf_ties_are_not_ranked_and_gradient_pushes_better_up():
    seq_logps = torch.tensor([[-1.0, -5.0, -2.0]], requires_grad=True)
    scores = torch.tensor([[2.0, 2.0, 1.0]])
    loss, stats = rrhf_loss(seq_logps, scores, length_normalized=False, sft_weight=0.0)
    # only pairs with strictly lower score: (2,0) hinge max(0,-2+1)=0, (2,1) hinge max(0,-2+5)=3
    assert stats["rank_loss"].item() == pytest.approx(3.0)
    loss.sum().backward()
    assert seq_logps.grad.tolist()[0] == pytest.approx([0.0, -1.0, 1.0])


def reference_pro(seq_logps, scores, lengths, sft_weight, temperature_from_scores):
    """The paper's formula with explicit temperatures T = 1 / (s_k - s_i) (distinct scores)."""
    total = []
    for b in range(seq_logps.shape[0]):
        r = [(seq_logps[b, i] / lengths[b, i]).item() for i in range(seq_logps.shape[1])]
        s = scores[b].tolist()
        n = len(r)
        loss = 0.0
        for k in range(n - 1):
            if temperature_from_scores:
                temps = {i: 1.0 / (s[k] - s[i]) for i in range(k + 1, n)}
                temps[k] = min(temps.values())
            else:
                temps = {i: 1.0 for i in range(k, n)}
            numerator = math.exp(r[k] / temps[k])
            denominator = sum(math.exp(r[i] / temps[i]) for i in range(k, n))
            loss -= math.log(numerator / denominator)
        loss += sft_weight * -seq_logps[b, 0].item()
        total.append(loss)
    return total


def test_pro_by_hand():
    seq_logps = torch.tensor([[-2.0, -6.0, -3.0]])
    scores = torch.tensor([[3.0, 1.0, 0.0]])
    lengths = torch.tensor([[2, 3, 1]])
    # r = [-1, -2, -3]; k=1: 1/T = [3, 2, 3] -> logits [-3, -4, -9]; k=2: 1/T = [1, 1] -> [-2, -3]
    expected_rank = math.log(1 + math.exp(-1) + math.exp(-6)) + math.log(1 + math.exp(-1))
    loss, stats = pro_loss(seq_logps, scores, lengths, sft_weight=0.1)
    assert stats["rank_loss"].item() == pytest.approx(expected_rank)
    assert stats["sft_loss"].item() == pytest.approx(2.0)
    assert loss.item() == pytest.approx(expected_rank + 0.1 * 2.0)
    plain, _ = pro_loss(seq_logps, scores, lengths, sft_weight=0.0, temperature_from_scores=False)
    assert plain.item() == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)) + math.log(1 + math.exp(-1)))
    scaled, _ = pro_loss(seq_logps, scores, lengths, sft_weight=0.1, scale_sft_by_ranking_length=True)
    assert scaled.item() == pytest.approx(expected_rank + 0.1 * 4 * 2.0)


@pytest.mark.parametrize("temperature_from_scores", [True, False])
def test_pro_matches_reference_loop(temperature_from_scores):
    g = torch.Generator().manual_seed(4)
    seq_logps = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 20
    lengths = torch.randint(1, 12, (3, 4), generator=g)
    scores = torch.sort(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=-1, descending=True).values
    loss, _ = pro_loss(seq_logps, scores, lengths, sft_weight=0.05, temperature_from_scores=temperature_from_scores)
    expected = reference_pro(seq_logps, scores, lengths, 0.05, temperature_from_scores)
    assert loss.tolist() == pytest.approx(expected)


def test_pro_requires_best_first_and_handles_ties():
    lengths = torch.ones(1, 3)
    with pytest.raises(ValueError):
        pro_loss(torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 0.5]]), lengths)
    seq_logps = torch.tensor([[-1.0, -1.0, -1.0]], requires_grad=True)
    loss, _ = pro_loss(seq_logps, torch.tensor([[1.0, 1.0, 1.0]]), lengths, sft_weight=0.0)
    # all tied: every 1/T is 0, each term is log(number of candidates left)
    assert loss.item() == pytest.approx(math.log(3) + math.log(2))
    assert torch.isfinite(loss).all()


def test_pro_gradient_pushes_best_up():
    seq_logps = torch.tensor([[-3.0, -2.0, -1.0]], requires_grad=True)
    loss, _ = pro_loss(seq_logps, torch.tensor([[2.0, 1.0, 0.0]]), torch.ones(1, 3), sft_weight=0.0)
    loss.sum().backward()
    grad = seq_logps.grad[0]
    assert grad[0].item() < 0 and grad[2].item() > 0
