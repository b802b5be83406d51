"""Code data loaders: the real HumanEval and MBPP files, and hand-written APPS and CodeContests rows
in their exact upstream formats (the data is not reachable here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.data.io import DropReport
from prefalign.data.schema import DataError
from prefalign.data.sources.code import (
    load_apps,
    load_code_contests,
    load_humaneval,
    load_mbpp,
    parse_apps_row,
    parse_code_contests_row,
    parse_mbpp_row,
)
from prefalign.paths import default_data_dir
from prefalign.rewards.code import CallTests, StdioTests, prompt_suite, suite_from_dict

APPS_STDIO = {
    "problem_id": 4000,
    "question": "Given n, print twice n.\n\n-----Input-----\nOne integer n.\n\n-----Output-----\nPrint 2n.",
    "solutions": json.dumps(["n = int(input())\nprint(n * 2)\n", "print(2 * int(input()))"]),
    "input_output": json.dumps({"inputs": ["3\n", "5\n", ["7"]], "outputs": ["6\n", "10\n", ["14"]]}),
    "difficulty": "introductory",
    "url": "https://codeforces.com/problemset/problem/1/A",
    "starter_code": "",
}
APPS_CALL = {
    "problem_id": 17,
    "question": "Return the sum of a and b.",
    "solutions": json.dumps(["class Solution:\n    def add(self, a, b):\n        return a + b\n"]),
    "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [[3], [7]]}),
    "difficulty": "interview",
    "url": "https://leetcode.com/problems/add/",
    "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        ",
}
CONTEST = {
    "name": "1548_A. Twice",
    "description": "Read n and print 2n.\n\nExample\n\nInput\n\n3\n\nOutput\n\n6",
    "public_tests": {"input": ["3\n"], "output": ["6\n"]},
    "private_tests": {"input": ["5\n", "0\n"], "output": ["10\n", "0\n"]},
    "generated_tests": {"input": ["7\n"], "output": ["14\n"]},
    "source": 2,
    "difficulty": 7,
    "solutions": {"language": [2, 1, 3], "solution": ["int main(){}", "print 2*input()", "print(2 * int(input()))"]},
    "incorrect_solutions": {"language": [3], "solution": ["print(0)"]},
    "cf_contest_id": 1548,
    "cf_index": "A",
    "cf_points": 500.0,
    "cf_rating": 800,
    "cf_tags": ["math"],
    "is_description_translated": False,
    "untranslated_description": "",
    "time_limit": {"seconds": 2, "nanos": 500000000},
    "memory_limit_bytes": 256000000,
    "input_file": "",
    "output_file": "",
}


def real(*parts: str) -> Path:
    path = default_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found; set PREFALIGN_DATA_DIR")
    return path


def test_humaneval_real_file():
    real("humaneval", "HumanEval.jsonl.gz")
    prompts = load_humaneval()
    assert len(prompts) == 164
    first = prompts[0]
    meta = first.metadata
    assert (meta["task"], meta["task_id"], meta["id"], meta["entry_point"]) == (
        "humaneval",
        "HumanEval/0",
        "HumanEval/0",
        "has_close_elements",
    )
    assert meta["prompt_code"] in first.messages[-1].content and "```python" in first.messages[-1].content
    assert meta["canonical_solution"].startswith(meta["prompt_code"])
    assert meta["tests"] == meta["hidden_tests"] and "public_tests" not in meta
    suite = prompt_suite(first)
    assert suite.tests[0].rstrip().endswith("check(has_close_elements)")


@pytest.mark.parametrize(
    "sanitized, split, count", [(False, "all", 974), (False, "test", 500), (True, "all", 427), (True, "test", 257)]
)
def test_mbpp_real_files(sanitized, split, count):
    real("mbpp", "sanitized-mbpp.json" if sanitized else "mbpp.jsonl")
    prompts = load_mbpp(split, sanitized=sanitized)
    assert len(prompts) == count
    meta = prompts[0].metadata
    assert meta["public_tests"] == meta["hidden_tests"] == meta["tests"]
    assert all(t in prompts[0].messages[-1].content for t in meta["hidden_tests"]["tests"])
    assert prompts[0].messages[-1].content.startswith("You are an expert Python programmer, and here is your task:")


def test_mbpp_setup_code_and_function_name():
    row = {
        "task_id": 367,
        "text": "Check whether a tree is balanced.",
        "code": "class Node: pass",
        "test_list": ["assert is_tree_balanced(root) == False"],
        "test_setup_code": "root = Node(1)",
        "challenge_test_list": [],
    }
    prompt = parse_mbpp_row(row)
    assert prompt.metadata["hidden_tests"]["setup"] == "root = Node(1)"
    assert prompt.metadata["function_name"] == "is_tree_balanced" and prompt.metadata["task_id"] == "mbpp/367"
    sanitized = {
        "task_id": 3,
        "prompt": "Identify non-primes.",
        "code": "import math",
        "test_imports": ["import math"],
        "test_list": ["assert math.isclose(f(1), 1)"],
        "source_file": "x",
    }
    assert parse_mbpp_row(sanitized, sanitized=True).metadata["hidden_tests"]["setup"] == "import math"
    with pytest.raises(DataError, match="test_list"):
        parse_mbpp_row({**row, "test_list": []})


def test_apps_stdio_row():
    prompt = parse_apps_row(APPS_STDIO, num_public=1)
    meta = prompt.metadata
    hidden, public = suite_from_dict(meta["hidden_tests"]), suite_from_dict(meta["public_tests"])
    assert isinstance(hidden, StdioTests) and hidden.inputs == ("3\n", "5\n", "7") and hidden.outputs[2] == "14"
    assert public.inputs == ("3\n",)
    assert meta["canonical_solution"] == "n = int(input())\nprint(n * 2)\n" and meta["fn_name"] is None
    assert meta["task_id"] == "apps/4000" and meta["difficulty"] == "introductory"
    assert "Standard Input format" in prompt.messages[-1].content
    assert "public_tests" not in parse_apps_row(APPS_STDIO).metadata


def test_apps_call_based_row():
    prompt = parse_apps_row(APPS_CALL)
    suite = suite_from_dict(prompt.metadata["hidden_tests"])
    assert suite == CallTests("add", ([1, 2], [3, 4]), ([3], [7]))
    text = prompt.messages[-1].content
    assert "Call-Based format" in text and APPS_CALL["starter_code"] in text


@pytest.mark.parametrize(
    "change, field",
    [
        ({"input_output": ""}, "input_output"),
        ({"input_output": "{not json"}, "input_output"),
        ({"input_output": json.dumps({"inputs": ["1"], "outputs": []})}, "input_output"),
        ({"question": ""}, "question"),
        ({"difficulty": "easy"}, "difficulty"),
        ({"problem_id": None}, "problem_id"),
    ],
)
def test_apps_malformed_rows_name_their_field(change, field):
    with pytest.raises(DataError) as info:
        parse_apps_row({**APPS_STDIO, **change})
    assert info.value.field == field


def test_apps_loader_filters_difficulty_and_reports_drops(write_jsonl):
    path = write_jsonl([APPS_STDIO, APPS_CALL, {**APPS_STDIO, "problem_id": 9, "input_output": ""}])
    report = DropReport()
    assert [p.metadata["task_id"] for p in load_apps(path, report=report)] == ["apps/4000", "apps/17"]
    assert report.total_dropped == 1 and "line 3" in report.examples[0] and "input_output" in report.examples[0]
    assert [p.metadata["id"] for p in load_apps(path, difficulty="interview", report=DropReport())] == ["apps/17"]
    with pytest.raises(DataError, match="line 3"):
        load_apps(path, strict=True)


def test_code_contests_row_keeps_public_and_hidden_apart():
    prompt = parse_code_contests_row(CONTEST)
    meta = prompt.metadata
    assert suite_from_dict(meta["public_tests"]).inputs == ("3\n",)
    assert suite_from_dict(meta["hidden_tests"]).inputs == ("5\n", "0\n", "7\n")
    assert suite_from_dict(
        parse_code_contests_row(CONTEST, include_generated=False).metadata["hidden_tests"]
    ).inputs == ("5\n", "0\n")
    assert meta["canonical_solution"] == "print(2 * int(input()))"
    assert meta["time_limit_seconds"] == pytest.approx(2.5) and meta["task_id"] == "code_contests/1548_A. Twice"
    with pytest.raises(DataError, match="no hidden tests"):
        parse_code_contests_row({**CONTEST, "private_tests": {"input": [], "output": []}, "generated_tests": None})
    with pytest.raises(DataError) as info:
        parse_code_contests_row({**CONTEST, "public_tests": {"input": ["1"], "output": []}})
    assert info.value.field == "public_tests"


def test_code_contests_loader_reads_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist([CONTEST, {**CONTEST, "name": "2_B. Other"}]), path)
    prompts = load_code_contests(path)
    assert [p.metadata["id"] for p in prompts] == ["code_contests/1548_A. Twice", "code_contests/2_B. Other"]
    assert suite_from_dict(prompts[0].metadata["hidden_tests"]).outputs == ("10\n", "0\n", "14\n")


def test_missing_default_files_name_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="PREFALIGN_DATA_DIR"):
        load_apps()
