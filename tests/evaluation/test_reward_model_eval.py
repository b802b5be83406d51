"""Reward-model evaluation: per-subset accuracy and its weighted scores by hand, best-of-N with
scorers that know (or mis-know) the answers, the learned-reward path and the eval-rm command."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console

from prefalign.cli import main
from prefalign.data.schema import PreferencePair, Prompt, user_prompt
from prefalign.evaluation.generations import Generations
from prefalign.evaluation.registry import register_task, unregister_task
from prefalign.evaluation.reward_model_eval import (
    BestOfNConfig,
    RewardModelEvalConfig,
    build_scorer,
    evaluate_reward_model,
)
from prefalign.evaluation.reward_model_metrics import accuracy_by_subset, best_of_n, evaluate_pairs
from prefalign.models.load import ModelConfig
from prefalign.rewards.learned import LearnedReward
from prefalign.rollout.generate import SamplingConfig


def quiet() -> Console:
    return Console(file=io.StringIO(), width=160)


class LengthScorer:
    """A deterministic scorer: the response's length in characters."""

    name = "length"

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        return torch.tensor([float(len(r)) for r in responses])


# -- accuracy per subset -----------------------------------------------------------------------

# subset A: 2 of 3 right; B: 1 of 1 right; C: 0 of 2 right (one wrong, one tie)
CHOSEN = [3.0, 2.0, 0.0, 5.0, 1.0, 4.0]
REJECTED = [1.0, 1.0, 2.0, 4.0, 2.0, 4.0]
SUBSETS = ["A", "A", "A", "B", "C", "C"]


def test_accuracy_by_subset_by_hand():
    report = accuracy_by_subset(CHOSEN, REJECTED, SUBSETS)
    assert {s: (v["n"], v["accuracy"]) for s, v in report["subsets"].items()} == {
        "A": (3, pytest.approx(2 / 3)),
        "B": (1, 1.0),
        "C": (2, 0.0),
    }
    assert report["subsets"]["A"]["margin"] == pytest.approx((2 + 1 - 2) / 3)
    assert report["subsets"]["C"]["margin"] == pytest.approx(-0.5)
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["weighted"] == pytest.approx(3 / 6)  # by count: the accuracy over all pairs
    assert report["weights"] == {"A": pytest.approx(0.5), "B": pytest.approx(1 / 6), "C": pytest.approx(1 / 3)}
    assert report["mean"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # RewardBench-style: each subset counts the same
    assert report["num_pairs"] == 6 and report["margin"] == pytest.approx((2 + 1 - 2 + 1 - 1 + 0) / 6)


def test_accuracy_by_subset_with_weights_and_half_ties():
    report = accuracy_by_subset(CHOSEN, REJECTED, SUBSETS, weights={"A": 1, "B": 2, "C": 1, "D": 5})
    assert report["weighted"] == pytest.approx((1 * 2 / 3 + 2 * 1 + 1 * 0) / 4)
    assert report["weights"] == {"A": 0.25, "B": 0.5, "C": 0.25} and report["unused_weights"] == ["D"]
    half = accuracy_by_subset(CHOSEN, REJECTED, SUBSETS, ties="half")
    assert half["subsets"]["C"]["accuracy"] == pytest.approx(0.25) and half["accuracy"] == pytest.approx(3.5 / 6)
    with pytest.raises(ValueError, match=r"no weight for subsets \['C'\]"):
        accuracy_by_subset(CHOSEN, REJECTED, SUBSETS, weights={"A": 1, "B": 1})
    with pytest.raises(ValueError, match="positive sum"):
        accuracy_by_subset(CHOSEN, REJECTED, SUBSETS, weights={"A": 0, "B": 0, "C": 0})
    with pytest.raises(ValueError, match="need as many"):
        accuracy_by_subset(CHOSEN, REJECTED[:5], SUBSETS)


def pairs_with_lengths() -> list[PreferencePair]:
    """Pairs whose chosen/rejected lengths reproduce CHOSEN/REJECTED; the last has no subset."""
    rows = []
    for i, (c, r, s) in enumerate(zip(CHOSEN, REJECTED, SUBSETS)):
        metadata = {"subset": s} if i < 5 else {}
        rows.append(PreferencePair(user_prompt(f"q{i}"), "x" * int(c), "y" * int(r), metadata))
    return rows


def test_evaluate_pairs_scores_both_responses_and_groups_by_metadata():
    report = evaluate_pairs(LengthScorer(), pairs_with_lengths(), subset_key="subset", batch_size=4)
    assert report["subset_key"] == "subset"
    assert {s: (v["n"], v["accuracy"]) for s, v in report["subsets"].items()} == {
        "A": (3, pytest.approx(2 / 3)),
        "B": (1, 1.0),
        "C": (1, 0.0),
        "all": (1, 0.0),
    }
    assert report["mean"] == pytest.approx((2 / 3 + 1 + 0 + 0) / 4) and report["accuracy"] == pytest.approx(0.5)


def test_learned_reward_model_pair_accuracy_matches_its_own_scores():
    scorer = build_scorer(
        RewardModelEvalConfig(reward_model=ModelConfig(name_or_path="tiny-random"), reward_micro_batch_size=4, seed=3)
    )
    assert isinstance(scorer, LearnedReward) and scorer.micro_batch_size == 4
    pairs = pairs_with_lengths()
    report = evaluate_pairs(scorer, pairs, subset_key="subset", batch_size=4)
    prompts = [Prompt(p.prompt) for p in pairs]
    chosen = scorer(prompts, [p.chosen for p in pairs])
    rejected = scorer(prompts, [p.rejected for p in pairs])
    expected = [bool(c > r) for c, r in zip(chosen, rejected)]
    assert report["accuracy"] == pytest.approx(sum(expected) / len(pairs))
    assert report["subsets"]["A"]["accuracy"] == pytest.approx(sum(expected[:3]) / 3)
    assert report["subsets"]["A"]["margin"] == pytest.approx(float((chosen[:3] - rejected[:3]).mean()), abs=1e-6)


# -- best-of-N ----------------------------------------------------------------------------------


class AnswerTask:
    """Prompt i's right answer is ``ans-i``; reward 1 for an exact answer; score = accuracy."""

    name, category = "answers", "reasoning"

    def __init__(self, num_prompts: int = 4):
        self.num_prompts = num_prompts

    def prompts(self, limit: int | None = None) -> list[Prompt]:
        n = self.num_prompts if limit is None else min(limit, self.num_prompts)
        return [Prompt(user_prompt(f"question {i}"), {"reference": f"ans-{i}", "id": f"answers-{i}"}) for i in range(n)]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[dict[str, Any]]:
        return [{"reward": float(r == p.metadata["reference"])} for p, r in zip(prompts, responses)]

    def aggregate(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        return {"score": sum(r["reward"] for r in results) / len(results)}


class KnowsAnswer:
    """Scores 1 for the right answer (``sign=-1``: prefers wrong answers)."""

    def __init__(self, sign: float = 1.0):
        self.sign, self.name = sign, f"knows:{sign}"

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.sign * float(r == p.metadata["reference"]) for p, r in zip(prompts, responses)])


