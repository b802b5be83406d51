"""Stop a run when its held-out objective has plateaued (``run.early_stop``), and the plateau criterion itself.

Each trainer evaluates its own held-out objective every ``run.eval_every`` steps:

===========  ======================================================================  =========
trainer      objective                                                               better
===========  ======================================================================  =========
DPO family   ``eval/loss``: the loss on the held-out pairs                           lower
PPO          ``eval/objective``: reward - KL coefficient x KL to the reference, of   higher
             one sampled response per validation prompt (the objective PPO
             maximises)
DPO-Iter     ``eval/objective``: reward - beta x KL to the starting model, of one    higher
             sampled response per validation prompt, after each round (and of
             the starting model)
===========  ======================================================================  =========

The criterion (:func:`plateau`) on the evaluations ``v_0 .. v_n`` so far (``v_0`` the first one):

- the **gain** is ``|best(v) - v_0|``; the tolerance is ``rel_tol * gain``, at least ``abs_tol``;
- the series **plateaus at evaluation k** (the smallest such k) when no later evaluation improves on
  ``best(v_0 .. v_k)`` by more than the tolerance;
- it has **converged** when at least ``patience`` evaluations follow the plateau point.

With ``run.early_stop.patience`` > 0 a trainer stops at the first evaluation at which the series has
converged (it saves a checkpoint and its final model there, and says so in ``results.json``:
``stopped_early``); otherwise it runs its whole budget. The same function judges a finished run after
the fact (``prefalign study``'s convergence table), so a run that stopped early is exactly a run the
criterion calls converged. The last model is kept (no rollback to the best evaluation): the objective
was flat, within the tolerance, over the last ``patience`` evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EarlyStopConfig:
    patience: int = 0
    """Evaluations without an improvement beyond the tolerance after which the run stops (0: never stop early;
    needs held-out data and run.eval_every > 0)."""
    rel_tol: float = 0.1
    """Tolerance as a share of the objective's gain so far (best minus first evaluation): smaller improvements count
    as flat."""
    abs_tol: float = 1e-3
    """Smallest tolerance, in the objective's units (a run with no gain at all is flat, not noise)."""

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ValueError(f"run.early_stop.patience must be >= 0, got {self.patience}")
        if not 0.0 <= self.rel_tol < 1.0:
            raise ValueError(f"run.early_stop.rel_tol must lie in [0, 1), got {self.rel_tol}")
        if self.abs_tol < 0:
            raise ValueError(f"run.early_stop.abs_tol must be >= 0, got {self.abs_tol}")

    @property
    def enabled(self) -> bool:
        return self.patience > 0


def plateau(
    points: Sequence[tuple[int, float]],
    higher_is_better: bool,
    rel_tol: float = 0.1,
    abs_tol: float = 1e-3,
    patience: int = 2,
) -> dict[str, Any]:
    """The criterion of the module docstring on ``points`` = [(step, value), ...] in step order."""
    points = [(int(s), float(v)) for s, v in points if v is not None and math.isfinite(float(v))]
    if not points:
        raise ValueError("no finite evaluation of the objective to judge convergence from")
    sign = 1.0 if higher_is_better else -1.0
    values = [sign * v for _, v in points]
    gain = max(values) - values[0]
    tol = max(abs_tol, rel_tol * abs(gain))
    best_so_far, k_plateau = -math.inf, len(values) - 1
    for k, v in enumerate(values):
        best_so_far = max(best_so_far, v)
        if all(later - best_so_far <= tol for later in values[k + 1 :]):
            k_plateau = k
            break
    after = len(values) - 1 - k_plateau
    return {
        "converged": after >= patience,
        "plateau_step": points[k_plateau][0],
        "last_step": points[-1][0],
        "evaluations": len(points),
        "evaluations_after_plateau": after,
        "first": points[0][1],
        "best": sign * max(values),
        "final": points[-1][1],
        "tolerance": tol,
        "higher_is_better": higher_is_better,
    }


class PlateauWatch:
    """The evaluations of one run so far; :meth:`update` says whether the run should stop now."""

    def __init__(self, config: EarlyStopConfig, key: str, higher_is_better: bool):
        self.config, self.key, self.higher_is_better = config, key, higher_is_better
        self.points: list[tuple[int, float]] = []

    def update(self, step: int, value: float) -> bool:
        """Record the evaluation at ``step``; True when early stopping is on and the series has converged."""
        self.points.append((int(step), float(value)))
        return self.config.enabled and self.judge()["converged"]

    def update_from(self, metrics: dict[str, Any], step: int) -> bool:
        """:meth:`update` with ``metrics[key]`` when this step evaluated the objective, else False."""
        value = metrics.get(self.key)
        return isinstance(value, (int, float)) and self.update(step, value)

    def judge(self) -> dict[str, Any]:
        c = self.config
        return plateau(self.points, self.higher_is_better, c.rel_tol, c.abs_tol, max(c.patience, 1))

    def restore(self, metrics_file: Path, up_to_step: int) -> None:
        """On resume: the evaluations logged in ``metrics.jsonl`` up to the resumed step."""
        from prefalign.trainers.logging import read_metrics

        if up_to_step <= 0:
            return
        for row in read_metrics(metrics_file):
            if row.get("step", 0) <= up_to_step and isinstance(row.get(self.key), (int, float)):
                self.points.append((int(row["step"]), float(row[self.key])))

    def summary(self, stopped: bool) -> dict[str, Any]:
        """What results.json records: the objective, whether the run stopped early, where the plateau began."""
        out: dict[str, Any] = {"objective": self.key, "stopped_early": stopped}
        if self.points:
            judged = self.judge()
            out |= {"plateau_step": judged["plateau_step"], "evaluations": judged["evaluations"]}
        return out


def check_early_stop(config: EarlyStopConfig, eval_every: int, has_held_out: bool, what: str) -> None:
    """A clear error when early stopping is on but the run would never evaluate its objective."""
    if not config.enabled:
        return
    if eval_every <= 0:
        raise ValueError("run.early_stop.patience > 0 needs run.eval_every > 0 (evaluations to judge the plateau on)")
    if not has_held_out:
        raise ValueError(f"run.early_stop.patience > 0 needs held-out data: {what}")
