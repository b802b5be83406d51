"""IFEval as a task (category "instruction following" in Ivison et al., 2024): the four accuracies
of Zhou et al. (2023), with the per-prompt strict success (all instructions followed, response
checked as given) as the RL reward.

The headline ``score`` is prompt-level strict accuracy by default (``headline`` selects any of
the four). Rule sets (``ruleset``) are described in :mod:`prefalign.evaluation.ifeval.registry`.
Prompts are validated when the task loads them: an unknown instruction id or malformed
arguments raise before any generation is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefalign.data.schema import Prompt
from prefalign.data.sources.ifeval import load_ifeval
from prefalign.evaluation.ifeval import IFEvalResult, accuracies, evaluate_response, validate_instructions
from prefalign.evaluation.ifeval.registry import RULESETS

HEADLINES = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


class IFEvalTask:
    """The IFEval task protocol implementation (``prompts`` / ``score`` / ``aggregate``)."""

    name = "ifeval"
    category = "instruction following"

    def __init__(
        self, *, path: str | Path | None = None, ruleset: str = "current", headline: str = "prompt_level_strict_acc"
    ):
        if ruleset not in RULESETS:
            raise ValueError(f"unknown IFEval rule set {ruleset!r}; choose one of {sorted(RULESETS)}")
        if headline not in HEADLINES:
            raise ValueError(f"unknown headline metric {headline!r}; choose one of {HEADLINES}")
        self.path = path
        self.ruleset = ruleset
        self.headline = headline

    def prompts(self, limit: int | None = None) -> list[Prompt]:
        """The first ``limit`` IFEval prompts in file order, their instructions validated."""
        prompts = load_ifeval(self.path, strict=True, limit=limit)
        for prompt in prompts:
            try:
                validate_instructions(prompt.metadata["instruction_ids"], prompt.metadata["instruction_kwargs"])
            except ValueError as exc:
                raise ValueError(f"IFEval prompt key {prompt.metadata.get('key')}: {exc}") from exc
        return prompts

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[dict[str, Any]]:
        """Per response: ``reward`` (1.0 if every instruction is strictly followed), the strict and
        loose per-instruction lists and the prompt-level booleans."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = []
        for index, (prompt, response) in enumerate(zip(prompts, responses)):
            ids = prompt.metadata.get("instruction_ids")
            kwargs = prompt.metadata.get("instruction_kwargs")
            if ids is None or kwargs is None:
                raise ValueError(
                    f"prompt {index} lacks metadata 'instruction_ids'/'instruction_kwargs'; load it with load_ifeval"
                )
            result = evaluate_response(response, ids, kwargs, ruleset=self.ruleset)
            out.append(
                {
                    "reward": float(result.prompt_strict),
                    "instruction_ids": result.instruction_ids,
                    "strict": result.strict,
                    "loose": result.loose,
                    "prompt_strict": result.prompt_strict,
                    "prompt_loose": result.prompt_loose,
                }
            )
        return out

    def aggregate(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        """The four accuracies, ``num_prompts``, ``num_instructions`` and ``score`` (the headline)."""
        parsed = [IFEvalResult(list(r["instruction_ids"]), list(r["strict"]), list(r["loose"])) for r in results]
        metrics = accuracies(parsed)
        metrics["score"] = metrics[self.headline]
        return metrics
