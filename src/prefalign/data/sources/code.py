"""Python code-generation problems with executable tests: HumanEval, MBPP, APPS, CodeContests.

Each row becomes a :class:`~prefalign.data.schema.Prompt` (one user message) whose metadata holds
what :mod:`prefalign.rewards.code` needs to run a response: ``hidden_tests`` (the official tests
that score it; ``tests`` is the same suite), ``public_tests`` (tests the model is shown or that the
statement gives, used to filter samples for n@k; absent where a data set has none), each a plain
dict ``{"kind": "assert" | "call" | "stdio", ...}``, plus ``task``, ``task_id``, ``id`` and
``canonical_solution`` (a whole program, or None) and, for HumanEval, ``entry_point`` and
``prompt_code``.

Upstream formats:

- HumanEval (Chen et al., 2021; ``humaneval/HumanEval.jsonl.gz``, 164 rows):
  ``{"task_id", "prompt", "entry_point", "canonical_solution", "test"}``; the test defines
  ``check(candidate)`` and is run as ``check(entry_point)``. It has no public tests (the docstring
  examples are not extracted).
- MBPP (Austin et al., 2021; ``mbpp/mbpp.jsonl``, 974 rows): ``{"task_id", "text", "code",
  "test_list", "test_setup_code", "challenge_test_list"}``; sanitized (``mbpp/sanitized-mbpp.json``,
  427 rows): ``"prompt"`` instead of ``"text"`` and ``"test_imports"`` instead of
  ``"test_setup_code"``. The prompt is Austin et al.'s: the task and its three tests, so the public
  tests are the hidden ones. Splits by task id: prompt 1-10, test 11-510, validation 511-600,
  train 601-974.
- APPS (Hendrycks et al., 2021; Hugging Face ``codeparrot/apps`` rows): ``{"problem_id",
  "question", "solutions": JSON string list, "input_output": JSON string {"inputs", "outputs",
  "fn_name"?}, "difficulty", "url", "starter_code"}``. With ``fn_name`` the tests call that function
  (call-based), else they feed stdin. APPS has no public/hidden split: ``num_public`` leading cases
  may be marked public (they stay in the hidden suite too).
- CodeContests (Li et al., 2022; Hugging Face ``deepmind/code_contests`` rows): ``{"name",
  "description", "public_tests": {"input": [...], "output": [...]}, "private_tests",
  "generated_tests", "solutions": {"language": [...], "solution": [...]}, "time_limit":
  {"seconds", "nanos"}, ...}``; language 3 is Python 3. Hidden tests are the private and (by
  default) generated ones, as in AlphaCode; public tests are the statement's examples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefalign.data.io import DropReport, iter_rows, read_records
from prefalign.data.schema import DataError, Prompt, user_prompt
from prefalign.paths import data_path

MBPP_SPLITS = {"all": (1, 974), "prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
APPS_DIFFICULTIES = ("introductory", "interview", "competition")
CODE_CONTESTS_PYTHON3 = 3
ANSWER_FORMAT = "Answer with the complete program in a ```python code block."


def _text(row: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = row.get(name)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise DataError("missing or empty string", field=name)
    return value


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError("expected a list of strings", field=name)
    return value


def assert_suite(tests: list[str], setup: str = "") -> dict[str, Any]:
    return {"kind": "assert", "tests": list(tests), "setup": setup}


def stdio_suite(inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {"kind": "stdio", "inputs": list(inputs), "outputs": list(outputs), "float_tolerance": None}


def _with_tests(metadata: dict[str, Any], hidden: dict[str, Any], public: dict[str, Any] | None) -> dict[str, Any]:
    metadata.update(hidden_tests=hidden, tests=hidden)
    if public is not None:
        metadata["public_tests"] = public
    return metadata


def _load(
    path: Path,
    parse: Callable[[dict[str, Any]], Prompt | None],
    strict: bool,
    report: DropReport | None,
    limit: int | None,
) -> list[Prompt]:
    rows = iter_rows(path, strict=strict, report=report)
    prompts = read_records(rows, parse, source=str(path), strict=strict, report=report)
    for prompt in prompts:
        prompt.metadata["id"] = prompt.metadata["task_id"]
    return prompts[:limit] if limit is not None else prompts


# -- HumanEval -------------------------------------------------------------------------------


def parse_humaneval_row(row: dict[str, Any]) -> Prompt:
    """One HumanEval row -> Prompt (the program to run is ``prompt_code`` + completion)."""
    task_id, prompt_code = _text(row, "task_id"), _text(row, "prompt")
    entry_point, test = _text(row, "entry_point"), _text(row, "test")
    solution = _text(row, "canonical_solution")
    if not re.search(rf"def\s+{re.escape(entry_point)}\s*\(", prompt_code):
        raise DataError(f"prompt does not define the entry point {entry_point!r}", field="entry_point")
    text = f"Complete the following Python function. {ANSWER_FORMAT}\n\n```python\n{prompt_code}```"
    metadata = {
        "task": "humaneval",
        "task_id": task_id,
        "entry_point": entry_point,
        "prompt_code": prompt_code,
        "canonical_solution": prompt_code + solution,
    }
    hidden = assert_suite([f"{test}\ncheck({entry_point})\n"])
    return Prompt(user_prompt(text), _with_tests(metadata, hidden, None))


def load_humaneval(
    *, path: str | Path | None = None, strict: bool = False, report: DropReport | None = None, limit: int | None = None
) -> list[Prompt]:
    """The 164 HumanEval problems in file order."""
    path = Path(path) if path is not None else data_path("humaneval", "HumanEval.jsonl.gz")
    return _load(path, parse_humaneval_row, strict, report, limit)


# -- MBPP ------------------------------------------------------------------------------------


def mbpp_prompt_text(description: str, tests: list[str]) -> str:
    """Austin et al.'s MBPP prompt: the task, then the tests the code must pass."""
    head = f"You are an expert Python programmer, and here is your task: {description}"
    return f"{head} Your code should pass these tests:\n\n" + "\n".join(tests)


