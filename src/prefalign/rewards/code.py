"""Code-execution reward and the test formats of the code data sets.

Xu et al. (2024, section 6) train on APPS and CodeContests with a test-case reward: 10 when the
sampled program passes every test case of its problem, 0 otherwise (both values are arguments here).
:class:`CodeExecutionReward` implements the :class:`~prefalign.rewards.base.RewardFunction`
protocol with that rule. It shares its code path with the coding tasks of
:mod:`prefalign.evaluation.code_tasks` (:func:`test_items` builds the programs and suites,
:meth:`Sandbox.run_many` runs them, :meth:`CodeExecutionReward.reward_of` maps a result to a
reward), so the reward optimised and the pass rate reported cannot drift apart.

A prompt's tests live in ``Prompt.metadata`` as plain dicts (``to_dict`` of the suites below):
``hidden_tests`` (the official tests that score a program) and ``public_tests`` (the ones shown
to the model or given in the statement, used to filter samples for n@k); ``tests`` is the same
suite as ``hidden_tests``.

Departures: code is taken from the first fenced Python block of a response (else the first
untagged block, else the whole response); APPS's fallback comparisons (sets of lines, numpy
``allclose`` on every float) are replaced by one whitespace-normalised token comparison with an
optional float tolerance.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefalign.data.schema import Prompt
from prefalign.rewards.sandbox import ExecutionResult, Sandbox


@dataclass(frozen=True)
class AssertTests:
    """Statements run after the program in its namespace: MBPP ``test_list`` (``setup`` is its
    ``test_setup_code``, run after the program since it uses the program's classes), or HumanEval's
    ``test`` followed by ``check(entry_point)`` as a single test."""

    tests: tuple[str, ...]
    setup: str = ""

    def stages(self) -> list[tuple[str, str, bool]]:
        setup = [("<test setup>", self.setup, False)] if self.setup.strip() else []
        return setup + [(f"<test {i + 1}>", t, True) for i, t in enumerate(self.tests)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "assert", "tests": list(self.tests), "setup": self.setup}


_CALL_SETUP = """
import json as _prefalign_json
def _prefalign_call(name, args):
    solution = globals().get("Solution")
    if isinstance(solution, type) and hasattr(solution, name):
        return getattr(solution(), name)(*args)
    return globals()[name](*args)
def _prefalign_same(result, expected):
    result = _prefalign_json.loads(_prefalign_json.dumps(result))
    return result == expected or (isinstance(expected, list) and len(expected) > 0 and result == expected[0])
"""


@dataclass(frozen=True)
class CallTests:
    """APPS call-based tests: ``fn_name(*inputs[i])`` (or ``Solution().fn_name``) must return
    ``outputs[i]``, or ``outputs[i][0]`` when that is a one-element wrapper, as in APPS's
    ``testing_util``; tuples compare as lists (the result goes through JSON)."""

    fn_name: str
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]

    def stages(self) -> list[tuple[str, str, bool]]:
        cases = []
        for i, (args, expected) in enumerate(zip(self.inputs, self.outputs)):
            args = args if isinstance(args, list) else [args]
            call = f"_prefalign_call({self.fn_name!r}, _prefalign_json.loads({json.dumps(args)!r}))"
            want = f"_prefalign_json.loads({json.dumps(expected)!r})"
            source = f"assert _prefalign_same({call}, {want}), 'wrong answer on case {i + 1}'"
            cases.append((f"<case {i + 1}>", source, True))
        return [("<call setup>", _CALL_SETUP, False)] + cases

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "call", "fn_name": self.fn_name, "inputs": list(self.inputs), "outputs": list(self.outputs)}


@dataclass(frozen=True)
class StdioTests:
    """Standard input/output cases: run the program on ``inputs[i]``; its stdout must equal
    ``outputs[i]`` token by token (whitespace-normalised); with ``float_tolerance``, numeric tokens
    may also differ by that much (absolute, or relative to the expected value)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    float_tolerance: float | None = None

    def output_ok(self, index: int, stdout: str) -> bool:
        return outputs_match(stdout, self.outputs[index], self.float_tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "stdio",
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "float_tolerance": self.float_tolerance,
        }


TestSuite = AssertTests | CallTests | StdioTests


def suite_from_dict(spec: dict[str, Any]) -> TestSuite:
    """The inverse of ``to_dict`` (how loaders store suites in ``Prompt.metadata``)."""
    kind = spec.get("kind")
    if kind == "assert":
        return AssertTests(tuple(spec["tests"]), spec.get("setup", ""))
    if kind == "call":
        return CallTests(spec["fn_name"], tuple(spec["inputs"]), tuple(spec["outputs"]))
    if kind == "stdio":
        return StdioTests(tuple(spec["inputs"]), tuple(spec["outputs"]), spec.get("float_tolerance"))
    raise ValueError(f"unknown test suite kind {kind!r}; expected 'assert', 'call' or 'stdio'")


def _tokens_equal(got: str, want: str, tolerance: float | None) -> bool:
    if got == want:
        return True
    if tolerance is None:
        return False
    try:
        a, b = float(got), float(want)
    except ValueError:
        return False
    return math.isfinite(a) and abs(a - b) <= tolerance * max(1.0, abs(b))


def outputs_match(actual: str, expected: str, float_tolerance: float | None = None) -> bool:
    """Whitespace-normalised comparison: the same tokens in the same order (line breaks, trailing
    spaces and blank lines ignored), as APPS and CodeContests judges accept."""
    got, want = actual.split(), expected.split()
    return len(got) == len(want) and all(_tokens_equal(g, w, float_tolerance) for g, w in zip(got, want))


def humaneval_tests(test: str, entry_point: str) -> AssertTests:
    """HumanEval's ``test`` (defines ``check``) and the call ``check(entry_point)``, as one test."""
    return AssertTests((f"{test}\ncheck({entry_point})\n",))


def mbpp_tests(test_list: Sequence[str], setup: str = "") -> AssertTests:
    """MBPP's ``test_list`` (one assert per test) after its ``test_setup_code``."""
    return AssertTests(tuple(test_list), setup)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PYTHON_TAGS = ("python", "python3", "py", "py3")


def extract_code(response: str) -> str:
    """The program in a model response: the first fenced block tagged Python, else the first
    untagged fenced block, else the whole response (raw code). An unclosed fence (a truncated
    generation) runs to the end of the response."""
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(response)]
    for wanted in (_PYTHON_TAGS, ("",)):
        for tag, body in blocks:
            if tag in wanted:
                return body
    return response


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def assemble_program(prompt: Prompt, response: str) -> str:
    """The program to run for a response. HumanEval-style prompts (``prompt_code`` and
    ``entry_point`` in the metadata) accept either a whole function or a completion of the
    prompt's code: a response that does not define the entry point is appended to the prompt code
    (Chen et al.'s completion format); one that does gets the prompt's import lines prepended."""
    code = extract_code(response)
    prefix, entry_point = prompt.metadata.get("prompt_code"), prompt.metadata.get("entry_point")
    if not prefix or not entry_point:
        return code
    if not _defines(code, entry_point):
        return prefix + code
    imports = [line for line in prefix.splitlines() if re.match(r"(?:import|from)\s+\w", line)]
    return "\n".join(imports + [code]) if imports else code


