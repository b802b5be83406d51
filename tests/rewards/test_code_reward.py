"""Code extraction, program assembly, the test formats and the 10/0 test-case reward."""

from __future__ import annotations

import pytest
import torch

from prefalign.data.schema import Prompt, user_prompt
from prefalign.rewards.base import RewardFunction
from prefalign.rewards.code import (
    AssertTests,
    CallTests,
    CodeExecutionReward,
    StdioTests,
    assemble_program,
    extract_code,
    humaneval_tests,
    mbpp_tests,
    outputs_match,
    prompt_suite,
    suite_from_dict,
)
from prefalign.rewards.sandbox import Sandbox, SandboxConfig


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxConfig(timeout=2.0, max_workers=2))


def test_extract_code_prefers_python_fences_then_plain_fences_then_raw():
    assert extract_code("Here:\n```python\nx = 1\n```\nand\n```python\ny = 2\n```") == "x = 1\n"
    assert extract_code("```text\nnot code\n```\n```py\nz = 3\n```") == "z = 3\n"
    assert extract_code("```\nw = 4\n```") == "w = 4\n"
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_code("Sure!\n```python\ndef f():\n    return 1") == "def f():\n    return 1"  # truncated


HUMANEVAL_LIKE = Prompt(
    user_prompt("complete it"),
    {
        "prompt_code": 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum."""\n',
        "entry_point": "total",
    },
)


def test_assemble_program_handles_completions_and_whole_functions():
    body = "    return sum(xs)\n"
    assert assemble_program(HUMANEVAL_LIKE, body) == HUMANEVAL_LIKE.metadata["prompt_code"] + body
    whole = "```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    assert assemble_program(HUMANEVAL_LIKE, whole).startswith("from typing import List\ndef total(")
    plain = Prompt(user_prompt("task"), {})
    assert assemble_program(plain, "```python\nprint(1)\n```") == "print(1)\n"


@pytest.mark.parametrize(
    "actual, expected, tolerance, same",
    [
        ("1 2\n3\n", "1 2 3", None, True),
        ("  1   2  \n\n", "1 2\n", None, True),
        ("1 2", "1 2 3", None, False),
        ("0.3333333", "0.333333333", 1e-6, True),
        ("0.3333333", "0.333333333", None, False),
        ("abc", "abd", 1e-6, False),
        ("nan", "1.0", 1e-6, False),
    ],
)
def test_outputs_match_is_whitespace_normalised(actual, expected, tolerance, same):
    assert outputs_match(actual, expected, tolerance) is same


def test_suites_round_trip_through_dicts():
    suites = [
        mbpp_tests(["assert f(1) == 1"], "import math"),
        humaneval_tests("def check(c): pass", "f"),
        CallTests("f", ([1, 2],), ([3],)),
        StdioTests(("1\n",), ("1",), 1e-6),
    ]
    for suite in suites:
        assert suite_from_dict(suite.to_dict()) == suite
    with pytest.raises(ValueError, match="unknown test suite kind"):
        suite_from_dict({"kind": "doctest"})


def test_mbpp_setup_runs_after_the_program(sandbox):
    program = "class Node:\n    def __init__(self, v):\n        self.v = v\ndef val(n):\n    return n.v\n"
    result = sandbox.run_tests(program, mbpp_tests(["assert val(root) == 1"], "root = Node(1)"))
    assert result.status == "passed"


def test_humaneval_check_runs_on_the_entry_point(sandbox):
    test = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
    assert sandbox.run_tests("def square(x):\n    return x * x\n", humaneval_tests(test, "square")).passed
    assert sandbox.run_tests("def square(x):\n    return x + x\n", humaneval_tests(test, "square")).status == "failed"


def test_call_tests_accept_apps_conventions_and_reject_always_equal_objects(sandbox):
    suite = CallTests("pair", ([1, 2], [3, 4]), ([[1, 2]], [3, 4]))
    assert sandbox.run_tests("def pair(a, b):\n    return (a, b)\n", suite).passed
    method = CallTests("add", ([1, 2],), ([3],))
    assert sandbox.run_tests("class Solution:\n    def add(self, a, b):\n        return a + b\n", method).passed
    cheat = "class Any:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Any()\n"
    assert not sandbox.run_tests(cheat, method).passed
    wrong = sandbox.run_tests("def add(a, b):\n    return a - b\n", method)
    assert wrong.status == "failed" and "case 1" in wrong.detail


def test_stdio_tests_run_each_input_and_stop_at_first_failure(sandbox):
    program = "a, b = map(int, input().split())\nprint(a + b if a < 5 else a * b)\n"
    suite = StdioTests(("1 2\n", "6 7\n", "2 2\n"), ("3", "13", "4"))
    result = sandbox.run_tests(program, suite)
    assert (result.status, result.tests_passed, result.tests_total) == ("failed", 1, 3)
    assert result.detail.startswith("input 2") and result.stdout_tail.strip() == "42"
    crash = sandbox.run_tests("raise ValueError('bad input')\n", suite)
    assert crash.status == "error" and "ValueError" in crash.stderr_tail


def test_a_suite_without_tests_is_refused(sandbox):
    for empty in (AssertTests((), "x = 1"), StdioTests((), ()), CallTests("f", (), ())):
        with pytest.raises(ValueError, match="holds no test"):
            sandbox.run_tests("x = 1", empty)


def test_stdio_program_may_exit_normally(sandbox):
    program = "import sys\nprint(int(input()) * 2)\nsys.exit(0)\n"
    assert sandbox.run_tests(program, StdioTests(("21\n",), ("42",))).passed


def _prompt(hidden, public=None):
    metadata = {"task": "toy", "task_id": "toy/0", "hidden_tests": hidden.to_dict()}
    if public is not None:
        metadata["public_tests"] = public.to_dict()
    return Prompt(user_prompt("write double"), metadata)


def test_prompt_suite_keeps_public_and_hidden_apart():
    prompt = _prompt(StdioTests(("1\n", "2\n"), ("2", "4")), StdioTests(("1\n",), ("2",)))
    assert prompt_suite(prompt, "public").inputs == ("1\n",)
    assert prompt_suite(prompt, "hidden").inputs == ("1\n", "2\n")
    with pytest.raises(ValueError, match="no public tests"):
        prompt_suite(_prompt(StdioTests(("1\n",), ("2",))), "public")


def test_reward_is_ten_for_a_pass_and_zero_otherwise(sandbox):
    prompt = _prompt(StdioTests(("1\n", "5\n"), ("2", "10")), StdioTests(("1\n",), ("2",)))
    good = "```python\nprint(int(input()) * 2)\n```"
    public_only = "```python\nx = int(input())\nprint(2 if x == 1 else 0)\n```"
    reward = CodeExecutionReward(sandbox)
    assert isinstance(reward, RewardFunction)
    scores = reward([prompt] * 3, [good, public_only, "no code at all"])
    assert scores.dtype == torch.float32 and scores.tolist() == [10.0, 0.0, 0.0]
    public = CodeExecutionReward(sandbox, pass_reward=1.0, fail_reward=-1.0, which="public")
    assert public([prompt] * 2, [public_only, "print(3)"]).tolist() == [1.0, -1.0]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        reward([prompt] * 2, [good])
