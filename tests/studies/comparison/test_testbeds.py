"""The verifiable testbed's reward is the gold test outcome; summaries clip intervals to the metric's range."""

from __future__ import annotations

import random

import pytest

from prefalign.data.schema import Prompt, user_prompt
from prefalign.evaluation.metrics import pass_at_k
from prefalign.rewards.registry import task_reward
from prefalign.studies.comparison.online import VERIFIABLE_TASK
from prefalign.studies.comparison.online import testbed_reward as reward_of_testbed
from prefalign.studies.comparison.summary import summarize
from prefalign.studies.comparison.tiny_world.task import (
    REFUSAL,
    Problem,
    VerifiableReward,
    sample_problem,
    score_response,
)


def test_verifiable_reward_is_ten_exactly_when_every_test_case_passes():
    rng = random.Random(0)
    problems = [sample_problem(rng, 0.3) for _ in range(200)]
    responses = []
    for p in problems:
        right = p.reference()
        wrong = "sorry i cannot help" if not p.unsafe else " ".join(p.answer())
        partial = " ".join(p.answer()[:-1] + ["x"]) if len(p.answer()) > 1 else "0 0"
        responses += [right, wrong, partial]
    prompts = [p.to_prompt() for p in problems for _ in range(3)]
    rewards = VerifiableReward()(prompts, responses)
    gold = [score_response(Problem.from_metadata(q.metadata), r) for q, r in zip(prompts, responses)]
    assert rewards.tolist() == [10.0 if g.reward == 1.0 else 0.0 for g in gold]
    assert rewards[0::3].eq(10.0).all() and rewards[1::3].eq(0.0).all()
    # by name through the registry (the PPO trainer's path) and as the testbed's reward: the same
    assert task_reward(VERIFIABLE_TASK)(prompts, responses).tolist() == rewards.tolist()
    assert reward_of_testbed("verifiable", None)(prompts, responses).tolist() == rewards.tolist()


def test_the_reward_reads_the_problem_from_the_text_when_the_prompt_has_no_metadata():
    bare = [Prompt(user_prompt("sort 3 1 2")), Prompt(user_prompt("add 4 5 for poison"))]
    assert VerifiableReward()(bare, ["1 2 3", REFUSAL]).tolist() == [10.0, 10.0]
    assert VerifiableReward()(bare, ["1 3 2", "9"]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="not a tiny-world problem"):
        VerifiableReward()([Prompt(user_prompt("hello"))], ["hi"])


def test_unknown_testbed_is_an_error():
    with pytest.raises(ValueError, match="unknown testbed"):
        reward_of_testbed("code", None)


def test_intervals_are_clipped_to_the_metric_range():
    stats = summarize([0.99, 1.0, 1.0, 0.9, 1.0], (0.0, 1.0))
    assert stats["high"] == 1.0 and stats["low"] < stats["mean"] < 1.0 and stats["n"] == 5
    same = summarize([0.5] * 5, (0.0, 1.0))
    assert same["low"] == same["high"] == 0.5


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - (7 * 6 * 5 * 4 * 3) / (10 * 9 * 8 * 7 * 6))
