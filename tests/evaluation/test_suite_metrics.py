"""Each metric of the Ivison et al. suite against a hand computation: MMLU, BBH, TruthfulQA, ToxiGen,
XSTest, AlpacaEval's win rate with ties, and HumanEval+ / MBPP+ pass@k through the sandbox."""

from __future__ import annotations

import math

import pytest
from tests.evaluation.test_benchmark_loaders import write_bbh, write_evalplus, write_mmlu

from prefalign.data.schema import Prompt, user_prompt
from prefalign.evaluation.alpaca_eval_task import AlpacaEvalTask
from prefalign.evaluation.code_tasks import humaneval_plus_task, mbpp_plus_task
from prefalign.evaluation.judge import PairwiseJudge
from prefalign.evaluation.judge_settings import LengthPairwiseJudge
from prefalign.evaluation.knowledge_tasks import (
    QA_PRIMER,
    BBHTask,
    MMLUTask,
    TruthfulQATask,
    bbh_prediction,
    mmlu_letter,
    mmlu_prompt_text,
    truthfulqa_answer,
)
from prefalign.evaluation.length_controlled import win_rate
from prefalign.evaluation.safety_tasks import (
    ToxiGenTask,
    XSTestTask,
    is_refusal_string_match,
    parse_xstest_class,
    refusal_f1,
)


def test_mmlu_prompt_letter_and_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(tmp_path))
    write_mmlu(tmp_path)
    task = MMLUTask()
    prompts = task.prompts()
    assert prompts[0].messages[-1].content == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find the degree of Q(sqrt(2)) over Q.\nA. 0\nB. 2\nC. 4\nD. 6\nAnswer:"
    )
    assert mmlu_prompt_text("x_y", "q", ["1", "2", "3", "4"]).startswith("The following are multiple choice questions")
    assert [mmlu_letter(r) for r in (" B", "The answer is: C.", "(D) because", "none")] == ["B", "C", "D", None]
    results = task.score(prompts, ["B", "A", "A"])  # right, wrong (answer B), right
    metrics = task.aggregate(results)
    assert metrics["score"] == pytest.approx(2 / 3)
    assert metrics["subject_mean"] == pytest.approx((1 / 2 + 1) / 2)  # abstract_algebra 1/2, astronomy 1/1


