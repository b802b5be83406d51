"""The synthetic scenario of Xu et al. (2024) section 4.2: data set, reference, metrics."""

from __future__ import annotations

import itertools

import pytest
import torch

from prefalign.studies.synthetic.scenario import (
    build_reference,
    build_scenario,
    data_distribution,
    make_mlp,
    policy_metrics,
    sub_seed,
    table_logprobs,
)


def _pairs_of(scenario, prompt):
    rows = scenario.prompt_ids == prompt
    return list(zip(scenario.chosen_ids[rows].tolist(), scenario.rejected_ids[rows].tolist()))


@pytest.mark.parametrize("seed", range(6))
def test_optimal_response_is_the_diagonal(seed):
    scenario = build_scenario(seed)
    assert torch.equal(scenario.true_reward.argmax(dim=-1), torch.arange(8))
    for prompt in range(8):
        pairs = _pairs_of(scenario, prompt)
        assert scenario.coverage[prompt, prompt], "the optimal response is always covered"
        assert any(prompt in pair for pair in pairs)
        for chosen, rejected in pairs:
            assert rejected != prompt, "the optimal response never loses"
            assert scenario.true_reward[prompt, chosen] > scenario.true_reward[prompt, rejected]


@pytest.mark.parametrize("covered", [2, 3, 5, 8])
def test_coverage_and_pairs_only_among_covered_responses(covered):
    scenario = build_scenario(3, responses_per_prompt=covered)
    assert scenario.coverage.sum(dim=-1).tolist() == [covered] * 8
    assert torch.equal(scenario.unseen, ~scenario.coverage)
    for prompt in range(8):
        pairs = _pairs_of(scenario, prompt)
        assert len(pairs) == covered * (covered - 1) // 2
        assert len({frozenset(pair) for pair in pairs}) == len(pairs), "no repeated pair"
        covered_set = set(torch.nonzero(scenario.coverage[prompt]).flatten().tolist())
        assert {response for pair in pairs for response in pair} == covered_set
        assert all(a != b for a, b in pairs)
    assert scenario.pair_counts().sum() == 2 * scenario.num_pairs
    assert torch.equal(scenario.pair_counts() > 0, scenario.coverage)


def test_pairs_per_prompt_subset_keeps_every_covered_response():
    scenario = build_scenario(1, responses_per_prompt=4, pairs_per_prompt=3)
    assert scenario.num_pairs == 8 * 3
    assert scenario.coverage.sum(dim=-1).tolist() == [4] * 8
    for prompt in range(8):  # the minimum: the optimum against each of the 3 others
        assert sorted(_pairs_of(scenario, prompt))[0][0] == prompt
        assert all(chosen == prompt for chosen, _ in _pairs_of(scenario, prompt))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(responses_per_prompt=1),
        dict(responses_per_prompt=9),
        dict(responses_per_prompt=3, pairs_per_prompt=1),
        dict(responses_per_prompt=3, pairs_per_prompt=4),
    ],
)
def test_invalid_coverage_settings_raise(kwargs):
    with pytest.raises(ValueError):
        build_scenario(0, **kwargs)


def test_scenario_is_a_function_of_the_seed():
    first, again, other = build_scenario(11), build_scenario(11), build_scenario(12)
    assert torch.equal(first.coverage, again.coverage) and torch.equal(first.chosen_ids, again.chosen_ids)
    assert not torch.equal(first.coverage, other.coverage)
    assert sub_seed(11, 0) == sub_seed(11, 0) and len({sub_seed(11, s) for s in range(5)}) == 5


def test_scenario_leaves_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_reference(build_scenario(0))
    make_mlp(8, 8, 16, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_reference_kinds():
    scenario = build_scenario(2)
    uniform = table_logprobs(build_reference(scenario, "uniform"), 8).exp()
    assert torch.allclose(uniform, torch.full((8, 8), 1 / 8))
    random = build_reference(scenario, "random")
    assert not any(p.requires_grad for p in random.parameters())
    probs = table_logprobs(random, 8).exp()
    assert torch.allclose(probs.sum(-1), torch.ones(8)) and probs.min() > 0.05 and probs.max() < 0.25
    data = table_logprobs(build_reference(scenario, "data", smoothing=0.2, steps=400), 8).exp().double()
    target = data_distribution(scenario, 0.2)
    assert (data - target).abs().max() < 0.02
    assert data[scenario.unseen].max() < data[scenario.coverage].min()
    with pytest.raises(ValueError):
        build_reference(scenario, "pretrained")


def test_policy_metrics_on_a_hand_made_table():
    scenario = build_scenario(0, num_prompts=3, responses_per_prompt=2)
    unseen = scenario.unseen  # one unseen response per prompt
    reference = torch.full((3, 3), 1 / 3)
    probs = torch.tensor([[0.6, 0.2, 0.2], [0.1, 0.5, 0.4], [0.25, 0.25, 0.5]])
    metrics = policy_metrics(probs, reference, scenario, raised_margin=0.05)
    unseen_per_prompt = [float(probs[i][unseen[i]].sum()) for i in range(3)]
    assert metrics["unseen_mass"] == pytest.approx(sum(unseen_per_prompt) / 3)
    assert metrics["optimal_mass"] == pytest.approx((0.6 + 0.5 + 0.5) / 3)
    raised = [(i, j) for i, j in itertools.product(range(3), range(3)) if unseen[i, j] and probs[i, j] > 1 / 3 + 0.05]
    assert metrics["cells_raised"] == len(raised)
    best = max(
        ((i, j) for i, j in itertools.product(range(3), range(3)) if unseen[i, j]), key=lambda cell: probs[cell] - 1 / 3
    )
    assert metrics["max_unseen_raise_cell"] == list(best)
    assert metrics["max_unseen_raise_to"] == pytest.approx(float(probs[best]))
    full = policy_metrics(probs, reference, build_scenario(0, num_prompts=3, responses_per_prompt=3))
    assert full["unseen_mass"] == 0.0 and full["cells_raised"] == 0 and full["max_unseen_raise"] is None
