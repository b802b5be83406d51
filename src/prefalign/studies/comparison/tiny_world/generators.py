"""The tiny world's text generators: each has its own style and its own error patterns.

- :func:`demonstration`: the **demonstrator** whose responses are the SFT data. Style: the bare
  answer (``1 2 3``) and the refusal ``sorry i cannot help``. With probability ``error_rate`` it
  makes one of its mistakes: sort with two neighbours swapped, reverse left in the original order,
  a sum or count off by one. It refuses an unsafe prompt only with probability ``refusal_rate``
  and otherwise answers it (correctly, or with its usual mistakes).
- :func:`preference_response`: the **preference-data generator**, a different rule-based writer
  (the distribution shift Xu et al. blame for DPO's weakness). Style: half of its answers start
  with ``the answer is``; its refusal is ``i refuse to answer that`` or ``i will not help``. Its
  mistakes: sort descending or with one symbol dropped, reverse rotated by one, a sum that is the
  product or a random number, a count equal to the list's length, a reply that only repeats the
  items. Correct with probability ``correct_rate``; refuses an unsafe prompt with probability
  ``refusal_rate``.
- :func:`pretraining_line`: pre-training text, plain ``<prompt> : <answer>`` with no chat template
  and no refusals (a base model answers everything); the answer is wrong (a random symbol string)
  with probability ``noise``.

Every function takes a :class:`random.Random`, so the data set is a function of the seed alone.
"""

from __future__ import annotations

import random

from prefalign.studies.comparison.tiny_world.task import DIGITS, LETTERS, REFUSAL, SYMBOLS, Problem

PREFERENCE_REFUSALS = ("i refuse to answer that", "i will not help sorry")


def _neighbour_swap(answer: list[str], rng: random.Random) -> list[str]:
    out = list(answer)
    i = rng.randrange(len(out) - 1)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _off_by_one(value: str, rng: random.Random) -> str:
    number = int(value) + rng.choice((-1, 1))
    return str(abs(number)) if number != int(value) else str(number + 1)


def demonstrator_mistake(problem: Problem, rng: random.Random) -> list[str]:
    """One of the demonstrator's own mistakes (module docstring)."""
    if problem.operation == "sort":
        return _neighbour_swap(problem.answer(), rng)
    if problem.operation == "reverse":
        return list(problem.items)
    return [_off_by_one(problem.answer()[0], rng)]


def demonstration(problem: Problem, rng: random.Random, error_rate: float, refusal_rate: float) -> str:
    """The demonstrator's response to ``problem`` (SFT data)."""
    if problem.unsafe and rng.random() < refusal_rate:
        return REFUSAL
    answer = demonstrator_mistake(problem, rng) if rng.random() < error_rate else problem.answer()
    return " ".join(answer)


def preference_mistake(problem: Problem, rng: random.Random) -> list[str]:
    """One of the preference generator's mistakes (module docstring), different from the demonstrator's."""
    answer = problem.answer()
    if rng.random() < 0.2:
        return list(problem.items)  # repeats the question's items
    if problem.operation == "sort":
        if rng.random() < 0.5:
            return sorted(problem.items, reverse=True)
        drop = rng.randrange(len(answer))
        return answer[:drop] + answer[drop + 1 :]
    if problem.operation == "reverse":
        return answer[1:] + answer[:1]
    if problem.operation == "add":
        if rng.random() < 0.5:
            return [str(min(int(problem.items[0]) * int(problem.items[1]), 18))]
        return [rng.choice(DIGITS)]
    return [str(len(problem.items))]


def preference_response(problem: Problem, rng: random.Random, correct_rate: float, refusal_rate: float) -> str:
    """The preference generator's response to ``problem``."""
    if problem.unsafe and rng.random() < refusal_rate:
        return rng.choice(PREFERENCE_REFUSALS)
    answer = problem.answer() if rng.random() < correct_rate else preference_mistake(problem, rng)
    prefix = "the answer is " if rng.random() < 0.5 else ""
    return prefix + " ".join(answer)


def pretraining_line(problem: Problem, rng: random.Random, noise: float) -> str:
    """One line of pre-training text: ``<prompt> : <answer>``, the answer random with probability ``noise``."""
    if rng.random() < noise:
        alphabet = sorted(SYMBOLS - set(LETTERS)) if problem.operation in ("add", "sort") else list(LETTERS)
        answer = [rng.choice(alphabet) for _ in range(rng.randint(1, 4))]
    else:
        answer = problem.answer()
    return f"{problem.text} : {' '.join(answer)}"
