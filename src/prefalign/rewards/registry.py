"""Programmatic rewards by name: ``task_reward("NAME[:ARGUMENT]")`` returns a RewardFunction.

Built in (cheap, deterministic, for smoke runs and the tiny learning test):

- ``char_fraction:CHARS``: the fraction of the response's characters that are in CHARS
  (0 for an empty response). A response of lowercase letters scores 1.
- ``length_target:N``: ``-|len(response) - N| / N`` in characters, 0 at the target length.
- ``eval:TASK``: the per-response ``reward`` of the evaluation task TASK of
  :mod:`prefalign.evaluation.registry` (gsm8k, ifeval, humaneval, mbpp, apps, code_contests), through
  :class:`prefalign.evaluation.base.TaskReward`, so the RL reward and the task's metric share one
  implementation (a code task gives Xu et al.'s 10 for passing its tests and 0 otherwise, so a weight of 1
  gives their reward).
  The prompts must carry the task's metadata (tests, reference answer): take them from the task.

Other code registers its own with :func:`register_task_reward` (a factory taking the argument
string or None). ``eval`` is registered that way by :mod:`prefalign.evaluation` (a higher layer),
when it is imported: the trainers that take a reward name import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from prefalign.data.schema import Prompt
from prefalign.rewards.base import RewardFunction

RewardFactory = Callable[[str | None], RewardFunction]
_REGISTRY: dict[str, RewardFactory] = {}


class CharacterFraction:
    """Reward = fraction of response characters that belong to ``chars``."""

    def __init__(self, chars: str):
        if not chars:
            raise ValueError("char_fraction needs at least one character, e.g. char_fraction:abc")
        self.chars = frozenset(chars)
        self.name = f"char_fraction:{chars}"

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        scores = [sum(c in self.chars for c in r) / len(r) if r else 0.0 for r in responses]
        return torch.tensor(scores, dtype=torch.float32)


class LengthTarget:
    """Reward = -|len(response) - target| / target, in characters (0 at the target)."""

    def __init__(self, target: int):
        if target < 1:
            raise ValueError(f"length_target needs a positive length, got {target}")
        self.target = target
        self.name = f"length_target:{target}"

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        return torch.tensor([-abs(len(r) - self.target) / self.target for r in responses], dtype=torch.float32)


def register_task_reward(name: str, factory: RewardFactory) -> None:
    """Make ``task_reward(f"{name}[:arg]")`` build ``factory(arg)``; re-registering a name replaces it."""
    if ":" in name or not name:
        raise ValueError(f"a reward name must be non-empty and contain no ':', got {name!r}")
    _REGISTRY[name] = factory


def available_task_rewards() -> list[str]:
    return sorted(_REGISTRY)


def task_reward(spec: str) -> RewardFunction:
    """The programmatic reward named by ``spec`` = ``NAME`` or ``NAME:ARGUMENT``."""
    name, _, argument = spec.partition(":")
    if name not in _REGISTRY:
        hint = " (eval:TASK is registered by importing prefalign.evaluation)" if name == "eval" else ""
        raise ValueError(f"unknown task reward {name!r}; registered: {available_task_rewards()}{hint}")
    return _REGISTRY[name](argument or None)


def _char_fraction(argument: str | None) -> RewardFunction:
    return CharacterFraction(argument or "")


def _length_target(argument: str | None) -> RewardFunction:
    if argument is None or not argument.isdigit():
        raise ValueError(f"length_target needs a length in characters, e.g. length_target:32, got {argument!r}")
    return LengthTarget(int(argument))


register_task_reward("char_fraction", _char_fraction)
register_task_reward("length_target", _length_target)
