"""Training pieces and the end-to-end synthetic study (determinism, files)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from prefalign.studies.synthetic.run import SyntheticConfig, run_synthetic
from prefalign.studies.synthetic.scenario import build_reference, build_scenario, table_logprobs, torch_threads
from prefalign.studies.synthetic.theory import kl_regularized_optimum
from prefalign.studies.synthetic.training import (
    pair_values,
    ppo_rollout,
    reward_table,
    train_dpo,
    train_ppo,
    train_reward_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    with torch_threads(1):
        scenario = build_scenario(5)
        reference = build_reference(scenario)
        reward = train_reward_model(scenario, steps=150)
        return scenario, reference, reward


def test_reward_model_ranks_every_pair(trained):
    scenario, _, reward = trained
    assert reward.losses[-1] < 0.1 * reward.losses[0]
    chosen, rejected = pair_values(reward_table(reward.model, 8), scenario)
    assert bool((chosen > rejected).all())
    assert not any(p.requires_grad for p in reward.model.parameters())


def test_dpo_separates_every_pair_and_leaves_the_reference_alone(trained):
    scenario, reference, _ = trained
    before = [p.clone() for p in reference.parameters()]
    dpo = train_dpo(scenario, reference, beta=0.1, steps=150)
    assert all(torch.equal(a, b) for a, b in zip(before, reference.parameters()))
    assert dpo.losses[0] == pytest.approx(math.log(2), abs=1e-6), "starts at the reference: logit 0"
    assert dpo.losses[-1] < 0.2
    with torch.no_grad():
        ratio = table_logprobs(dpo.model, 8) - table_logprobs(reference, 8)
    chosen, rejected = pair_values(ratio, scenario)
    assert bool((chosen > rejected).all())


def test_ppo_rollout_is_a_one_token_episode(trained):
    scenario, reference, reward = trained
    prompts = torch.arange(8).repeat_interleave(4)
    value_model = torch.nn.Module()
    value_model.forward = lambda ids: torch.zeros(ids.shape[0], 1)  # V = 0: advantage = KL-penalised reward
    batch = ppo_rollout(
        reference,
        value_model,
        reference,
        reward.model,
        prompts,
        torch.Generator().manual_seed(0),
        kl_coef=0.1,
        whiten_advantages=False,
    )
    names = ("responses", "old_logprobs", "ref_logprobs", "token_rewards", "advantages", "returns", "response_mask")
    for name in names:
        assert batch[name].shape == (32, 1), name
    assert torch.equal(batch["old_logprobs"], batch["ref_logprobs"]), "the policy is the reference here"
    expected = reward_table(reward.model, 8)[prompts, batch["responses"].squeeze(-1)]
    assert torch.allclose(batch["advantages"].squeeze(-1), expected)  # KL term 0, V 0
    whitened = ppo_rollout(
        reference, value_model, reference, reward.model, prompts, torch.Generator().manual_seed(0), kl_coef=0.1
    )["advantages"]
    assert abs(float(whitened.mean())) < 1e-5 and float(whitened.std()) == pytest.approx(1.0, abs=1e-3)


def test_ppo_reaches_the_kl_regularized_optimum(trained):
    scenario, reference, reward = trained
    ppo = train_ppo(scenario, reference, reward.model, kl_coef=0.1)
    with torch.no_grad():
        target = kl_regularized_optimum(table_logprobs(reference, 8), reward_table(reward.model, 8), 0.1).exp()
        probs = table_logprobs(ppo.policy, 8).exp()
        start = table_logprobs(reference, 8).exp()
    distance = 0.5 * (probs - target).abs().sum(-1).mean()
    assert distance < 0.05 < 0.5 * (start - target).abs().sum(-1).mean()
    assert set(ppo.history[-1]) >= {"policy_loss", "value_loss", "clipfrac", "approx_kl", "reward/mean", "kl/mean"}


def _small_config(tmp_path, **changes) -> SyntheticConfig:
    settings = dict(
        seeds=3,
        dpo_steps=40,
        reward_steps=40,
        ppo_iterations=3,
        ppo_episodes_per_prompt=4,
        ppo_minibatches=2,
        output_dir=str(tmp_path),
        quiet=True,
    )
    settings.update(changes)
    return SyntheticConfig(**settings)


def _numbers(results):
    keys = ("seed", "metrics", "final_losses", "ppo_tv_to_kl_optimum")
    return [tuple(run[key] for key in keys) for run in results["per_seed"]]


def test_run_synthetic_is_reproducible_and_writes_its_files(tmp_path):
    first = run_synthetic(_small_config(tmp_path / "a"))
    second = run_synthetic(_small_config(tmp_path / "b"))
    assert _numbers(first) == _numbers(second)
    assert first["summary"]["dpo"] == second["summary"]["dpo"]
    seed_numbers = _numbers(first)
    assert seed_numbers[0][1:] != seed_numbers[1][1:], "different seeds give different numbers"
    folder = tmp_path / "a"
    assert sorted(p.name for p in folder.iterdir()) == [
        "figure1.json",
        "figure1.png",
        "figure2.json",
        "figure2.png",
        "figure3.png",
        "results.json",
    ]
    for name in ("figure1.png", "figure2.png", "figure3.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    strict = lambda text: json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))  # noqa: E731
    results = strict((folder / "results.json").read_text())
    figure = strict((folder / "figure1.json").read_text())
    assert results["config"]["seeds"] == 3 and len(results["per_seed"]) == 3
    assert results["counter_example"]["dpo_policy_kl_to_reference"] == "inf"
    assert figure["seed"] == 0 and len(figure["dpo"]) == 8 and figure["unseen"] == first["figure1"]["unseen"]
    summary = first["summary"]
    for method in ("reference", "dpo", "ppo", "kl_optimum"):
        for metric in ("unseen_mass", "optimal_mass", "cells_raised"):
            stats = summary[method][metric]
            assert stats["low"] <= stats["mean"] <= stats["high"] and stats["n"] == 3
    values = [run["metrics"]["dpo"]["unseen_mass"] for run in first["per_seed"]]
    assert summary["dpo"]["unseen_mass"]["mean"] == pytest.approx(sum(values) / 3)
    assert summary["reference"]["cells_raised"]["max"] == 0


@pytest.mark.parametrize(
    "changes",
    [
        dict(seeds=1),
        dict(confidence=1.0),
        dict(beta=0.0),
        dict(ppo_minibatches=3),
        dict(figure_seed=99),
        dict(responses_per_prompt=1),
        dict(pairs_per_prompt=4),
    ],
)
def test_config_rejects_bad_settings(tmp_path, changes):
    with pytest.raises(ValueError):
        _small_config(tmp_path, **changes)
