"""HumanEval+ and MBPP+ (Liu et al., 2023, EvalPlus): the original problems with many more test inputs.

Upstream format (the release files of github evalplus/humanevalplus_release and mbppplus_release,
e.g. ``HumanEvalPlus-v0.1.10.jsonl.gz``, ``MbppPlus-v0.2.0.jsonl.gz``), one JSON object a line::

    {"task_id": "HumanEval/0" | "Mbpp/2", "prompt", "entry_point", "canonical_solution",
     "base_input": [[arg, ...], ...], "plus_input": [[arg, ...], ...], "atol": float, ...}

Expected under the data folder: ``evalplus/HumanEvalPlus*.jsonl[.gz]`` and ``evalplus/MbppPlus*.jsonl[.gz]``
(the newest name in sort order when several match).

The hidden test suite follows EvalPlus's definition of a pass: for every base and plus input the
candidate's output equals the canonical solution's output on that input (floats within ``atol``,
``1e-6`` when the expected value is a float and ``atol`` is 0, plus a relative ``1e-7``). The
reference solution runs in the same sandboxed process, in its own namespace, on a deep copy of each
input. Departure: one time limit for the whole suite (the sandbox's), not EvalPlus's per-input limits
derived from the reference's run time.

Prompts: HumanEval+ as HumanEval (complete the function); MBPP+ as MBPP (Austin et al.'s "here is
your task ... Your code should pass these tests", with the example assert of the EvalPlus prompt).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prefalign.data.io import iter_rows, read_records
from prefalign.data.schema import DataError, Prompt, user_prompt
from prefalign.data.sources.code import ANSWER_FORMAT, assert_suite, mbpp_prompt_text
from prefalign.paths import default_data_dir

_CHECK = """
import copy as _plus_copy, json as _plus_json, math as _plus_math
_plus_ns = {}
exec(%(reference)r, _plus_ns)
_plus_reference = _plus_ns[%(entry_point)r]
_plus_inputs = _plus_json.loads(%(inputs)r)
_plus_atol = %(atol)r

def _plus_close(out, exp, atol):
    if isinstance(exp, float) or isinstance(out, float):
        if isinstance(out, bool) or not isinstance(out, (int, float)):
            return False
        if _plus_math.isnan(exp) and _plus_math.isnan(out):
            return True
        return abs(out - exp) <= atol + 1e-7 * abs(exp)
    if isinstance(exp, (list, tuple)) and isinstance(out, (list, tuple)) and len(out) == len(exp):
        return all(_plus_close(o, e, atol) for o, e in zip(out, exp))
    return out == exp

def _plus_same(out, exp):
    if out == exp:
        return True
    floats = isinstance(exp, float) or (isinstance(exp, (list, tuple)) and any(isinstance(e, float) for e in exp))
    atol = _plus_atol or (1e-6 if floats else 0.0)
    return atol > 0 and _plus_close(out, exp, atol)
"""
_RUN = """
for _plus_index, _plus_args in enumerate(_plus_inputs):
    _plus_expected = _plus_reference(*_plus_copy.deepcopy(_plus_args))
    _plus_out = %(entry_point)s(*_plus_copy.deepcopy(_plus_args))
    assert _plus_same(_plus_out, _plus_expected), f"input {_plus_index}: got {_plus_out!r:.80}"
"""


def plus_suite(reference: str, entry_point: str, inputs: list[Any], atol: float) -> dict[str, Any]:
    """An assert suite checking ``entry_point`` against ``reference``'s outputs on every input."""
    setup = _CHECK % {"reference": reference, "entry_point": entry_point, "inputs": json.dumps(inputs), "atol": atol}
    return assert_suite([_RUN % {"entry_point": entry_point}], setup)


def _inputs(row: dict[str, Any]) -> list[Any]:
    out = []
    for name in ("base_input", "plus_input"):
        value = row.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
            raise DataError("expected a list of argument lists", field=name)
        out.extend(value)
    if not out:
        raise DataError("no test inputs", field="base_input")
    return out


def _field(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError("missing or empty string", field=name)
    return value


def parse_evalplus_row(row: dict[str, Any], benchmark: str) -> Prompt:
    """One HumanEval+ (``benchmark="humaneval_plus"``) or MBPP+ row -> Prompt."""
    task_id, prompt_code = _field(row, "task_id"), _field(row, "prompt")
    entry_point, solution = _field(row, "entry_point"), _field(row, "canonical_solution")
    atol = row.get("atol", 0) or 0
    if not isinstance(atol, (int, float)):
        raise DataError("expected a number", field="atol")
    inputs = _inputs(row)
    if benchmark == "humaneval_plus":
        reference = prompt_code + solution
        text = f"Complete the following Python function. {ANSWER_FORMAT}\n\n```python\n{prompt_code}```"
        metadata = {"entry_point": entry_point, "prompt_code": prompt_code}
    else:
        reference = solution
        body = prompt_code.strip().strip('"').strip()
        asserts = [line.strip() for line in body.splitlines() if line.strip().startswith("assert")]
        description = " ".join(
            line.strip() for line in body.splitlines() if line.strip() and line.strip() not in asserts
        )
        text = mbpp_prompt_text(description, asserts) if asserts else f"{description}\n{ANSWER_FORMAT}"
        metadata = {"function_name": entry_point}
    if not re.search(rf"def\s+{re.escape(entry_point)}\s*\(", reference):
        raise DataError(f"the canonical solution does not define {entry_point!r}", field="entry_point")
    suite = plus_suite(reference, entry_point, inputs, float(atol))
    metadata.update(
        task=benchmark,
        task_id=task_id,
        id=task_id,
        canonical_solution=reference,
        hidden_tests=suite,
        tests=suite,
        num_inputs=len(inputs),
    )
    return Prompt(user_prompt(text), metadata)


def evalplus_file(path: str | Path | None, stem: str) -> Path:
    """``path``, else the newest ``evalplus/<stem>*.jsonl[.gz]`` under the data folder (one line if none)."""
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} not found")
        return Path(path)
    folder = default_data_dir() / "evalplus"
    found = sorted(p for p in folder.glob(f"{stem}*.jsonl*") if p.name.endswith((".jsonl", ".jsonl.gz")))
    if not found:
        raise FileNotFoundError(f"{folder}/{stem}*.jsonl[.gz] not found (the EvalPlus release file)")
    return found[-1]


def load_evalplus(benchmark: str, path: str | Path | None = None, *, limit: int | None = None) -> list[Prompt]:
    """HumanEval+ (``"humaneval_plus"``, 164 problems) or MBPP+ (``"mbpp_plus"``, 378 in v0.2.0)."""
    stems = {"humaneval_plus": "HumanEvalPlus", "mbpp_plus": "MbppPlus"}
    if benchmark not in stems:
        raise ValueError(f"benchmark must be one of {sorted(stems)}, got {benchmark!r}")
    file = evalplus_file(path, stems[benchmark])
    prompts = read_records(
        iter_rows(file, strict=True), lambda row: parse_evalplus_row(row, benchmark), source=str(file), strict=True
    )
    return prompts[:limit] if limit is not None else prompts