def answer_generations() -> Generations:
    """4 samples for each of 4 prompts; prompt i has i right samples (prompt 0 none)."""
    index, responses = [], []
    for i in range(4):
        for s in range(4):
            index.append(i)
            responses.append(f"ans-{i}" if s >= 4 - i else f"wrong-{s}")
    return Generations(index, responses)


def test_best_of_n_with_a_scorer_that_knows_the_answer_beats_a_single_sample():
    task, generations = AnswerTask(), answer_generations()
    good, rewards, results = best_of_n(task, task.prompts(), generations, KnowsAnswer(), seed=0)
    assert good["n"] == 4 and good["num_prompts"] == 4
    assert good["single_sample"] == pytest.approx((0 + 1 + 2 + 3) / 16)
    assert good["best_of_n"] == pytest.approx(3 / 4) == good["oracle"]  # every prompt with a right sample is solved
    assert good["gain"] == pytest.approx(3 / 4 - 6 / 16) and good["picked_top_rate"] == 1.0
    assert good["prompts_with_spread"] == 3 and len(rewards) == len(results) == 16
    bad, _, _ = best_of_n(task, task.prompts(), generations, KnowsAnswer(-1.0), seed=0)
    assert bad["best_of_n"] == 0.0 and bad["picked_top_rate"] == 0.0 and bad["gain"] < 0
    assert bad["single_sample"] == good["single_sample"] and bad["random_draw"] == good["random_draw"]
    # a constant scorer picks the first sample of each prompt (ties go to the first)
    flat, _, _ = best_of_n(task, task.prompts(), generations, LengthScorer(), seed=0)
    assert flat["best_of_n"] == 0.0  # the first sample is wrong for every prompt
    # the random draw is one sample per prompt, so it is a multiple of 1/4 and reproducible
    assert good["random_draw"] * 4 == int(good["random_draw"] * 4)
    assert best_of_n(task, task.prompts(), generations, KnowsAnswer(), seed=0)[0]["random_draw"] == good["random_draw"]


