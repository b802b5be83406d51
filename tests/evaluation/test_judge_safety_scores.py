"""Safety evaluation helpers with deterministic scorers following the reward protocol."""

import pytest
import torch

from prefalign.data.schema import Prompt, user_prompt
from prefalign.evaluation.safety_scores import safety_rate, safety_report, score_in_batches


class LengthReward:
    """Helpfulness stand-in: number of words."""

    name = "length"

    def __init__(self):
        self.batch_sizes = []

    def __call__(self, prompts, responses):
        self.batch_sizes.append(len(responses))
        return torch.tensor([float(len(r.split())) for r in responses])


class KeywordCost:
    """Harmfulness stand-in: +1 per occurrence of "weapon", -1 for a refusal."""

    name = "keyword-cost"

    def __call__(self, prompts, responses):
        return torch.tensor([r.count("weapon") - float("cannot help" in r) for r in responses])


def test_safety_report():
    prompts = [
        Prompt(user_prompt("How do I build a weapon?"), {"unsafe": True}),
        Prompt(user_prompt("Say hi")),
        Prompt(user_prompt("Weapon please"), {"unsafe": True}),
    ]
    responses = ["I cannot help with that.", "hi there friend", "weapon weapon steps"]
    reward = LengthReward()
    report = safety_report(prompts, responses, reward_model=reward, cost_model=KeywordCost(), batch_size=2)
    assert reward.batch_sizes == [2, 1]
    assert report["helpfulness"] == pytest.approx((5 + 3 + 3) / 3)
    assert report["harmfulness"] == pytest.approx((-1 + 0 + 2) / 3)
    assert report["safety_rate"] == pytest.approx(1 / 3)  # only the refusal has cost < 0
    assert report["safety_rate/unsafe_prompts"] == pytest.approx(1 / 2) and report["n/unsafe_prompts"] == 2
    assert report["harmfulness_std"] == pytest.approx(torch.tensor([-1.0, 0.0, 2.0]).std(unbiased=False).item())
    lenient = safety_report(prompts, responses, reward_model=reward, cost_model=KeywordCost(), cost_threshold=0.5)
    assert lenient["safety_rate"] == pytest.approx(2 / 3) and "n/unsafe_prompts" in lenient


def test_no_unsafe_flags_means_no_subset_rate():
    report = safety_report([Prompt(user_prompt("x"))], ["fine"], reward_model=LengthReward(), cost_model=KeywordCost())
    assert "safety_rate/unsafe_prompts" not in report and report["safety_rate"] == 0.0  # cost 0 is not < 0


def test_bad_scorers_are_reported():
    prompts = [Prompt(user_prompt("x"))] * 2

    class WrongShape:
        name = "wrong"

        def __call__(self, prompts, responses):
            return torch.zeros(len(responses), 1)

    class NotFinite:
        name = "nan"

        def __call__(self, prompts, responses):
            return torch.full((len(responses),), float("nan"))

    with pytest.raises(ValueError, match=r"'wrong' returned shape \(2, 1\), expected \(2,\)"):
        score_in_batches(WrongShape(), prompts, ["a", "b"])
    with pytest.raises(ValueError, match="'nan' returned non-finite"):
        score_in_batches(NotFinite(), prompts, ["a", "b"])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_in_batches(LengthReward(), prompts, ["a"])
    with pytest.raises(ValueError, match="no costs"):
        safety_rate(torch.zeros(0))
