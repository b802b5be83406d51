"""IFEval scoring: strict and loose following, prompt- and instruction-level accuracy.

Definitions (Zhou et al., 2023, section 3; google-research ``evaluation_lib.py``):

- **strict**: each instruction is checked on the response as given.
- **loose**: an instruction counts as followed if it is followed by any of eight variants of the
  response: as given, with the first line removed, with the last line removed, with both removed,
  and each of those four with every ``*`` deleted (markdown emphasis).
- **prompt-level accuracy**: share of prompts whose instructions are all followed.
- **instruction-level accuracy**: share of all instructions (pooled over prompts) followed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefalign.evaluation.ifeval.registry import check_instruction, instruction_arguments


def loose_variants(response: str) -> list[str]:
    """The eight variants of a response tried by the loose criterion, in upstream order."""
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    variants = [response, response.replace("*", ""), remove_first, remove_last, remove_both]
    variants += [v.replace("*", "") for v in (remove_first, remove_last, remove_both)]
    return variants


@dataclass
class IFEvalResult:
    """Per-instruction results for one (prompt, response)."""

    instruction_ids: list[str]
    strict: list[bool]
    loose: list[bool]

    @property
    def prompt_strict(self) -> bool:
        return all(self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.loose)


def validate_instructions(instruction_ids: Sequence[str], kwargs_list: Sequence[Mapping[str, Any] | None]) -> None:
    """Raise if the ids and argument lists differ in length, an id is unknown or arguments are malformed."""
    if len(instruction_ids) != len(kwargs_list):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs_list)} argument dicts")
    for instruction_id, kwargs in zip(instruction_ids, kwargs_list):
        instruction_arguments(instruction_id, kwargs)


def evaluate_response(
    response: str,
    instruction_ids: Sequence[str],
    kwargs_list: Sequence[Mapping[str, Any] | None],
    *,
    ruleset: str = "current",
) -> IFEvalResult:
    """Strict and loose following of every instruction of one prompt (``ruleset``: see
    :mod:`.registry`)."""
    validate_instructions(instruction_ids, kwargs_list)
    variants = loose_variants(response)
    strict, loose = [], []
    for instruction_id, kwargs in zip(instruction_ids, kwargs_list):
        strict.append(check_instruction(instruction_id, response, kwargs, ruleset=ruleset))
        loose.append(
            strict[-1] or any(check_instruction(instruction_id, v, kwargs, ruleset=ruleset) for v in variants[1:])
        )
    return IFEvalResult(list(instruction_ids), strict, loose)


def accuracies(results: Sequence[IFEvalResult]) -> dict[str, float]:
    """The four IFEval accuracies (fractions in [0, 1]) and the counts behind them."""
    if not results:
        raise ValueError("no IFEval results to aggregate")
    n_instructions = sum(len(r.strict) for r in results)
    return {
        "prompt_level_strict_acc": sum(r.prompt_strict for r in results) / len(results),
        "inst_level_strict_acc": sum(sum(r.strict) for r in results) / n_instructions,
        "prompt_level_loose_acc": sum(r.prompt_loose for r in results) / len(results),
        "inst_level_loose_acc": sum(sum(r.loose) for r in results) / n_instructions,
        "num_prompts": float(len(results)),
        "num_instructions": float(n_instructions),
    }


def accuracy_by_instruction(results: Sequence[IFEvalResult], *, loose: bool = False) -> dict[str, float]:
    """Accuracy per instruction id (upstream's "tier 1" breakdown)."""
    totals: dict[str, list[int]] = {}
    for r in results:
        for instruction_id, ok in zip(r.instruction_ids, r.loose if loose else r.strict):
            pair = totals.setdefault(instruction_id, [0, 0])
            pair[0] += int(ok)
            pair[1] += 1
    return {k: correct / total for k, (correct, total) in sorted(totals.items())}
