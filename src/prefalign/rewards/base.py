"""The one reward protocol: ``(prompts, responses) -> tensor[B]``.

A reward source scores each response to its prompt; the :class:`~prefalign.data.schema.Prompt`
carries the task metadata (unit tests, reference answer, safety label). Learned reward models,
code execution and verifiable checkers all implement it, and :class:`SumOfRewards` adds several
(Xu et al. use a learned reward plus a test-case reward for code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from prefalign.data.schema import Prompt


@runtime_checkable
class RewardFunction(Protocol):
    """Scores responses: returns a float tensor of shape (B,), one score per (prompt, response)."""

    name: str

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor: ...


class SumOfRewards:
    """Weighted sum of several reward functions: sum_i w_i * r_i(prompt, response)."""

    def __init__(self, parts: Sequence[RewardFunction], weights: Sequence[float] | None = None):
        if not parts:
            raise ValueError("SumOfRewards needs at least one reward function")
        self.parts = list(parts)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.parts)
        if len(self.weights) != len(self.parts):
            raise ValueError(f"{len(self.weights)} weights for {len(self.parts)} reward functions")
        self.name = "+".join(p.name for p in self.parts)

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        total = torch.zeros(len(responses), dtype=torch.float32)
        for weight, part in zip(self.weights, self.parts):
            total += weight * part(prompts, responses).to(torch.float32).cpu()
        return total
