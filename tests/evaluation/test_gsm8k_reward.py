"""GSM8K answer extraction, reward, task, and the self-check on the real reference solutions."""

from fractions import Fraction

import pytest

from prefalign.data.schema import Prompt, user_prompt
from prefalign.data.sources.gsm8k import load_gsm8k
from prefalign.evaluation.base import Task, TaskReward
from prefalign.evaluation.gsm8k_task import GSM8KTask
from prefalign.rewards.base import RewardFunction
from prefalign.rewards.verifiable import GSM8KReward, answers_match, extract_answer, format_number, parse_number


@pytest.mark.parametrize(
    "response,expected",
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("So the answer is $1,234.50.", "1234.5"),
        ("The answer is -3", "-3"),
        ("The temperature falls to \u22127 degrees.", "-7"),
        ("5-3 = 2", "2"),  # a hyphen glued to a digit is subtraction, not a sign
        ("Half of it: 3/4.", "0.75"),
        ("The final answer is: $70,000. Then 3 more checks.", "70000"),  # "answer is" beats the last number
        ("\\boxed{42} because 6*7", "42"),
        ("Total: 10 apples + 20 pears = 30.", "30"),
        ("1,2,3", "3"),  # commas between single digits are list separators
        ("It costs .5 dollars", "0.5"),
        ("25% of them", "25"),
        ("<<3*4=12>>12 eggs", "12"),
        ("#### The answer: 7", "7"),
        ("1/3 of the cake", "1/3"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_numbers_and_matching():
    assert parse_number("$1,000.00") == 1000
    assert format_number(Fraction(5, 2)) == "2.5" and format_number(Fraction(-4)) == "-4"
    assert answers_match("18.0", "18") and answers_match("1/2", "0.5")
    assert not answers_match("18.01", "18") and answers_match("18.01", "18", tolerance=0.05)
    assert not answers_match(None, "18")
    with pytest.raises(ValueError, match="exactly one number"):
        parse_number("1 and 2")


def _prompt(reference):
    return Prompt(user_prompt("q"), {"task": "gsm8k", "reference": reference})


def test_reward_protocol_and_configuration():
    reward = GSM8KReward()
    assert isinstance(reward, RewardFunction)
    prompts = [_prompt("18"), _prompt("18"), _prompt("18")]
    responses = ["The answer is 18.", "The answer is 17.", "I do not know."]
    assert reward(prompts, responses).tolist() == [1.0, 0.0, 0.0]
    custom = GSM8KReward(correct_reward=1.0, incorrect_reward=-0.5, no_answer_reward=-1.0)
    assert custom(prompts, responses).tolist() == [1.0, -0.5, -1.0]
    with pytest.raises(ValueError, match="prompt 0 has no string metadata\\['reference'\\]"):
        reward([Prompt(user_prompt("q"))], ["1"])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        reward(prompts[:2], ["1"])


def test_task_scores_and_reward_agree():
    task = GSM8KTask(instruction="Put the final answer after '####'.", system="Be brief.")
    assert isinstance(task, Task) and task.category == "reasoning"
    prompts = [_prompt("18"), _prompt("5"), _prompt("7")]
    responses = ["#### 18", "maybe 6", "nothing"]
    results = task.score(prompts, responses)
    assert [r["correct"] for r in results] == [True, False, False]
    assert [r["predicted"] for r in results] == ["18", "6", None]
    assert TaskReward(task)(prompts, responses).tolist() == [r["reward"] for r in results] == [1.0, 0.0, 0.0]
    metrics = task.aggregate(results)
    assert metrics["score"] == metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["no_answer_rate"] == pytest.approx(1 / 3)


def test_task_prompts_from_the_real_test_split():
    try:
        prompts = GSM8KTask(instruction="Answer after '####'.", system="Be brief.").prompts(limit=2)
    except FileNotFoundError as exc:
        pytest.skip(f"GSM8K data not available: {exc}")
    assert [m.role for m in prompts[0].messages] == ["system", "user"]
    assert prompts[0].messages[1].content.endswith("\nAnswer after '####'.")
    assert prompts[0].metadata["reference"] == "18" and len(prompts) == 2


@pytest.mark.parametrize("split", ["train", "test", "test_socratic"])
def test_reference_solutions_score_correct_against_their_own_answers(split):
    try:
        prompts = load_gsm8k(split, strict=True)
    except FileNotFoundError as exc:
        pytest.skip(f"GSM8K data not available: {exc}")
    reward = GSM8KReward()
    solutions = [p.metadata["solution"] for p in prompts]
    scores = reward.score(prompts, solutions)
    exceptions = [(p.metadata["id"], s.predicted, s.reference) for p, s in zip(prompts, scores) if not s.correct]
    print(
        f"\n{split}: {len(prompts) - len(exceptions)}/{len(prompts)} full reference solutions correct; exceptions: "
        f"{exceptions}"
    )
    assert exceptions == []
    # Without the "#### answer" line, the last-number fallback finds the answer in ~97% of solutions
    # (the rest end on another quantity, e.g. "... = 15 liters of water out of the 24 liters").
    bodies = [s[: s.rindex("####")] for s in solutions]
    body_scores = reward.score(prompts, bodies)
    rate = sum(s.correct for s in body_scores) / len(prompts)
    print(f"{split}: last-number fallback without the '####' line: {rate:.4f}")
    assert rate > 0.97
