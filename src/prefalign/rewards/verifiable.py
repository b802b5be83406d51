"""Verifiable rewards: GSM8K final-answer exact match (Cobbe et al., 2021, "Training Verifiers to
Solve Math Word Problems"; the grade-school-math data set used for reasoning in Ivison et al.,
2024, "Unpacking DPO and PPO").

Answer extraction from a free-form response, in order of precedence:

1. the first number after the last ``####`` (GSM8K's own answer marker);
2. the number inside the last ``\\boxed{...}``;
3. the first number after the last "answer is" / "answer:" (e.g. "The answer is $1,200.");
4. otherwise the last number in the response.

Calculator annotations ``<<48/2=24>>`` (present in GSM8K reference solutions and in models tuned
on them) are removed first. Numbers may carry a sign (ASCII ``-`` or Unicode minus, only when not
glued to a preceding word or digit), a ``$``, thousands separators (``1,234,567``: groups of
exactly three digits), decimals (``0.5``, ``.5``), a trailing ``%`` (ignored) and a fraction bar
(``3/4`` = 0.75). Comparison is exact on rational values (``18.00`` equals ``18``) unless a
tolerance is given. Departure from lm-evaluation-harness's "strict-match" filter (which requires
the "The answer is" format): we fall back to the last number, like its "flexible-extract" filter
and like open-instruct's GSM8K evaluation (the suite behind Ivison et al.).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from prefalign.data.schema import Prompt

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])(?P<sign>[-\u2212])\s?)?\$?\s?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+)(?!\.\d))?"
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)", re.IGNORECASE)


def _numbers(text: str) -> list[tuple[int, str]]:
    """``(position, canonical string)`` of every number in ``text``."""
    found = []
    for match in _NUMBER.finditer(text):
        integer, decimals = match.group("int"), match.group("frac")
        if integer is None and decimals is None:
            continue
        value = Fraction((integer or "0").replace(",", "") + (decimals or ""))
        if match.group("den") is not None:
            denominator = int(match.group("den"))
            if denominator == 0:
                continue
            value /= denominator
        if match.group("sign"):
            value = -value
        found.append((match.start(), format_number(value)))
    return found


def format_number(value: Fraction) -> str:
    """Canonical text of a rational: ``18``, ``-3``, ``0.75``, or ``p/q`` when not a finite decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    text = f"{float(value):.12f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == value else f"{value.numerator}/{value.denominator}"


def parse_number(text: str) -> Fraction:
    """The value of a number written as GSM8K writes it (``1,234``, ``-3``, ``0.5``, ``$7``, ``3/4``)."""
    numbers = _numbers(text.strip())
    if len(numbers) != 1:
        raise ValueError(f"expected exactly one number in {text!r}, found {len(numbers)}")
    return Fraction(numbers[0][1])


def extract_answer(response: str) -> str | None:
    """The final numeric answer of a response (canonical text), or ``None`` if it has no number."""
    text = _ANNOTATION.sub("", response)
    if "####" in text:
        after = _numbers(text[text.rindex("####") + 4 :])
        if after:
            return after[0][1]
    boxed = _BOXED.findall(text)
    if boxed:
        inside = _numbers(boxed[-1])
        if inside:
            return inside[-1][1]
    markers = list(_ANSWER_IS.finditer(text))
    if markers:
        after = _numbers(text[markers[-1].end() :])
        if after:
            return after[0][1]
    numbers = _numbers(text)
    return numbers[-1][1] if numbers else None


def answers_match(predicted: str | None, reference: str, *, tolerance: float = 0.0) -> bool:
    """Numeric equality of an extracted answer and the reference (``|p - r| <= tolerance``)."""
    if predicted is None:
        return False
    difference = abs(Fraction(predicted) - parse_number(reference))
    return difference <= Fraction(tolerance)


@dataclass(frozen=True)
class GSM8KScore:
    predicted: str | None
    reference: str
    correct: bool
    reward: float


class GSM8KReward:
    """Reward 1 (``correct_reward``) when the extracted answer equals ``metadata["reference"]``,
    else 0 (``incorrect_reward``); ``no_answer_reward`` (default: ``incorrect_reward``) when the
    response holds no number at all. Implements the reward protocol ``(prompts, responses) -> (B,)``."""

    def __init__(
        self,
        *,
        correct_reward: float = 1.0,
        incorrect_reward: float = 0.0,
        no_answer_reward: float | None = None,
        tolerance: float = 0.0,
        name: str = "gsm8k",
    ):
        self.correct_reward = correct_reward
        self.incorrect_reward = incorrect_reward
        self.no_answer_reward = incorrect_reward if no_answer_reward is None else no_answer_reward
        self.tolerance = tolerance
        self.name = name

    def score_one(self, response: str, reference: str) -> GSM8KScore:
        predicted = extract_answer(response)
        correct = answers_match(predicted, reference, tolerance=self.tolerance)
        if correct:
            reward = self.correct_reward
        else:
            reward = self.no_answer_reward if predicted is None else self.incorrect_reward
        return GSM8KScore(predicted, reference, correct, reward)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[GSM8KScore]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        scores = []
        for index, (prompt, response) in enumerate(zip(prompts, responses)):
            reference = prompt.metadata.get("reference")
            if not isinstance(reference, str):
                raise ValueError(
                    f"prompt {index} has no string metadata['reference'] (got {reference!r}); load it with load_gsm8k"
                )
            scores.append(self.score_one(response, reference))
        return scores

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        return torch.tensor([s.reward for s in self.score(prompts, responses)], dtype=torch.float32)