def parse_mbpp_row(row: dict[str, Any], *, sanitized: bool = False) -> Prompt:
    """One MBPP row (full or sanitized format) -> Prompt."""
    task_id = row.get("task_id")
    if not isinstance(task_id, int):
        raise DataError("missing integer", field="task_id")
    description = _text(row, "prompt" if sanitized else "text")
    code = _text(row, "code")
    tests = _string_list(row.get("test_list"), "test_list")
    if not tests:
        raise DataError("no tests", field="test_list")
    if sanitized:
        setup = "\n".join(_string_list(row.get("test_imports", []), "test_imports"))
    else:
        setup = _text(row, "test_setup_code", allow_empty=True)
    suite = assert_suite(tests, setup)
    metadata = {
        "task": "mbpp",
        "task_id": f"mbpp/{task_id}",
        "canonical_solution": code,
        "challenge_tests": list(row.get("challenge_test_list") or []),
        "sanitized": sanitized,
    }
    match = re.match(r"\s*assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", tests[0])
    if match:
        metadata["function_name"] = match.group(1)
    return Prompt(user_prompt(mbpp_prompt_text(description.strip(), tests)), _with_tests(metadata, suite, suite))


def load_mbpp(
    split: str = "test",
    *,
    sanitized: bool = False,
    path: str | Path | None = None,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
) -> list[Prompt]:
    """MBPP problems of one split (by task id; ``"all"`` for every row), full or sanitized."""
    if split not in MBPP_SPLITS:
        raise ValueError(f"unknown MBPP split {split!r}; choose one of {sorted(MBPP_SPLITS)}")
    low, high = MBPP_SPLITS[split]
    name = "sanitized-mbpp.json" if sanitized else "mbpp.jsonl"
    path = Path(path) if path is not None else data_path("mbpp", name)

    def parse(row: dict[str, Any]) -> Prompt | None:
        prompt = parse_mbpp_row(row, sanitized=sanitized)
        return prompt if low <= row["task_id"] <= high else None

    return _load(path, parse, strict, report, limit)


# -- APPS ------------------------------------------------------------------------------------


def _json_field(row: dict[str, Any], name: str) -> Any:
    raw = row.get(name)
    if not isinstance(raw, str) or not raw.strip():
        raise DataError("missing or empty JSON string", field=name)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"undecodable JSON ({exc.msg})", field=name) from None


def _as_text(value: Any, name: str) -> str:
    """APPS stores some stdio inputs/outputs as lists of lines."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if not isinstance(value, str):
        raise DataError(f"expected a string or a list of lines, got {type(value).__name__}", field=name)
    return value


def _apps_suites(cases: Any, num_public: int) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    if not isinstance(cases, dict) or not all(isinstance(cases.get(k), list) for k in ("inputs", "outputs")):
        raise DataError('expected {"inputs": [...], "outputs": [...]}', field="input_output")
    inputs, outputs, fn_name = cases["inputs"], cases["outputs"], cases.get("fn_name")
    if not inputs or len(inputs) != len(outputs):
        raise DataError(f"{len(inputs)} inputs and {len(outputs)} outputs", field="input_output")
    if fn_name is not None:
        sizes = (len(inputs), num_public)
        suites = [{"kind": "call", "fn_name": fn_name, "inputs": inputs[:n], "outputs": outputs[:n]} for n in sizes]
    else:
        ins = [_as_text(v, "input_output.inputs") for v in inputs]
        outs = [_as_text(v, "input_output.outputs") for v in outputs]
        suites = [stdio_suite(ins[:n], outs[:n]) for n in (len(ins), num_public)]
    return suites[0], (suites[1] if num_public > 0 else None), fn_name


def apps_prompt_text(question: str, starter_code: str, call_based: bool) -> str:
    """The APPS statement, its starter code, and which of APPS's two answer formats to use."""
    parts = [question.strip()]
    if starter_code.strip():
        parts.append(f"```python\n{starter_code}\n```")
    if call_based:
        parts.append("Use Call-Based format: complete the starter code; it is called with each test's arguments.")
    else:
        parts.append("Use Standard Input format: read standard input and print the answer to standard output.")
    return "\n\n".join(parts) + f" {ANSWER_FORMAT}"


