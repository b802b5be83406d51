"""Loaders for the benchmarks of Ivison et al. (2024, App. D) that have no training use: MMLU, Big-Bench
Hard, TruthfulQA, ToxiGen, XSTest and AlpacaEval. Each reads the benchmark's published files from the
data folder (or a ``path`` given by the user) and returns :class:`~prefalign.data.schema.Prompt` records
whose metadata holds what the task's metric needs. Prompt *formatting* (few-shot primers, chat wording)
belongs to the tasks in :mod:`prefalign.evaluation`; these loaders only parse.

Upstream formats and the names expected under the data folder:

- MMLU (Hendrycks et al., 2021; ``data.tar`` of github hendrycks/test): ``mmlu/test/<subject>_test.csv``,
  one question a row, no header, columns ``question, A, B, C, D, answer`` (answer a letter).
- BBH (Suzgun et al., 2022; github suzgunmirac/BIG-Bench-Hard): ``bbh/bbh/<task>.json`` =
  ``{"examples": [{"input", "target"}]}`` and ``bbh/cot-prompts/<task>.txt`` (a canary line, a
  ``-----`` line, then the three chain-of-thought exemplars).
- TruthfulQA (Lin et al., 2022; github sylinrl/TruthfulQA): ``truthfulqa/TruthfulQA.csv`` with header
  ``Type, Category, Question, Best Answer, Correct Answers, Incorrect Answers, Source`` (answers
  ``; ``-separated).
- ToxiGen (Hartvigsen et al., 2022; github microsoft/TOXIGEN ``prompts/``):
  ``toxigen/hate_<group>_1k.txt``, one prompt a line, newlines escaped as ``\\n``.
- XSTest (Röttger et al., 2024; github paul-rottger/exaggerated-safety): ``xstest/xstest_prompts.csv``
  with header ``id, prompt, type, label, focus, note`` (label ``safe`` or ``unsafe``; 250 / 200).
- AlpacaEval (Li et al., 2023; github tatsu-lab/alpaca_eval): ``alpaca_eval/<generator>_model_outputs.json``,
  a JSON list of ``{"dataset", "instruction", "output", "generator"}`` (805 rows).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from prefalign.data.io import iter_rows, read_records
from prefalign.data.schema import DataError, Prompt, user_prompt
from prefalign.paths import default_data_dir

MMLU_CHOICES = ("A", "B", "C", "D")


def benchmark_file(path: str | Path | None, *default: str) -> Path:
    """``path`` or the default file under the data folder; a missing file raises one line naming it."""
    resolved = Path(path) if path is not None else default_data_dir().joinpath(*default)
    if not resolved.exists():
        raise FileNotFoundError(f"{resolved} not found (expected: {'/'.join(default)} under the data folder)")
    return resolved


def _csv_rows(path: Path, *, header: bool) -> list[tuple[int, list[str] | dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh) if header else csv.reader(fh)
        return [(i, row) for i, row in enumerate(reader, start=2 if header else 1)]


def _need(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError("missing or empty", field=name)
    return value.strip()


# -- MMLU -------------------------------------------------------------------------------------


def load_mmlu(path: str | Path | None = None, *, subjects: list[str] | None = None) -> list[Prompt]:
    """MMLU test questions, subjects in alphabetical order; ``path`` is the folder of ``*_test.csv``."""
    folder = benchmark_file(path, "mmlu", "test")
    files = sorted(folder.glob("*_test.csv"))
    if not files:
        raise FileNotFoundError(f"{folder}: no <subject>_test.csv file")
    out = []
    for file in files:
        subject = file.name[: -len("_test.csv")]
        if subjects is not None and subject not in subjects:
            continue
        for line, row in _csv_rows(file, header=False):
            if len(row) != 6:
                raise DataError(f"expected 6 columns, got {len(row)}", source=str(file), line=line)
            answer = row[5].strip()
            if answer not in MMLU_CHOICES:
                raise DataError(f"answer {answer!r} is not A-D", source=str(file), line=line, field="answer")
            meta = {"subject": subject, "choices": [c.strip() for c in row[1:5]], "answer": answer}
            meta["id"] = f"{subject}/{line}"
            out.append(Prompt(user_prompt(row[0].strip()), meta))
    return out


# -- BBH --------------------------------------------------------------------------------------


def bbh_cot_prompt(text: str) -> str:
    """The exemplars of a ``cot-prompts`` file: everything after its ``-----`` line."""
    lines = text.splitlines()
    if "-----" in (line.strip() for line in lines):
        lines = lines[[line.strip() for line in lines].index("-----") + 1 :]
    return "\n".join(lines).strip()


def load_bbh(path: str | Path | None = None, *, max_per_task: int | None = 40) -> list[Prompt]:
    """BBH examples (the first ``max_per_task`` of each task), with the task's 3-shot CoT prompt."""
    root = benchmark_file(path, "bbh")
    files = sorted((root / "bbh").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{root / 'bbh'}: no <task>.json file")
    out = []
    for file in files:
        task = file.stem
        cot = root / "cot-prompts" / f"{task}.txt"
        if not cot.exists():
            raise FileNotFoundError(f"{cot} not found (the chain-of-thought prompt of BBH task {task!r})")
        exemplars = bbh_cot_prompt(cot.read_text(encoding="utf-8"))
        data = json.loads(file.read_text(encoding="utf-8"))
        examples = data.get("examples") if isinstance(data, dict) else None
        if not isinstance(examples, list):
            raise DataError("expected {'examples': [...]}", source=str(file))
        for i, ex in enumerate(examples[:max_per_task], start=1):
            if not isinstance(ex, dict):
                raise DataError("expected an object", source=str(file), line=i)
            try:
                question, target = _need(ex, "input"), _need(ex, "target")
            except DataError as err:
                raise DataError(err.reason, source=str(file), line=i, field=err.field) from None
            meta = {"bbh_task": task, "target": target, "exemplars": exemplars, "id": f"{task}/{i}"}
            out.append(Prompt(user_prompt(question), meta))
    return out


# -- TruthfulQA -------------------------------------------------------------------------------


def load_truthfulqa(path: str | Path | None = None) -> list[Prompt]:
    """The 817 TruthfulQA questions with their reference answers."""
    file = benchmark_file(path, "truthfulqa", "TruthfulQA.csv")
    out = []
    for line, row in _csv_rows(file, header=True):
        try:
            question = _need(row, "Question")
            meta = {
                "question": question,
                "category": (row.get("Category") or "").strip(),
                "best_answer": _need(row, "Best Answer"),
                "correct_answers": [a.strip() for a in _need(row, "Correct Answers").split(";") if a.strip()],
                "incorrect_answers": [a.strip() for a in _need(row, "Incorrect Answers").split(";") if a.strip()],
                "id": f"truthfulqa/{line - 1}",
            }
        except DataError as err:
            raise DataError(err.reason, source=str(file), line=line, field=err.field) from None
        out.append(Prompt(user_prompt(question), meta))
    return out


# -- ToxiGen ----------------------------------------------------------------------------------


def load_toxigen(path: str | Path | None = None, *, max_per_group: int | None = 500) -> list[Prompt]:
    """ToxiGen's hateful prompts (``hate_<group>*.txt``), the first ``max_per_group`` of each group."""
    folder = benchmark_file(path, "toxigen")
    files = sorted(folder.glob("hate_*.txt"))
    if not files:
        raise FileNotFoundError(f"{folder}: no hate_<group>_1k.txt file")
    out = []
    for file in files:
        group = file.stem[len("hate_") :].removesuffix("_1k")
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        for i, text in enumerate(lines[:max_per_group], start=1):
            text = text.replace("\\\\", "\\").replace("\\n", "\n")
            out.append(Prompt(user_prompt(text), {"group": group, "id": f"{group}/{i}"}))
    return out


# -- XSTest -----------------------------------------------------------------------------------


def load_xstest(path: str | Path | None = None) -> list[Prompt]:
    """XSTest's 450 prompts; ``metadata["unsafe"]`` is True for the 200 that should be refused."""
    file = benchmark_file(path, "xstest", "xstest_prompts.csv")
    out = []
    for line, row in _csv_rows(file, header=True):
        try:
            text, label = _need(row, "prompt"), _need(row, "label").lower()
            if label not in ("safe", "unsafe"):
                raise DataError(f"label must be safe or unsafe, got {label!r}", field="label")
        except DataError as err:
            raise DataError(err.reason, source=str(file), line=line, field=err.field) from None
        meta = {"unsafe": label == "unsafe", "type": (row.get("type") or "").strip()}
        meta["id"] = str(row.get("id") or line - 1)
        out.append(Prompt(user_prompt(text), meta))
    return out


# -- AlpacaEval -------------------------------------------------------------------------------


def read_alpaca_outputs(path: str | Path) -> list[dict[str, str]]:
    """An AlpacaEval model-outputs file: ``[{"instruction", "output", "generator", "dataset"?}]``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (an AlpacaEval <generator>_model_outputs.json file)")

    def parse(row: dict[str, Any]) -> dict[str, str]:
        out = {"instruction": _need(row, "instruction"), "generator": str(row.get("generator") or path.stem)}
        output = row.get("output")
        if not isinstance(output, str):
            raise DataError("missing string", field="output")
        return {**out, "output": output, "dataset": str(row.get("dataset") or "")}

    return read_records(iter_rows(path, strict=True), parse, source=str(path), strict=True)


def load_alpaca_eval(reference: str = "gpt4_1106_preview", path: str | Path | None = None) -> list[Prompt]:
    """The 805 AlpacaEval instructions with the ``reference`` system's outputs as the baseline."""
    file = benchmark_file(path, "alpaca_eval", f"{reference}_model_outputs.json")
    out = []
    for i, row in enumerate(read_alpaca_outputs(file)):
        meta = {"reference_output": row["output"], "reference_generator": row["generator"], "dataset": row["dataset"]}
        meta["id"] = str(i)
        meta["instruction"] = row["instruction"]
        out.append(Prompt(user_prompt(row["instruction"]), meta))
    return out
