"""GSM8K grade-school math word problems (Cobbe et al., 2021; github openai/grade-school-math).

Upstream format, one JSON object a line in ``gsm8k/{train,test,test_socratic}.jsonl``
(7,473 / 1,319 / 1,319 rows)::

    {"question": "Janet's ducks lay 16 eggs per day. ...",
     "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day. ...\\n#### 18"}

The final answer follows the last ``#### `` and may contain thousands separators (``#### 70,000``).
Each row becomes a :class:`~prefalign.data.schema.Prompt` with one user message (the question)
and metadata ``task="gsm8k"``, ``reference`` (the final answer, canonical: commas removed, e.g.
``"70000"``), ``solution`` (the full reference solution), ``split`` and ``id``
(``"gsm8k/<split>/<n>"``, n = 0-based index among kept rows).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefalign.data.io import DropReport, iter_rows, read_records
from prefalign.data.schema import DataError, Prompt, user_prompt
from prefalign.paths import data_path

SPLITS = {"train": "train.jsonl", "test": "test.jsonl", "test_socratic": "test_socratic.jsonl"}
ANSWER_MARKER = "####"
_FINAL_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def reference_answer(solution: str) -> str:
    """The canonical final answer of a GSM8K solution: the number after the last ``####``, without
    thousands separators or trailing decimal zeros (``"70,000"`` -> ``"70000"``, ``"2.50"`` -> ``"2.5"``)."""
    if ANSWER_MARKER not in solution:
        raise DataError(f"no {ANSWER_MARKER!r} final-answer marker", field="answer")
    final = solution[solution.rindex(ANSWER_MARKER) + len(ANSWER_MARKER) :].strip()
    number = final.replace(",", "")
    if not _FINAL_NUMBER.fullmatch(number):
        raise DataError(f"final answer {final!r} is not a single number", field="answer")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return "0" if number in ("-0", "") else number


def parse_gsm8k_row(row: dict[str, Any], *, split: str = "") -> Prompt:
    """One GSM8K row -> Prompt; raises :class:`DataError` naming the field."""
    for name in ("question", "answer"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise DataError("missing or empty string", field=name)
    metadata = {
        "task": "gsm8k",
        "reference": reference_answer(row["answer"]),
        "solution": row["answer"],
        "split": split,
    }
    return Prompt(messages=user_prompt(row["question"].strip()), metadata=metadata)


def load_gsm8k(
    split: str = "test",
    *,
    path: str | Path | None = None,
    strict: bool = False,
    report: DropReport | None = None,
    limit: int | None = None,
) -> list[Prompt]:
    """GSM8K prompts of one split in file order (``path`` overrides the data folder's file)."""
    if split not in SPLITS and path is None:
        raise ValueError(f"unknown GSM8K split {split!r}; choose one of {sorted(SPLITS)} or pass path=")
    path = Path(path) if path is not None else data_path("gsm8k", SPLITS[split])
    prompts = read_records(
        iter_rows(path, strict=strict, report=report),
        lambda row: parse_gsm8k_row(row, split=split),
        source=str(path),
        strict=strict,
        report=report,
    )
    for index, prompt in enumerate(prompts):
        prompt.metadata["id"] = f"gsm8k/{split}/{index}"
    return prompts[:limit] if limit is not None else prompts