def parse_apps_row(row: dict[str, Any], *, num_public: int = 0) -> Prompt:
    """One APPS row -> Prompt; a row without test cases raises DataError (``input_output``)."""
    question = _text(row, "question")
    starter_code = _text(row, "starter_code", allow_empty=True) if row.get("starter_code") is not None else ""
    hidden, public, fn_name = _apps_suites(_json_field(row, "input_output"), num_public)
    solutions = _json_field(row, "solutions") if str(row.get("solutions") or "").strip() else []
    if not isinstance(solutions, list):
        raise DataError("expected a JSON list of programs", field="solutions")
    difficulty = row.get("difficulty")
    if difficulty is not None and difficulty not in APPS_DIFFICULTIES:
        raise DataError(f"unknown difficulty {difficulty!r}; expected one of {APPS_DIFFICULTIES}", field="difficulty")
    if not isinstance(row.get("problem_id"), (int, str)) or isinstance(row.get("problem_id"), bool):
        raise DataError("missing problem id (an integer or string)", field="problem_id")
    metadata = {
        "task": "apps",
        "task_id": f"apps/{row['problem_id']}",
        "difficulty": difficulty,
        "url": row.get("url"),
        "fn_name": fn_name,
        "canonical_solution": solutions[0] if solutions else None,
    }
    text = apps_prompt_text(question, starter_code, fn_name is not None)
    return Prompt(user_prompt(text), _with_tests(metadata, hidden, public))


def load_apps(
    path: str | Path | None = None,
    *,
    difficulty: str | None = None,
    num_public: int = 0,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
) -> list[Prompt]:
    """APPS problems (``path``: the rows as .jsonl or .parquet; default ``apps/test.jsonl``)."""
    path = Path(path) if path is not None else data_path("apps", "test.jsonl")

    def parse(row: dict[str, Any]) -> Prompt | None:
        prompt = parse_apps_row(row, num_public=num_public)
        return prompt if difficulty is None or prompt.metadata["difficulty"] == difficulty else None

    return _load(path, parse, strict, report, limit)


# -- CodeContests ----------------------------------------------------------------------------


def _contest_tests(row: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    tests = row.get(name)
    if tests is None:
        return [], []
    if not isinstance(tests, dict):
        raise DataError('expected {"input": [...], "output": [...]}', field=name)
    inputs = _string_list(tests.get("input"), f"{name}.input")
    outputs = _string_list(tests.get("output"), f"{name}.output")
    if len(inputs) != len(outputs):
        raise DataError(f"{len(inputs)} inputs and {len(outputs)} outputs", field=name)
    return inputs, outputs


def _python3_solution(row: dict[str, Any]) -> str | None:
    solutions = row.get("solutions") or {}
    languages, programs = solutions.get("language") or [], solutions.get("solution") or []
    python3 = (program for language, program in zip(languages, programs) if language == CODE_CONTESTS_PYTHON3)
    return next(python3, None)


def parse_code_contests_row(row: dict[str, Any], *, include_generated: bool = True) -> Prompt:
    """One CodeContests row -> Prompt with public and hidden (private + generated) stdio tests."""
    name, description = _text(row, "name"), _text(row, "description")
    public_in, public_out = _contest_tests(row, "public_tests")
    hidden_in, hidden_out = _contest_tests(row, "private_tests")
    if include_generated:
        generated_in, generated_out = _contest_tests(row, "generated_tests")
        hidden_in, hidden_out = hidden_in + generated_in, hidden_out + generated_out
    if not hidden_in:
        raise DataError("no hidden tests", field="private_tests")
    limit = row.get("time_limit") or {}
    seconds = (limit.get("seconds") or 0) + (limit.get("nanos") or 0) / 1e9 if isinstance(limit, dict) else None
    metadata = {
        "task": "code_contests",
        "task_id": f"code_contests/{name}",
        "difficulty": row.get("difficulty"),
        "time_limit_seconds": seconds or None,
        "canonical_solution": _python3_solution(row),
    }
    task = "Write a Python 3 program that reads from standard input and writes to standard output."
    text = f"{description.strip()}\n\n{task} {ANSWER_FORMAT}"
    public = stdio_suite(public_in, public_out) if public_in else None
    return Prompt(user_prompt(text), _with_tests(metadata, stdio_suite(hidden_in, hidden_out), public))


def load_code_contests(
    path: str | Path | None = None,
    *,
    include_generated: bool = True,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
) -> list[Prompt]:
    """CodeContests problems (``path``: rows as .jsonl or .parquet; default ``code_contests/test.jsonl``)."""
    path = Path(path) if path is not None else data_path("code_contests", "test.jsonl")

    def parse(row: dict[str, Any]) -> Prompt:
        return parse_code_contests_row(row, include_generated=include_generated)

    return _load(path, parse, strict, report, limit)
