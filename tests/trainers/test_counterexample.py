"""Xu et al. (2024), Table 1 / Theorem 4.1: DPO can prefer a policy that is out of the reference's support.

Three actions y1, y2, y3; the reference is pi_ref = (0.5, 0.5, 0) and the only preference is
y1 > y2. The DPO loss sees y1 and y2 only, so a policy that puts most of its mass on the unseen
y3, pi_DPO = (0.1, 0, 0.9), attains the DPO minimum (loss 0) just like pi_PPO = (1, 0, 0). The
KL-regularised RLHF objective that PPO optimises cannot do this: pi_DPO has infinite KL to the
reference, and its optimum pi* ~ pi_ref exp(r / beta) gives y3 no mass for any reward.

The zeros: log pi_ref(y3) = -inf is never evaluated by the DPO loss (no pair holds y3), and
log pi_DPO(y2) = -inf makes the DPO margin +inf, whose loss is exactly 0 (computed in float64,
checked finite); the KL uses the 0 log 0 = 0 convention (``torch.xlogy``).
"""

import math

import torch

from prefalign.algorithms.preference import dpo_loss

BETA = 0.1
REFERENCE = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
PAIRS = [(0, 1)]  # the data: y1 preferred to y2, nothing about y3


def dpo_objective(policy: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Mean DPO loss over the preference data for a policy over the three actions (probabilities)."""
    chosen = torch.tensor([c for c, _ in PAIRS])
    rejected = torch.tensor([r for _, r in PAIRS])
    log_pi, log_ref = policy.log(), REFERENCE.log()
    losses, _, _ = dpo_loss(log_pi[chosen], log_pi[rejected], log_ref[chosen], log_ref[rejected], beta)
    return losses.mean()


def kl_to_reference(policy: torch.Tensor) -> torch.Tensor:
    return (torch.xlogy(policy, policy) - torch.xlogy(policy, REFERENCE)).sum()


def rlhf_optimum(reward: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """argmax_pi E_pi[r] - beta KL(pi || pi_ref) = pi_ref exp(r / beta) / Z; actions with pi_ref = 0 get 0."""
    weights = torch.where(REFERENCE > 0, REFERENCE * torch.exp(reward / beta), torch.zeros_like(REFERENCE))
    return weights / weights.sum()


def test_a_policy_on_the_unseen_action_attains_the_dpo_minimum():
    pi_dpo = torch.tensor([0.1, 0.0, 0.9], dtype=torch.float64)
    pi_ppo = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    loss_dpo, loss_ppo = dpo_objective(pi_dpo), dpo_objective(pi_ppo)
    assert torch.isfinite(loss_dpo) and torch.isfinite(loss_ppo)
    # every DPO loss is -log sigmoid(.) >= 0, so 0 is the minimum, and both policies reach it
    assert loss_dpo.item() == 0.0 and loss_ppo.item() == 0.0
    assert pi_dpo[2] == 0.9  # most of the mass on y3, which pi_ref never produces
    assert math.isinf(kl_to_reference(pi_dpo).item()) and math.isfinite(kl_to_reference(pi_ppo).item())
    # at the reference itself the loss is log 2
    assert dpo_objective(REFERENCE).item() == math.log(2.0)


def test_the_minimum_is_approached_by_policies_with_ever_more_mass_off_support():
    """pi_eps = (0.1, eps, 0.9 - eps): finite losses that fall to 0 as eps -> 0, all with pi(y3) ~ 0.9."""
    losses = [
        dpo_objective(torch.tensor([0.1, eps, 0.9 - eps], dtype=torch.float64)).item()
        for eps in (1e-2, 1e-10, 1e-40, 1e-120)
    ]
    assert all(math.isfinite(x) for x in losses)
    assert losses == sorted(losses, reverse=True) and losses[0] > losses[-1]
    assert losses[-1] < 1e-10


def test_the_dpo_loss_gives_the_unseen_action_no_gradient():
    """With a softmax policy pi = softmax(theta), dL/dtheta_3 = 0: DPO never pushes mass off y3."""
    theta = torch.tensor([0.0, 0.0, math.log(9.0)], dtype=torch.float64, requires_grad=True)  # pi ~ (0.09, 0.09, 0.82)
    log_pi = torch.log_softmax(theta, dim=0)
    log_ref = REFERENCE.log()
    loss, _, _ = dpo_loss(log_pi[:1], log_pi[1:2], log_ref[:1], log_ref[1:2], BETA)
    loss.sum().backward()
    assert theta.grad[2].item() == 0.0
    assert theta.grad[0].item() < 0.0 < theta.grad[1].item()  # raise y1, lower y2
    assert theta.grad[0].item() == -theta.grad[1].item()


def test_the_rlhf_optimum_stays_on_the_reference_support():
    for reward in (torch.tensor([1.0, 0.0, 5.0]), torch.tensor([1.0, 0.0, -5.0]), torch.tensor([3.0, -1.0, 100.0])):
        pi_star = rlhf_optimum(reward.double())
        assert pi_star[2].item() == 0.0  # y3 gets nothing, however high its reward
        assert pi_star[0] > pi_star[1]
        assert math.isfinite(kl_to_reference(pi_star).item())
        # and its DPO loss on the data is above the minimum that pi_DPO attains: DPO ranks pi_DPO better
        assert dpo_objective(pi_star).item() > dpo_objective(torch.tensor([0.1, 0.0, 0.9], dtype=torch.float64)).item()
