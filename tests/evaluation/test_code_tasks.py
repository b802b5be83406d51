"""Coding tasks: score runs the sandbox through the reward's code path, aggregate gives pass@k and
n@k; the HumanEval and MBPP canonical solutions pass their own tests."""

from __future__ import annotations

import json

import pytest

from prefalign.data.schema import Prompt, user_prompt
from prefalign.evaluation.base import Task, TaskReward
from prefalign.evaluation.code_tasks import (
    CODE_TASKS,
    CodeTask,
    apps_task,
    code_contests_task,
    humaneval_task,
    mbpp_task,
)
from prefalign.evaluation.metrics import n_at_k, pass_at_k
from prefalign.paths import default_data_dir
from prefalign.rewards.code import CodeExecutionReward, StdioTests
from prefalign.rewards.sandbox import Sandbox, SandboxConfig

# rows in the upstream formats (fuller examples, every field, are in tests/data/test_code_sources.py)
APPS_STDIO = {
    "problem_id": 1,
    "question": "Print twice n.",
    "solutions": json.dumps(["print(2 * int(input()))"]),
    "input_output": json.dumps({"inputs": ["3\n", "5\n"], "outputs": ["6\n", "10\n"]}),
    "difficulty": "introductory",
    "url": "https://example.org/1",
    "starter_code": "",
}
APPS_CALL = {
    "problem_id": 2,
    "question": "Add.",
    "solutions": json.dumps(["class Solution:\n    def add(self, a, b):\n        return a + b\n"]),
    "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [[3], [7]]}),
    "difficulty": "interview",
    "url": "https://example.org/2",
    "starter_code": "class Solution:\n    def add(self, a, b):\n        ",
}
CONTEST = {
    "name": "1_A. Twice",
    "description": "Print twice n.",
    "public_tests": {"input": ["3\n"], "output": ["6\n"]},
    "private_tests": {"input": ["5\n"], "output": ["10\n"]},
    "generated_tests": {"input": ["0\n"], "output": ["0\n"]},
    "solutions": {"language": [2, 3], "solution": ["int main(){}", "print(2 * int(input()))"]},
    "time_limit": {"seconds": 1, "nanos": 0},
}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(timeout=1.5, max_workers=2))


def toy_prompt(task_id: str, factor: int) -> Prompt:
    hidden = StdioTests(("1\n", "2\n", "3\n"), tuple(str(factor * x) for x in (1, 2, 3)))
    public = StdioTests(("1\n",), (str(factor),))
    metadata = {"task": "toy", "task_id": task_id, "hidden_tests": hidden.to_dict(), "public_tests": public.to_dict()}
    return Prompt(user_prompt(f"multiply by {factor}"), metadata)


def program(body: str) -> str:
    return f"```python\nx = int(input())\n{body}\n```"


