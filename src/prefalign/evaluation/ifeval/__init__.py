"""IFEval (Zhou et al., 2023, "Instruction-Following Evaluation for Large Language Models",
arXiv:2311.07911): verifiable instructions, their checkers and strict/loose accuracies."""

from prefalign.evaluation.ifeval.language import detect_language
from prefalign.evaluation.ifeval.registry import INSTRUCTIONS, RULESETS, InstructionError, check_instruction
from prefalign.evaluation.ifeval.scoring import (
    IFEvalResult,
    accuracies,
    accuracy_by_instruction,
    evaluate_response,
    loose_variants,
    validate_instructions,
)

__all__ = [
    "INSTRUCTIONS",
    "IFEvalResult",
    "RULESETS",
    "InstructionError",
    "accuracies",
    "accuracy_by_instruction",
    "check_instruction",
    "detect_language",
    "evaluate_response",
    "loose_variants",
    "validate_instructions",
]
