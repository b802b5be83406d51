"""Reward-model metrics as functions of scores: pair accuracy per subset (weighted and mean over subsets) and
best-of-N against a single sample. ``prefalign eval-rm`` (:mod:`.reward_model_eval`) runs them."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from prefalign.data.schema import PreferencePair, Prompt
from prefalign.evaluation.base import Task
from prefalign.evaluation.generations import Generations
from prefalign.evaluation.metrics import preference_accuracy
from prefalign.evaluation.safety_scores import score_in_batches
from prefalign.rewards.base import RewardFunction


def pair_scores(
    scorer: RewardFunction, pairs: Sequence[PreferencePair], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) chosen and (P,) rejected scores of ``pairs``."""
    prompts = [Prompt(messages=list(p.prompt), metadata=dict(p.metadata)) for p in pairs]
    chosen = score_in_batches(scorer, prompts, [p.chosen for p in pairs], batch_size=batch_size)
    rejected = score_in_batches(scorer, prompts, [p.rejected for p in pairs], batch_size=batch_size)
    return chosen, rejected


def subsets_of(pairs: Sequence[PreferencePair], key: str, default: str = "all") -> list[str]:
    """Each pair's subset: ``str(metadata[key])``, or ``default`` where the pair has no such key."""
    return [str(p.metadata[key]) if p.metadata.get(key) is not None else default for p in pairs]


def _normalised_weights(counts: Mapping[str, int], weights: Mapping[str, float] | None) -> dict[str, float]:
    if not weights:
        total = sum(counts.values())
        return {s: n / total for s, n in counts.items()}
    missing = sorted(set(counts) - set(weights))
    if missing:
        raise ValueError(f"subset_weights has no weight for subsets {missing} (present: {sorted(counts)})")
    used = {s: float(weights[s]) for s in counts}
    if any(w < 0 for w in used.values()) or sum(used.values()) <= 0:
        raise ValueError(f"subset weights must be >= 0 with a positive sum, got {used}")
    total = sum(used.values())
    return {s: w / total for s, w in used.items()}


def accuracy_by_subset(
    chosen: Sequence[float] | torch.Tensor,
    rejected: Sequence[float] | torch.Tensor,
    subsets: Sequence[str],
    *,
    weights: Mapping[str, float] | None = None,
    ties: str = "wrong",
) -> dict[str, Any]:
    """Per-subset and overall preference accuracy from scores (see the module docstring, part 1).

    ``weights``: a weight per subset (normalised over the subsets present; every present subset
    needs one; weights of absent subsets are listed in ``unused_weights``). None: by count.
    """
    chosen_t = torch.as_tensor(chosen, dtype=torch.float64)
    rejected_t = torch.as_tensor(rejected, dtype=torch.float64)
    if not (len(chosen_t) == len(rejected_t) == len(subsets)) or len(subsets) == 0:
        raise ValueError(
            f"need as many chosen scores ({len(chosen_t)}), rejected scores ({len(rejected_t)}) "
            f"and subsets ({len(subsets)}), at least one"
        )
    rows: dict[str, list[int]] = {}
    for i, subset in enumerate(subsets):
        rows.setdefault(subset, []).append(i)
    per_subset = {}
    for subset, index in sorted(rows.items()):
        c, r = chosen_t[index], rejected_t[index]
        per_subset[subset] = {
            "n": len(index),
            "accuracy": preference_accuracy(c.tolist(), r.tolist(), ties=ties),
            "margin": float((c - r).mean()),
        }
    used = _normalised_weights({s: v["n"] for s, v in per_subset.items()}, weights)
    return {
        "subsets": per_subset,
        "accuracy": preference_accuracy(chosen_t.tolist(), rejected_t.tolist(), ties=ties),
        "weighted": sum(used[s] * v["accuracy"] for s, v in per_subset.items()),
        "mean": sum(v["accuracy"] for v in per_subset.values()) / len(per_subset),
        "weights": used,
        "unused_weights": sorted(set(weights or {}) - set(per_subset)),
        "num_pairs": len(subsets),
        "margin": float((chosen_t - rejected_t).mean()),
    }


def evaluate_pairs(
    scorer: RewardFunction,
    pairs: Sequence[PreferencePair],
    *,
    subset_key: str = "source",
    weights: Mapping[str, float] | None = None,
    ties: str = "wrong",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Score ``pairs`` with ``scorer`` and report :func:`accuracy_by_subset` (grouped by ``metadata[subset_key]``)."""
    if not pairs:
        raise ValueError("no preference pairs to evaluate the reward model on")
    chosen, rejected = pair_scores(scorer, pairs, batch_size)
    return {
        "subset_key": subset_key,
        **accuracy_by_subset(chosen, rejected, subsets_of(pairs, subset_key), weights=weights, ties=ties),
    }


# -- 2. best-of-N -----------------------------------------------------------------------------


def _argmax_first(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def best_of_n(
    task: Task,
    prompts: Sequence[Prompt],
    generations: Generations,
    scorer: RewardFunction,
    *,
    seed: int = 0,
    batch_size: int = 32,
) -> tuple[dict[str, Any], list[float], list[dict[str, Any]]]:
    """Best-of-N on one task (module docstring, part 2); returns (report, reward per response, task result per
    response)."""
    groups = generations.by_prompt(len(prompts))
    sizes = {len(g) for g in groups}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"{task.name}: best-of-N needs the same number of responses for every prompt, got sizes {sorted(sizes)}"
        )
    rows = [prompts[i] for i in generations.prompt_index]
    rewards = score_in_batches(scorer, rows, generations.responses, batch_size=batch_size).tolist()
    results = task.score(rows, generations.responses)
    task_rewards = [float(r["reward"]) for r in results]
    rng = random.Random(seed)
    picks = {
        "best_of_n": [g[_argmax_first([rewards[i] for i in g])] for g in groups],
        "random_draw": [g[rng.randrange(len(g))] for g in groups],
        "oracle": [g[_argmax_first([task_rewards[i] for i in g])] for g in groups],
    }
    scores = {name: float(task.aggregate([results[i] for i in rows_])["score"]) for name, rows_ in picks.items()}
    scores["single_sample"] = float(task.aggregate(results)["score"])
    spread = [g for g in groups if len({task_rewards[i] for i in g}) > 1]
    top = sum(
        task_rewards[g[_argmax_first([rewards[i] for i in g])]] == max(task_rewards[i] for i in g) for g in spread
    )
    report = {
        "category": task.category,
        "n": sizes.pop(),
        "num_prompts": len(prompts),
        **scores,
        "gain": scores["best_of_n"] - scores["single_sample"],
        "prompts_with_spread": len(spread),
        "picked_top_rate": top / len(spread) if spread else None,
        "reward_mean": sum(rewards) / len(rewards),
    }
    return report, rewards, results


# -- the command --------------------------------------------------------------------------------