def test_code_task_scores_and_aggregates_like_the_metrics(sandbox):
    prompts = [toy_prompt("toy/a", 2), toy_prompt("toy/b", 3)]
    task = CodeTask("toy", lambda: prompts, sandbox, ks=(1, 2, 4), n_at_ks=((1, 2), (2, 4)))
    assert isinstance(task, Task) and task.category == "coding" and task.prompts(limit=1) == prompts[:1]
    samples_a = [
        "print(2 * x)",
        "print(2 if x == 1 else 0)",
        "print(x)",
        "print(2 * x)",
    ]  # pass, public only, none, pass
    samples_b = ["print(3 if x == 1 else 0)", "print(3 * x)", "raise SystemExit(1)", "while True: pass"]
    responses = [program(b) for b in samples_a + samples_b]
    results = task.score([prompts[0]] * 4 + [prompts[1]] * 4, responses)
    assert [r["passed"] for r in results] == [True, False, False, True, False, True, False, False]
    assert [r["passed_public"] for r in results] == [True, True, False, True, True, True, False, False]
    assert [r["reward"] for r in results] == [10.0, 0.0, 0.0, 10.0, 0.0, 10.0, 0.0, 0.0]
    assert results[7]["status"] == "timeout" and results[6]["status"] == "error"
    metrics = task.aggregate(results)
    assert metrics["score"] == metrics["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert metrics["pass@2"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2)
    assert metrics["pass@4"] == 1.0
    public = [[r["passed_public"] for r in results[i : i + 4]] for i in (0, 4)]
    hidden = [[r["passed"] for r in results[i : i + 4]] for i in (0, 4)]
    assert metrics["1@2"] == pytest.approx(
        (n_at_k(public[0], hidden[0], 1, 2) + n_at_k(public[1], hidden[1], 1, 2)) / 2
    )
    assert metrics["2@4"] == pytest.approx(
        (n_at_k(public[0], hidden[0], 2, 4) + n_at_k(public[1], hidden[1], 2, 4)) / 2
    )
    assert metrics["status/timeout"] == pytest.approx(1 / 8) and metrics["reward/mean"] == pytest.approx(30 / 8)
    assert metrics["num_problems"] == 2 and metrics["num_samples"] == 8


def test_task_reward_equals_the_code_execution_reward(sandbox):
    prompts = [toy_prompt("toy/a", 2)] * 3
    responses = [program("print(2 * x)"), program("print(x)"), "print('no input read')"]
    task = CodeTask("toy", lambda: prompts, sandbox)
    assert (
        TaskReward(task)(prompts, responses).tolist()
        == CodeExecutionReward(sandbox)(prompts, responses).tolist()
        == [10.0, 0.0, 0.0]
    )


def test_pass_at_k_is_left_out_when_a_problem_has_too_few_samples(sandbox):
    task = CodeTask("toy", lambda: [], sandbox, ks=(1, 5))
    results = [{"task_id": "a", "passed": True, "passed_public": None, "status": "passed", "reward": 10.0}] * 3
    metrics = task.aggregate(results)
    assert metrics["pass@1"] == 1.0 and "pass@5" not in metrics
    with pytest.raises(ValueError, match="no results"):
        task.aggregate([])


def test_apps_and_code_contests_tasks_pass_their_canonical_solutions(sandbox, tmp_path):
    apps_path, contests_path = tmp_path / "apps.jsonl", tmp_path / "contests.jsonl"
    apps_path.write_text("".join(json.dumps(r) + "\n" for r in (APPS_STDIO, APPS_CALL)))
    contests_path.write_text(json.dumps(CONTEST) + "\n")
    for task in (
        apps_task(apps_path, sandbox, num_public=1, n_at_ks=((1, 1),)),
        code_contests_task(contests_path, sandbox, n_at_ks=((1, 1),)),
    ):
        prompts = task.prompts()
        results = task.score(prompts, [f"```python\n{p.metadata['canonical_solution']}\n```" for p in prompts])
        assert all(r["passed"] and r["passed_public"] for r in results), results
        metrics = task.aggregate(results)
        assert metrics["score"] == 1.0 and metrics["1@1"] == 1.0
    assert set(CODE_TASKS) == {"humaneval", "mbpp", "apps", "code_contests", "humaneval_plus", "mbpp_plus"}


def canonical_failures(task: CodeTask) -> tuple[int, list[tuple[str, str, str]]]:
    prompts = task.prompts()
    results = task.score(prompts, [p.metadata["canonical_solution"] for p in prompts])
    return len(prompts), [(r["task_id"], r["status"], r["detail"]) for r in results if not r["passed"]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "make, count",
    [
        (lambda box: humaneval_task(box), 164),
        (lambda box: mbpp_task(box, split="all"), 974),
        (lambda box: mbpp_task(box, split="all", sanitized=True), 427),
    ],
    ids=["humaneval", "mbpp", "mbpp_sanitized"],
)
def test_canonical_solutions_pass_their_own_tests(make, count):
    if not (default_data_dir() / "humaneval").exists():
        pytest.skip("shared data folder not found; set PREFALIGN_DATA_DIR")
    # generous wall clock: mbpp/123 needs 2.6 s of CPU, which took 9 s on the loaded 2-core test machine
    box = Sandbox(SandboxConfig(timeout=60.0, cpu_time=20.0))
    total, failures = canonical_failures(make(box))
    assert total == count
    assert failures == []  # every canonical solution passes (measured: 164/164, 974/974, 427/427)
