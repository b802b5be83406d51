"""When did a run stop improving? The plateau criterion of ``prefalign study``, computed from the run's own log.

Every method is trained with periodic held-out evaluations of its **own** objective:

=============  ==========================================  ==============================================
method         objective (the trainer's own key)           where it is logged
=============  ==========================================  ==============================================
DPO, RRHF,     ``eval/loss`` on the held-out preference     ``metrics.jsonl`` (``run.eval_every``)
PRO            pairs (lower is better)
PPO rows       ``eval/reward``: the testbed's reward of     ``metrics.jsonl`` (``run.eval_every``)
               one sample per validation prompt (higher)
DPO-Iter       the testbed's mean reward of the samples of  ``rounds.jsonl`` and ``results.json``
               each round's starting model, then of the
               final model (higher)
=============  ==========================================  ==============================================

The criterion (:func:`plateau`), on the series of evaluations ``v_0 .. v_n`` (``v_0`` the first one):

- the **gain** of the run is ``|best(v) - v_0|``; the tolerance is ``rel_tol * gain`` (at least ``abs_tol``);
- the run **plateaus at evaluation k** (the smallest such k) when no later evaluation improves on
  ``best(v_0 .. v_k)`` by more than the tolerance;
- it has **converged** when at least ``patience`` evaluations follow the plateau point, i.e. the
  objective stayed flat (within the tolerance) for that many evaluations before the run ended.

A run that has not converged is reported as such (its budget was too short); nothing is cut off or
extended after the fact, and the scored model is always the final one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ConvergenceConfig:
    rel_tol: float = 0.1
    """Tolerance as a share of the run's total gain on its objective: later improvements smaller than this count as
    flat."""
    abs_tol: float = 1e-3
    """Smallest tolerance (in the objective's units), so a run with no gain at all is flat, not noise."""
    patience: int = 2
    """Evaluations that must follow the plateau point for the run to count as converged."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rel_tol < 1.0 or self.abs_tol < 0 or self.patience < 1:
            raise ValueError("convergence: rel_tol must lie in [0, 1), abs_tol >= 0 and patience >= 1")


def plateau(
    points: Sequence[tuple[int, float]], higher_is_better: bool, config: ConvergenceConfig | None = None
) -> dict[str, Any]:
    """The criterion of the module docstring on ``points`` = [(step, value), ...] in step order."""
    config = config or ConvergenceConfig()
    points = [(int(s), float(v)) for s, v in points if v is not None and math.isfinite(float(v))]
    if not points:
        raise ValueError("no finite evaluation of the objective to judge convergence from")
    sign = 1.0 if higher_is_better else -1.0
    values = [sign * v for _, v in points]
    gain = max(values) - values[0]
    tol = max(config.abs_tol, config.rel_tol * abs(gain))
    best_so_far, k_plateau = -math.inf, len(values) - 1
    for k, v in enumerate(values):
        best_so_far = max(best_so_far, v)
        if all(later - best_so_far <= tol for later in values[k + 1 :]):
            k_plateau = k
            break
    after = len(values) - 1 - k_plateau
    return {
        "converged": after >= config.patience,
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: the run's log is missing")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
    return rows


def logged_series(metrics_file: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of every row of a trainer's ``metrics.jsonl`` that carries ``key``."""
    return [(int(r["step"]), float(r[key])) for r in read_jsonl(metrics_file) if isinstance(r.get(key), (int, float))]


def offline_convergence(run_dir: Path, config: ConvergenceConfig) -> dict[str, Any]:
    """DPO / RRHF / PRO: held-out loss from ``metrics.jsonl``."""
    return {"objective": "eval/loss", **plateau(logged_series(run_dir / "metrics.jsonl", "eval/loss"), False, config)}


def ppo_convergence(run_dir: Path, config: ConvergenceConfig) -> dict[str, Any]:
    """PPO: validation reward from ``metrics.jsonl``."""
    return {
        "objective": "eval/reward",
        **plateau(logged_series(run_dir / "metrics.jsonl", "eval/reward"), True, config),
    }


def iterative_convergence(run_dir: Path, config: ConvergenceConfig) -> dict[str, Any]:
    """DPO-Iter: each round's sample reward (``rounds.jsonl``), then the final model's (``results.json``)."""
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    points = [(int(r["round"]) - 1, float(r["reward/mean"])) for r in rounds]
    results = json.loads((run_dir / "results.json").read_text())
    if "reward/final_mean" in results:
        points.append((len(rounds), float(results["reward/final_mean"])))
    return {"objective": "round sample reward (round index)", **plateau(points, True, config)}
