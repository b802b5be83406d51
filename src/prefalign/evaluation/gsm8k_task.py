"""GSM8K as a task (category "reasoning" in Ivison et al., 2024): exact-match accuracy of the final
numeric answer, with the RL reward computed by the same :class:`~prefalign.rewards.verifiable.GSM8KReward`
so that metric and reward cannot drift apart.

Departure from Ivison et al. (who evaluate GSM8K 8-shot with chain of thought through
open-instruct): prompts here are zero-shot by default; pass ``instruction`` to append a formatting
request such as "Put the final answer after '####'.", or ``system`` for a system message. Answer
extraction falls back to the last number of the response (see :mod:`prefalign.rewards.verifiable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefalign.data.schema import Message, Prompt
from prefalign.data.sources.gsm8k import load_gsm8k
from prefalign.rewards.verifiable import GSM8KReward


class GSM8KTask:
    """The GSM8K task protocol implementation (``prompts`` / ``score`` / ``aggregate``)."""

    name = "gsm8k"
    category = "reasoning"

    def __init__(
        self,
        split: str = "test",
        *,
        path: str | Path | None = None,
        instruction: str | None = None,
        system: str | None = None,
        reward: GSM8KReward | None = None,
    ):
        self.split = split
        self.path = path
        self.instruction = instruction
        self.system = system
        self.reward = reward or GSM8KReward()

    def _format(self, prompt: Prompt) -> Prompt:
        question = prompt.messages[-1].content
        text = f"{question}\n{self.instruction}" if self.instruction else question
        messages = ([Message("system", self.system)] if self.system else []) + [Message("user", text)]
        return Prompt(messages=messages, metadata=prompt.metadata)

    def prompts(self, limit: int | None = None) -> list[Prompt]:
        """The first ``limit`` prompts of the split, in file order, formatted for the policy."""
        return [self._format(p) for p in load_gsm8k(self.split, path=self.path, strict=True, limit=limit)]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[dict[str, Any]]:
        """Per response: ``reward``, ``correct``, ``predicted`` (extracted answer or None), ``reference``."""
        return [
            {"reward": float(s.reward), "correct": s.correct, "predicted": s.predicted, "reference": s.reference}
            for s in self.reward.score(prompts, responses)
        ]

    def aggregate(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        """``accuracy`` (= ``score``), ``no_answer_rate`` and ``n``."""
        if not results:
            raise ValueError("no GSM8K results to aggregate")
        n = len(results)
        accuracy = sum(bool(r["correct"]) for r in results) / n
        no_answer = sum(r["predicted"] is None for r in results) / n
        return {"score": accuracy, "accuracy": accuracy, "no_answer_rate": no_answer, "n": float(n)}