def prompt_suite(prompt: Prompt, which: str = "hidden") -> AssertTests | CallTests | StdioTests:
    """The ``which`` ("hidden" or "public") test suite of a prompt, from its metadata."""
    if which not in ("hidden", "public"):
        raise ValueError(f"which must be 'hidden' or 'public', got {which!r}")
    spec = prompt.metadata.get(f"{which}_tests")
    if not spec:
        where = prompt.metadata.get("task_id", "?")
        raise ValueError(f"prompt {where!r} of task {prompt.metadata.get('task', '?')!r} has no {which} tests")
    return suite_from_dict(spec)


def test_items(prompts: Sequence[Prompt], responses: Sequence[str], which: str = "hidden") -> list[tuple[str, Any]]:
    """``(program, suite)`` for each response: what :meth:`Sandbox.run_many` takes."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return [(assemble_program(p, r), prompt_suite(p, which)) for p, r in zip(prompts, responses)]


def run_prompt_tests(
    sandbox: Sandbox, prompts: Sequence[Prompt], responses: Sequence[str], which: str = "hidden"
) -> list[ExecutionResult]:
    """Run each response's program against its prompt's ``which`` tests, in parallel."""
    return sandbox.run_many(test_items(prompts, responses, which))


class CodeExecutionReward:
    """Test-case reward (Xu et al. 2024, section 6): ``pass_reward`` if the program passes every
    test of ``which`` suite, else ``fail_reward``. Implements ``RewardFunction``."""

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        pass_reward: float = 10.0,
        fail_reward: float = 0.0,
        which: str = "hidden",
        name: str = "code_execution",
    ):
        self.sandbox = sandbox or Sandbox()
        self.pass_reward, self.fail_reward = float(pass_reward), float(fail_reward)
        self.which, self.name = which, name

    def reward_of(self, result: ExecutionResult) -> float:
        return self.pass_reward if result.passed else self.fail_reward

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        results = run_prompt_tests(self.sandbox, prompts, responses, self.which)
        return torch.tensor([self.reward_of(r) for r in results], dtype=torch.float32)
