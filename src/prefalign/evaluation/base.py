"""The task protocol: a task owns its prompts, its per-response metric and its RL reward.

Because :meth:`Task.score` and the reward share one implementation (``reward`` is a field of the
per-response score dict), the metric reported at evaluation and the reward optimised in RL
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from prefalign.data.schema import Prompt


@runtime_checkable
class Task(Protocol):
    name: str
    #: one of the evaluation categories of Ivison et al.: "factuality", "reasoning", "coding",
    #: "truthfulness", "safety", "instruction following" (or "chat" for open-ended ones)
    category: str

    def prompts(self, limit: int | None = None) -> list[Prompt]:
        """The task's evaluation prompts (the first ``limit`` of them, in a fixed order)."""
        ...

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[dict[str, Any]]:
        """Per-response results; every dict has a float ``"reward"`` and the task's own fields."""
        ...

    def aggregate(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Task-level metrics from the per-response results; the headline metric is ``"score"``."""
        ...


class TaskReward:
    """Adapts a :class:`Task` to the reward protocol, so RL optimises exactly the task's metric."""

    def __init__(self, task: Task):
        self.task = task
        self.name = f"task:{task.name}"

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        results = self.task.score(prompts, responses)
        return torch.tensor([float(r["reward"]) for r in results], dtype=torch.float32)