def test_best_of_n_needs_the_same_n_for_every_prompt():
    task = AnswerTask(2)
    with pytest.raises(ValueError, match=r"same number of responses for every prompt, got sizes \[1, 2\]"):
        best_of_n(task, task.prompts(), Generations([0, 0, 1], ["a", "b", "c"]), KnowsAnswer())


class VowelTask:
    """Reward 1 when a response holds a lowercase vowel (the tiny random model sometimes writes one)."""

    name, category = "vowel_bon", "reasoning"

    def prompts(self, limit: int | None = None) -> list[Prompt]:
        return [Prompt(user_prompt(f"say {w}")) for w in ("cat", "dog", "emu", "yak", "owl", "ant")][:limit]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[dict[str, Any]]:
        return [{"reward": float(any(v in r for v in "aeiou"))} for r in responses]

    def aggregate(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        return {"score": sum(r["reward"] for r in results) / len(results)}


class VowelOracle:
    name = "vowel-oracle"

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        return torch.tensor([float(any(v in r for v in "aeiou")) for r in responses])


def test_best_of_n_sampled_from_the_tiny_policy_and_saved(tmp_path):
    register_task("vowel_bon", "reasoning", VowelTask, replace=True)
    try:
        config = RewardModelEvalConfig(
            evaluate_pairs=False,
            output=str(tmp_path / "rm.json"),
            seed=1,
            best_of_n=BestOfNConfig(
                tasks=["vowel_bon"],
                policy=ModelConfig(name_or_path="tiny-random"),
                limit=6,
                micro_batch_size=12,
                sampling=SamplingConfig(temperature=1.0, max_new_tokens=6, num_samples=4),
            ),
        )
        results = evaluate_reward_model(config, scorer=VowelOracle(), console=quiet())
    finally:
        unregister_task("vowel_bon")
    report = results["best_of_n"]["vowel_bon"]
    assert report["n"] == 4 and report["num_prompts"] == 6
    assert report["best_of_n"] == report["oracle"] >= report["single_sample"]
    lines = [json.loads(line) for line in Path(report["generations"]).read_text().splitlines()]
    assert len(lines) == 24 and all("reward_model_score" in line["result"] for line in lines)
    rewards = [line["result"]["reward"] for line in lines]
    assert report["single_sample"] == pytest.approx(sum(rewards) / 24)
    assert report["best_of_n"] == pytest.approx(sum(max(rewards[4 * i : 4 * i + 4]) for i in range(6)) / 6)
    assert json.loads((tmp_path / "rm.json").read_text())["best_of_n"]["vowel_bon"]["best_of_n"] == report["best_of_n"]


# -- the command -------------------------------------------------------------------------------


def test_eval_rm_command_on_a_pairs_file_with_subsets(tmp_path, capsys):
    rows = [
        {"prompt": f"q{i}", "chosen": "x" * int(c + 1), "rejected": "y" * int(r + 1), "subset": s}
        for i, (c, r, s) in enumerate(zip(CHOSEN, REJECTED, SUBSETS))
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "rm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": str(data), "eval_size": 0, "options": {"metadata_columns": ["subset"]}},
                "split": "all",
                "subset_key": "subset",
                "subset_weights": {"A": 1, "B": 2, "C": 1},
            }
        )
    )
    out = tmp_path / "rm-results.json"
    code = main(["eval-rm", "--config", str(config), "--reward", "length_target:1", "--output", str(out)])
    assert code == 0
    pairs = json.loads(out.read_text())["pairs"]
    # length_target:1 scores -|len - 1|: shorter is better, so a pair is right when chosen is shorter
    right = [c < r for c, r in zip(CHOSEN, REJECTED)]
    assert pairs["accuracy"] == pytest.approx(sum(right) / 6)
    by_subset = {s: sum(ok for ok, t in zip(right, SUBSETS) if t == s) / SUBSETS.count(s) for s in "ABC"}
    assert {s: v["accuracy"] for s, v in pairs["subsets"].items()} == pytest.approx(by_subset)
    assert pairs["weighted"] == pytest.approx((by_subset["A"] + 2 * by_subset["B"] + by_subset["C"]) / 4)
    assert pairs["num_pairs"] == 6 and "weighted" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # tyro reports a bad value and exits with 2
        main(["eval-rm", "--config", str(config), "--reward", "length_target:1", "--split", "some"])
    assert exit_info.value.code == 2 and "split must be held_out or all" in capsys.readouterr().err
