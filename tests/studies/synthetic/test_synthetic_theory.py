"""Table 1's counter-example, Eq. 8 and Theorem 4.1 (Xu et al. 2024, section 4.1)."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.studies.synthetic.report import mean_confidence_interval, student_t_quantile
from prefalign.studies.synthetic.scenario import build_reference, build_scenario
from prefalign.studies.synthetic.theory import (
    bradley_terry_loss_of_table,
    check_theorem,
    counter_example,
    dpo_loss_of_table,
    kl_divergence,
    kl_regularized_objective,
    kl_regularized_optimum,
)
from prefalign.studies.synthetic.training import train_dpo, train_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_counter_example_dpo_reaches_its_infimum_with_mass_on_the_unseen_action():
    result = counter_example(beta=0.1)
    losses = [row["dpo_loss"] for row in result["dpo_loss_path"]]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), "loss falls as pi(y2) -> 0"
    assert losses[0] == pytest.approx(math.log(2))  # pi(y1) = pi(y2): logit 0
    assert losses[-1] < 1e-25
    assert all(row["pi"][2] >= 0.8 for row in result["dpo_loss_path"]), "y3 keeps its mass along the path"
    assert result["dpo_policy"] == [0.1, 0.0, 0.9]
    assert result["dpo_loss_at_dpo_policy"] == 0.0 == result["dpo_loss_infimum"], "the infimum is attained"
    assert result["dpo_policy_kl_to_reference"] == math.inf
    assert result["dpo_policy_ppo_objective"] == -math.inf


def test_counter_example_ppo_solution_never_puts_mass_on_the_unseen_action():
    beta = 0.1
    result = counter_example(beta=beta, reward_margins=(0.5, 1.0, 3.0), unseen_reward=50.0)
    for row in result["ppo_solutions"]:
        margin = row["reward"][0]
        assert row["pi"][2] == 0.0, "pi* ∝ pi_ref exp(r / beta) is 0 where pi_ref is 0"
        assert row["pi"][0] == pytest.approx(1.0 / (1.0 + math.exp(-margin / beta)))
        assert row["dpo_loss"] == pytest.approx(row["bt_loss"], abs=1e-14)
        assert row["bt_loss"] == pytest.approx(-math.log(1.0 / (1.0 + math.exp(-margin))))
        assert row["kl_to_reference"] < math.log(2) + 1e-12


def test_kl_regularized_optimum_maximises_the_objective():
    generator = torch.Generator().manual_seed(0)
    ref = torch.log_softmax(torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=-1)
    rewards = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    beta = 0.5
    star = kl_regularized_optimum(ref, rewards, beta)
    explicit = ref.exp() * torch.exp(rewards / beta)
    assert torch.allclose(star.exp(), explicit / explicit.sum(-1, keepdim=True))
    best = kl_regularized_objective(star, ref, rewards, beta)
    assert torch.allclose(best, beta * torch.logsumexp(ref + rewards / beta, dim=-1))  # the closed form
    for _ in range(20):
        other = torch.log_softmax(star + 0.3 * torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=-1)
        assert (kl_regularized_objective(other, ref, rewards, beta) < best).all()


def test_kl_divergence_conventions_at_zero():
    ref = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64).log()
    assert kl_divergence(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64).log(), ref) == 0.0
    assert kl_divergence(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).log(), ref) == pytest.approx(math.log(2))
    assert kl_divergence(torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64).log(), ref) == math.inf


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_dpo_loss_of_kl_optimum_equals_bt_loss_of_the_reward(smoothing):
    scenario = build_scenario(4)
    generator = torch.Generator().manual_seed(1)
    ref = torch.log_softmax(torch.randn(8, 8, generator=generator, dtype=torch.float64), dim=-1)
    for scale in (0.1, 1.0, 10.0):
        rewards = scale * torch.randn(8, 8, generator=generator, dtype=torch.float64)
        for beta in (0.1, 1.0):
            star = kl_regularized_optimum(ref, rewards, beta)
            dpo = dpo_loss_of_table(star, ref, scenario, beta, smoothing)
            bt = bradley_terry_loss_of_table(rewards, scenario, smoothing)
            assert abs(float(dpo - bt)) < 1e-12
    wrong_beta = dpo_loss_of_table(kl_regularized_optimum(ref, rewards, 1.0), ref, scenario, 0.1)
    assert abs(float(wrong_beta - bradley_terry_loss_of_table(rewards, scenario))) > 1e-3


def test_theorem_check_on_a_trained_scenario():
    scenario = build_scenario(7)
    reference = build_reference(scenario)
    reward = train_reward_model(scenario, steps=60)
    dpo = train_dpo(scenario, reference, beta=0.1, steps=60)
    before = [p.clone() for p in reference.parameters()]
    result = check_theorem(scenario, reference, reward.model, dpo.model, beta=0.1, label_smoothing=0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, reference.parameters())), "models untouched"
    assert next(reference.parameters()).dtype == torch.float32
    assert result["learned_reward"]["abs_difference"] < 1e-12
    assert result["trained_dpo"]["abs_difference"] < 1e-12
    assert result["trained_dpo"]["max_abs_logprob_gap_to_kl_optimum"] < 1e-10
    minimum = result["minimum"]
    assert minimum["max_abs_difference"] < 1e-9
    assert minimum["bt_gradient_max"] < 1e-7 and minimum["dpo_gradient_max"] < 1e-7
    assert minimum["min_bt_loss"] > 0.1, "with smoothing the minimum is attained at a positive loss"
    # the minimum is below what either trained model reached on the smoothed loss
    assert (
        minimum["min_dpo_loss"]
        <= bradley_terry_loss_of_table(reward.model(torch.arange(8)).detach().double(), scenario, 0.1).item() + 1e-12
    )
    flat = result["flat_unseen_direction"]
    assert flat["unseen_mass_boosted"] == pytest.approx(0.5)
    assert flat["unseen_mass_kl_optimum"] < 0.5
    assert abs(flat["dpo_loss_boosted"] - flat["dpo_loss_kl_optimum"]) < 1e-12
    assert flat["objective_boosted"] < flat["objective_kl_optimum"] - 1e-3


def test_student_t_quantiles_and_intervals():
    assert student_t_quantile(0.975, 19) == pytest.approx(2.0930240544, abs=1e-7)
    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062047362, abs=1e-5)
    assert student_t_quantile(0.95, 4) == pytest.approx(2.1318467863, abs=1e-7)
    assert student_t_quantile(0.025, 19) == pytest.approx(-2.0930240544, abs=1e-7)
    interval = mean_confidence_interval([1.0, 2.0, 3.0, 4.0], level=0.95)
    assert interval["mean"] == 2.5
    assert interval["half_width"] == pytest.approx(3.1824463053 * math.sqrt(5 / 3) / 2, abs=1e-7)
    with pytest.raises(ValueError):
        mean_confidence_interval([1.0])