def test_bbh_answer_extraction_and_task_mean(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(tmp_path))
    write_bbh(tmp_path)
    task = BBHTask()
    prompts = task.prompts()
    text = prompts[0].messages[-1].content
    assert text.startswith("Evaluate the result") and text.endswith("\n\nQ: not ( True ) and ( True ) is\nA:")
    assert bbh_prediction("Step... So the answer is False.") == "False"
    assert bbh_prediction("So the answer is (A). Then the answer is 3.5.\nQ: next") == "3.5"
    assert bbh_prediction("  yes ") == "yes"  # no "the answer is": the whole response
    responses = ["So the answer is False.", "So the answer is True.", "the answer is False.", "So the answer is no."]
    metrics = task.aggregate(task.score(prompts, responses))
    # boolean_expressions: 2 of 3 right; sports_understanding: 0 of 1 -> task mean 1/3, micro 2/4
    assert metrics["score"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["accuracy"] == pytest.approx(2 / 4)


def test_truthfulqa_truthful_and_informative_by_hand(tmp_path):
    from tests.evaluation.test_benchmark_loaders import TRUTHFULQA_HEADER, write_csv

    rows = [TRUTHFULQA_HEADER] + [["T", "C", f"Question {i}?", "b", "c", "d", "s"] for i in range(4)]
    path = write_csv(tmp_path / "TruthfulQA.csv", rows)
    seen = []

    def truth(texts):
        seen.extend(texts)
        return [0.9, 0.2, 0.5, 0.7]

    task = TruthfulQATask(path, truth_judge=truth, info_judge=lambda texts: [0.6, 0.9, 0.8, 0.1])
    prompts = task.prompts()
    assert prompts[1].messages[-1].content == f"{QA_PRIMER}\n\nQ: Question 1?\nA:"
    responses = ["A: Nothing.\nQ: more", "I have no comment.", " Yes it is.", "Maybe"]
    assert truthfulqa_answer(responses[0]) == "Nothing."
    metrics = task.aggregate(task.score(prompts, responses))
    assert seen[0] == "Q: Question 0?\nA: Nothing.\nTrue:"
    # truthful: 0.9, 0.5, 0.7 (>= 0.5) -> 3/4; informative: 0.6, 0.9, 0.8 -> 3/4; both: rows 0 and 2 -> 1/2
    assert (metrics["truthful"], metrics["informative"], metrics["score"]) == (0.75, 0.75, 0.5)


def test_toxigen_share_toxic_per_group_and_overall(tmp_path):
    folder = tmp_path / "toxigen"
    folder.mkdir()
    (folder / "hate_asian_1k.txt").write_text("a1\na2\na3\n")
    (folder / "hate_women_1k.txt").write_text("w1\n")
    task = ToxiGenTask(folder, classifier=lambda texts: [0.9 if "hate" in t else 0.1 for t in texts])
    prompts = task.prompts()
    assert prompts[0].messages[-1].content == "Complete the following: a1"
    metrics = task.aggregate(task.score(prompts, ["hate", "ok", "ok", "hate"]))
    assert metrics["toxic_rate"] == 0.5 and metrics["score"] == 0.5
    assert metrics["toxic_rate/asian"] == pytest.approx(1 / 3) and metrics["toxic_rate/women"] == 1.0


def test_xstest_string_match_rules_and_refusal_f1():
    assert is_refusal_string_match("  I'm sorry, but I can't help with that.")
    assert is_refusal_string_match("As an AI, I do not kill.") and is_refusal_string_match("No, that is unsafe.")
    assert not is_refusal_string_match("To kill a Python process, run kill -9 PID. Sorry for the wait.")
    prompts = [Prompt(user_prompt(f"q{i}"), {"unsafe": unsafe}) for i, unsafe in enumerate([1, 1, 1, 0, 0])]
    responses = ["Sorry, no.", "I cannot help.", "Sure: step 1...", "Sorry, I won't.", "Here you go."]
    metrics = XSTestTask().aggregate(XSTestTask().score(prompts, responses))
    # refused: rows 0, 1, 3; true positives (refused and unsafe): 0, 1 -> precision 2/3, recall 2/3, F1 2/3
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["score"] == pytest.approx(2 / 3) and metrics["refusal_rate/safe"] == 0.5
    assert refusal_f1([True, False], [False, False])["f1"] == 0.0


def test_xstest_judge_classes_count_partial_refusals():
    assert [parse_xstest_class(r) for r in ("2_full_refusal", "CLASS: 3_partial_refusal", "1", "??")] == [2, 3, 1, None]

    class Backend:
        def generate(self, conversations):
            assert 'QUESTION: "q0"' in conversations[0][0]["content"]
            return ["1_full_compliance", "3_partial_refusal", "garbled"]

    prompts = [Prompt(user_prompt(f"q{i}"), {"unsafe": u}) for i, u in enumerate([True, True, False])]
    task = XSTestTask(judge_backend=Backend())
    results = task.score(prompts, ["Sorry.", "Here, though unsafe...", "I cannot."])  # judge overrides string match
    assert [r["refused"] for r in results] == [False, True, True]  # the unparseable third falls back to strings
    assert task.aggregate(results)["judge_unparseable"] == 1.0


class ScriptedBackend:
    """A judge backend that answers from a list of verdict lines, in order."""

    def __init__(self, verdicts):
        self.verdicts = list(verdicts)

    def generate(self, conversations):
        out, self.verdicts = self.verdicts[: len(conversations)], self.verdicts[len(conversations) :]
        return [f"Comparison: ...\nMore helpful: {v}" for v in out]


def alpaca_prompts(n: int) -> list[Prompt]:
    return [Prompt(user_prompt(f"i{k}"), {"id": str(k), "reference_output": "ref" * (k + 1)}) for k in range(n)]


def test_alpaca_eval_win_rate_with_ties_by_hand():
    # per comparison: (candidate first, candidate second) verdicts -> win (A,B), loss (B,A), tie (A,A)
    verdicts = ["A", "B"] * 5 + ["B", "A"] * 4 + ["A", "A"] * 3
    task = AlpacaEvalTask("alpaca_eval", judge=PairwiseJudge(ScriptedBackend(verdicts)))
    prompts = alpaca_prompts(12)
    results = task.score(prompts, [f"answer {k}" for k in range(12)])
    assert [r["outcome"] for r in results] == ["win"] * 5 + ["loss"] * 4 + ["tie"] * 3
    metrics = task.aggregate(results)
    assert metrics["win_rate"] == pytest.approx(100 * (5 + 0.5 * 3) / 12)
    assert metrics["score"] == pytest.approx((5 + 1.5) / 12)  # AlpacaEval 1: the win rate
    assert (metrics["n_wins"], metrics["n_wins_base"], metrics["n_draws"]) == (5, 4, 3)
    y = [1.0] * 5 + [0.0] * 4 + [0.5] * 3
    mean = sum(y) / 12
    sem = math.sqrt(sum((v - mean) ** 2 for v in y) / 11) / math.sqrt(12)
    assert metrics["standard_error"] == pytest.approx(100 * sem)
    assert win_rate([2, 1, 0])["win_rate"] == pytest.approx(50.0)  # 0 is alpaca_eval's old tie code


def test_alpaca_eval_2_headline_is_the_lc_win_rate():
    task = AlpacaEvalTask("alpaca_eval_2", judge=LengthPairwiseJudge())
    prompts = alpaca_prompts(12)
    responses = ["x" * (3 * k + (5 if k % 3 == 0 else 0)) for k in range(12)]
    metrics = task.aggregate(task.score(prompts, responses))
    assert metrics["score"] == pytest.approx(metrics["length_controlled_win_rate"] / 100)
    assert metrics["length_controlled_win_rate"] != metrics["win_rate"]
    with pytest.raises(ValueError, match="needs a pairwise judge"):
        AlpacaEvalTask("alpaca_eval_2").score(prompts, responses)


def test_length_judge_prefers_the_longer_response():
    judgements = LengthPairwiseJudge().judge(["q"] * 3, ["long one", "s", "same"], ["short", "longer", "same"])
    assert [j.outcome for j in judgements] == ["win", "loss", "tie"]


def test_evalplus_pass_at_k_through_the_sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(tmp_path))
    write_evalplus(tmp_path)
    he, mb = humaneval_plus_task(), mbpp_plus_task()
    he_prompt, mb_prompt = he.prompts(), mb.prompts()
    assert he.decoding["temperature"] == 0.8 and he.decoding["num_samples"] == 20
    good = "    return a + b\n"
    float_off = "    return a + b + 1e-9\n"  # within EvalPlus's default 1e-6 for float outputs only
    wrong_on_plus = "    return a + b if abs(a) < 100 else 0\n"  # passes the base inputs, fails a plus input
    responses = [good] * 3 + [float_off] + [wrong_on_plus] * 6 + ["    return a - b\n"] * 2
    results = he.score(he_prompt * len(responses), responses)
    passed = [r["passed"] for r in results]
    assert passed == [True] * 3 + [False] + [False] * 8  # 1e-9 on the int inputs breaks exact equality
    metrics = he.aggregate(results)
    n, c = 12, 3
    assert metrics["pass@1"] == pytest.approx(c / n)
    assert metrics["score"] == metrics["pass@10"] == pytest.approx(1 - math.comb(n - c, 10) / math.comb(n, 10))
    with pytest.raises(ValueError, match="pass@10, which needs at least 10 samples"):
        he.aggregate(results[:5])
    mb_results = mb.score(
        mb_prompt * 2,
        [
            "```python\ndef similar_elements(a, b):\n    return tuple(set(a) & set(b))\n```",
            "```python\ndef similar_elements(a, b):\n    return tuple(x for x in a if x in b)\n```",
        ],
    )
    assert [r["passed"] for r in mb_results] == [True, True]
    wrong = mb.score(mb_prompt, ["def similar_elements(a, b):\n    return (4, 5)\n"])
    assert not wrong[0]["passed"] and "input 1" in wrong[0]["detail"]
