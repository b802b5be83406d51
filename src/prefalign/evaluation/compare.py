"""Tables of evaluation results, and two runs side by side.

:func:`results_table` shows a results dict of :mod:`prefalign.evaluation.runner` (per task, then
each category's average, then the overall average); :func:`compare_results` lines two results up
by task and category (``difference`` = this run minus the other; ``None`` where only one run has
the row) and :func:`comparison_table` shows that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from prefalign.evaluation.registry import category_rank


def load_results(path: str | Path) -> dict[str, Any]:
    """A results file of ``prefalign eval``; raises naming the file when it is not one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, dict) or not all(
        isinstance(e, dict) and "score" in e and "category" in e for e in tasks.values()
    ):
        raise ValueError(
            f"{path}: not a results file of prefalign eval (needs 'tasks' with a 'category' and 'score' per task)"
        )
    return data


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _row(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, key: str = "score") -> dict[str, Any]:
    this = float(a[key]) if a is not None else None
    other = float(b[key]) if b is not None else None
    return {"this": this, "other": other, "difference": _difference(this, other)}


def compare_results(this: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """Per task, per category and overall: ``{"this", "other", "difference"}`` (this minus other)."""
    tasks = {}
    for name in [*this["tasks"], *(n for n in other["tasks"] if n not in this["tasks"])]:
        a, b = this["tasks"].get(name), other["tasks"].get(name)
        tasks[name] = {"category": (a or b)["category"], **_row(a, b)}
    cat_a, cat_b = this.get("categories", {}), other.get("categories", {})
    names = sorted({*cat_a, *cat_b}, key=lambda c: (category_rank(c), c))
    categories = {c: _row(cat_a.get(c), cat_b.get(c)) for c in names}
    overall = _row(this.get("overall"), other.get("overall"))
    same_tasks = set(this["tasks"]) == set(other["tasks"])
    return {"tasks": tasks, "categories": categories, "overall": overall, "same_tasks": same_tasks}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _fmt_difference(value: float | None) -> str:
    if value is None:
        return "-"
    colour = "green" if value > 0 else "red" if value < 0 else "dim"
    return f"[{colour}]{value:+.4f}[/{colour}]"


def _ordered_tasks(tasks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted(tasks, key=lambda n: (category_rank(tasks[n]["category"]), tasks[n]["category"]))


def results_table(results: Mapping[str, Any], title: str = "evaluation") -> Table:
    """Per-task scores, then the per-category averages and the overall average."""
    table = Table(title=title)
    for column in ("task", "category", "score", "prompts", "responses"):
        table.add_column(column, justify="left" if column in ("task", "category") else "right")
    for name in _ordered_tasks(results["tasks"]):
        entry = results["tasks"][name]
        table.add_row(
            name,
            entry["category"],
            _fmt(entry["score"]),
            str(entry.get("num_prompts", "")),
            str(entry.get("num_responses", "")),
        )
    table.add_section()
    for category, entry in results["categories"].items():
        table.add_row("[italic]average[/italic]", category, _fmt(entry["score"]), "", "")
    overall = results["overall"]
    table.add_section()
    table.add_row("[bold]overall[/bold]", "mean of categories", f"[bold]{_fmt(overall['score'])}[/bold]", "", "")
    table.add_row("overall", "mean of tasks", _fmt(overall["task_mean"]), "", "")
    return table


def comparison_table(comparison: Mapping[str, Any], labels: Sequence[str] = ("this", "other")) -> Table:
    """Two runs side by side: each task, each category average and the overall average, with the difference."""
    table = Table(title=f"{labels[0]} vs {labels[1]}" + ("" if comparison["same_tasks"] else " (different task sets)"))
    for column in ("task", "category", labels[0], labels[1], "difference"):
        table.add_column(column, justify="left" if column in ("task", "category") else "right")
    tasks = comparison["tasks"]
    for name in _ordered_tasks(tasks):
        row = tasks[name]
        table.add_row(name, row["category"], _fmt(row["this"]), _fmt(row["other"]), _fmt_difference(row["difference"]))
    table.add_section()
    for category, row in comparison["categories"].items():
        table.add_row(
            "[italic]average[/italic]",
            category,
            _fmt(row["this"]),
            _fmt(row["other"]),
            _fmt_difference(row["difference"]),
        )
    table.add_section()
    row = comparison["overall"]
    table.add_row(
        "[bold]overall[/bold]",
        "mean of categories",
        _fmt(row["this"]),
        _fmt(row["other"]),
        _fmt_difference(row["difference"]),
    )
    return table
