"""The IFEval instruction registry: instruction id -> checker and its keyword arguments.

All 25 instruction types of IFEval (Zhou et al., 2023, Table 1; the ids of
google-research ``instruction_following_eval/instructions_registry.py``) are registered.
:func:`check_instruction` validates the keyword arguments (unknown ids, missing or unexpected
arguments raise :class:`InstructionError` naming the instruction) and runs the checker.
``None``-valued arguments are dropped first: the Hugging Face copy of the data lists every
argument of every instruction, with ``None`` for the unused ones.

Two rule sets are provided. ``"current"`` follows google-research master (2025), which is also
what lm-evaluation-harness ships. ``"release-2023"`` differs only in
``detectable_format:number_highlighted_sections``: the first release counted ``*...*`` spans only,
and the later version also counts ``**bold**`` spans. The paper's published GPT-4 accuracies
(Zhou et al., 2023, Table 3) are reproduced within one prompt by ``"release-2023"`` on the
published GPT-4 responses, and not by ``"current"`` (about one point higher), which is how the
difference was identified.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prefalign.evaluation.ifeval import checks_structure as s
from prefalign.evaluation.ifeval import checks_text as t


class InstructionError(ValueError):
    """An unknown instruction id or malformed instruction arguments."""


@dataclass(frozen=True)
class Instruction:
    id: str
    check: Callable[..., bool]
    args: tuple[str, ...] = ()


_INSTRUCTIONS = (
    Instruction("keywords:existence", t.check_keywords_existence, ("keywords",)),
    Instruction("keywords:frequency", t.check_keyword_frequency, ("keyword", "frequency", "relation")),
    Instruction("keywords:forbidden_words", t.check_forbidden_words, ("forbidden_words",)),
    Instruction("keywords:letter_frequency", t.check_letter_frequency, ("letter", "let_frequency", "let_relation")),
    Instruction("language:response_language", t.check_response_language, ("language",)),
    Instruction("length_constraints:number_sentences", t.check_number_sentences, ("num_sentences", "relation")),
    Instruction("length_constraints:number_paragraphs", s.check_number_paragraphs, ("num_paragraphs",)),
    Instruction("length_constraints:number_words", t.check_number_words, ("num_words", "relation")),
    Instruction(
        "length_constraints:nth_paragraph_first_word",
        t.check_number_paragraphs_first_word,
        ("num_paragraphs", "nth_paragraph", "first_word"),
    ),
    Instruction("detectable_content:number_placeholders", s.check_number_placeholders, ("num_placeholders",)),
    Instruction("detectable_content:postscript", s.check_postscript, ("postscript_marker",)),
    Instruction("detectable_format:number_bullet_lists", s.check_number_bullet_lists, ("num_bullets",)),
    Instruction("detectable_format:constrained_response", s.check_constrained_response),
    Instruction(
        "detectable_format:number_highlighted_sections", s.check_number_highlighted_sections, ("num_highlights",)
    ),
    Instruction("detectable_format:multiple_sections", s.check_multiple_sections, ("section_spliter", "num_sections")),
    Instruction("detectable_format:json_format", s.check_json_format),
    Instruction("detectable_format:title", s.check_title),
    Instruction("combination:two_responses", s.check_two_responses),
    Instruction("combination:repeat_prompt", s.check_repeat_prompt, ("prompt_to_repeat",)),
    Instruction("startend:end_checker", s.check_end_phrase, ("end_phrase",)),
    Instruction("startend:quotation", s.check_quotation),
    Instruction(
        "change_case:capital_word_frequency", t.check_capital_word_frequency, ("capital_frequency", "capital_relation")
    ),
    Instruction("change_case:english_capital", t.check_english_capital),
    Instruction("change_case:english_lowercase", t.check_english_lowercase),
    Instruction("punctuation:no_comma", s.check_no_comma),
)

#: instruction id -> :class:`Instruction` (the ``"current"`` rule set)
INSTRUCTIONS: dict[str, Instruction] = {ins.id: ins for ins in _INSTRUCTIONS}
_HIGHLIGHTS = "detectable_format:number_highlighted_sections"
#: rule-set name -> registry
RULESETS: dict[str, dict[str, Instruction]] = {
    "current": INSTRUCTIONS,
    "release-2023": {
        **INSTRUCTIONS,
        _HIGHLIGHTS: Instruction(_HIGHLIGHTS, s.check_number_highlighted_sections_2023, ("num_highlights",)),
    },
}


def _registry(ruleset: str) -> dict[str, Instruction]:
    if ruleset not in RULESETS:
        raise InstructionError(f"unknown IFEval rule set {ruleset!r}; choose one of {sorted(RULESETS)}")
    return RULESETS[ruleset]


def instruction_arguments(instruction_id: str, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The checker's keyword arguments, validated; raises :class:`InstructionError`."""
    instruction = INSTRUCTIONS.get(instruction_id)  # arguments are the same in every rule set
    if instruction is None:
        raise InstructionError(f"unknown IFEval instruction {instruction_id!r}; known: {sorted(INSTRUCTIONS)}")
    given = {k: v for k, v in (kwargs or {}).items() if v is not None}
    missing = [a for a in instruction.args if a not in given]
    unexpected = [k for k in given if k not in instruction.args]
    if missing or unexpected:
        raise InstructionError(
            f"instruction {instruction_id!r} takes arguments {list(instruction.args)}; "
            f"missing {missing}, unexpected {unexpected}"
        )
    return given


def check_instruction(
    instruction_id: str, response: str, kwargs: Mapping[str, Any] | None = None, *, ruleset: str = "current"
) -> bool:
    """Whether ``response`` follows one instruction. An empty (blank) response follows none, as upstream."""
    registry = _registry(ruleset)
    arguments = instruction_arguments(instruction_id, kwargs)
    if not response.strip():
        return False
    try:
        return bool(registry[instruction_id].check(response, **arguments))
    except (TypeError, ValueError) as exc:
        raise InstructionError(f"instruction {instruction_id!r} with arguments {arguments}: {exc}") from exc
