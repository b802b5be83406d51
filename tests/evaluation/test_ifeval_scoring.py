"""IFEval strict/loose scoring, the task protocol, and validation on the published GPT-4 responses.

Published GPT-4 accuracies (Zhou et al., 2023, arXiv:2311.07911, Table 3; also listed on
paperswithcode): prompt-level strict 76.89, instruction-level strict 83.57, prompt-level loose
79.30, instruction-level loose 85.37 (i.e. 416/541, 697/834, 429/541, 712/834).
"""

import pytest

from prefalign.data.schema import Prompt, user_prompt
from prefalign.data.sources.ifeval import load_ifeval, load_ifeval_responses, match_responses
from prefalign.evaluation.base import Task, TaskReward
from prefalign.evaluation.ifeval import accuracies, accuracy_by_instruction, evaluate_response, loose_variants
from prefalign.evaluation.ifeval_task import IFEvalTask
from prefalign.paths import data_path

GPT4_FILE = ("ifeval", "input_response_data_gpt4_20231107_145030.jsonl")


def _real_data():
    try:
        return load_ifeval(strict=True), load_ifeval_responses(data_path(*GPT4_FILE))
    except FileNotFoundError as exc:
        pytest.skip(f"IFEval data not available: {exc}")


def test_loose_variants_are_the_eight_upstream_ones():
    variants = loose_variants("Sure! Here it is:\n*a, b*\nHope this helps")
    assert variants == [
        "Sure! Here it is:\n*a, b*\nHope this helps",
        "Sure! Here it is:\na, b\nHope this helps",
        "*a, b*\nHope this helps",
        "Sure! Here it is:\n*a, b*",
        "*a, b*",
        "a, b\nHope this helps",
        "Sure! Here it is:\na, b",
        "a, b",
    ]


def test_strict_and_loose_on_one_response():
    response = 'Sure, here you go:\n"quoted answer"'
    result = evaluate_response(response, ["startend:quotation", "punctuation:no_comma"], [{}, {}])
    assert result.strict == [False, False]
    assert result.loose == [True, True]  # dropping the first line fixes both
    assert not result.prompt_strict and result.prompt_loose


def test_accuracies_pool_instructions_over_prompts():
    r1 = evaluate_response("no commas", ["punctuation:no_comma"], [{}])
    r2 = evaluate_response("a, b", ["punctuation:no_comma", "startend:quotation"], [{}, {}])
    metrics = accuracies([r1, r2])
    assert metrics["prompt_level_strict_acc"] == 0.5
    assert metrics["inst_level_strict_acc"] == pytest.approx(1 / 3)
    assert metrics["num_instructions"] == 3
    assert accuracy_by_instruction([r1, r2]) == {"punctuation:no_comma": 0.5, "startend:quotation": 0.0}
    with pytest.raises(ValueError, match="no IFEval results"):
        accuracies([])


def test_task_protocol_and_reward_share_one_implementation():
    task = IFEvalTask()
    assert isinstance(task, Task) and task.category == "instruction following"
    prompt = Prompt(
        user_prompt("Answer without commas in quotes."),
        {
            "task": "ifeval",
            "instruction_ids": ["punctuation:no_comma", "startend:quotation"],
            "instruction_kwargs": [{}, {}],
        },
    )
    responses = ['"yes indeed"', "yes, indeed", 'Here:\n"yes indeed"']
    results = task.score([prompt] * 3, responses)
    assert [r["reward"] for r in results] == [1.0, 0.0, 0.0]
    assert results[2]["prompt_loose"] and not results[2]["prompt_strict"]
    assert TaskReward(task)([prompt] * 3, responses).tolist() == [1.0, 0.0, 0.0]
    metrics = task.aggregate(results)
    assert metrics["score"] == metrics["prompt_level_strict_acc"] == pytest.approx(1 / 3)
    assert metrics["prompt_level_loose_acc"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="lacks metadata"):
        task.score([Prompt(user_prompt("x"))], ["y"])
    with pytest.raises(ValueError, match="headline"):
        IFEvalTask(headline="accuracy")


def _gpt4_counts(ruleset, position_fallback):
    prompts, pairs = _real_data()
    responses, unmatched = match_responses(prompts, pairs, position_fallback=position_fallback)
    task = IFEvalTask(ruleset=ruleset)
    results = task.score(prompts, responses)
    counts = (
        sum(r["prompt_strict"] for r in results),
        sum(sum(r["strict"]) for r in results),
        sum(r["prompt_loose"] for r in results),
        sum(sum(r["loose"]) for r in results),
    )
    return counts, task.aggregate(results), [prompts[i].metadata["key"] for i in unmatched]


def test_gpt4_responses_reproduce_published_accuracies_with_release_2023_rules():
    counts, metrics, unmatched = _gpt4_counts("release-2023", position_fallback=True)
    print(f"\nGPT-4 release-2023 rules: {counts} -> " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    assert unmatched == [2785]  # the input file's prompt was edited after the responses were made
    assert metrics["num_prompts"] == 541 and metrics["num_instructions"] == 834
    # published 416, 697, 429, 712: strict counts are exact; loose differs by one prompt and one
    # instruction (the nltk/langdetect approximations)
    assert counts == (416, 697, 430, 713)
    assert metrics["prompt_level_strict_acc"] == pytest.approx(0.7689, abs=5e-5)
    assert metrics["inst_level_strict_acc"] == pytest.approx(0.8357, abs=5e-5)


def test_gpt4_responses_with_current_rules():
    counts, metrics, _ = _gpt4_counts("current", position_fallback=False)
    print(
        f"\nGPT-4 current rules, exact matching only: {counts} -> prompt strict "
        f"{metrics['prompt_level_strict_acc']:.4f}"
    )
    # current upstream also counts **bold** spans as highlights: about one point above the paper
    assert counts == (422, 702, 436, 718)
