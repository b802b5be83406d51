"""When did a run stop improving? The plateau criterion of ``prefalign study``, computed from the run's own log.

Every method is trained with periodic held-out evaluations of its **own** objective, and (with
``convergence.stop_at_plateau``, the default) stops once that objective has plateaued; its stage's length
(``ppo.steps``, ``offline.epochs``, ``iterative.rounds``) is the cap:

=============  ==============================================  ==========================================
method         objective (the trainer's own key)               where it is logged
=============  ==============================================  ==========================================
DPO, RRHF,     ``eval/loss`` on the held-out preference         ``metrics.jsonl`` (``run.eval_every``)
PRO            pairs (lower is better)
PPO rows       ``eval/objective``: the testbed's reward minus   ``metrics.jsonl`` (``run.eval_every``)
               KL coefficient x KL to the run's reference, of
               one sample per validation prompt (the objective
               PPO maximises; higher)
DPO-Iter       ``eval/objective``: the testbed's reward minus   ``results.json`` (``early_stop.validation``)
               beta x KL to the starting model, of one sample
               per validation prompt, of the starting model and
               after each round (higher)
=============  ==============================================  ==========================================

The criterion (:func:`prefalign.trainers.early_stop.plateau`), on the series of evaluations ``v_0 .. v_n``:

- the **gain** of the run is ``|best(v) - v_0|``; the tolerance is ``rel_tol * gain`` (at least ``abs_tol``);
- the run **plateaus at evaluation k** (the smallest such k) when no later evaluation improves on
  ``best(v_0 .. v_k)`` by more than the tolerance;
- it has **converged** when at least ``patience`` evaluations follow the plateau point, i.e. the
  objective stayed flat (within the tolerance) for that many evaluations before the run ended.

A trainer that stops early stops at the first evaluation where its series has converged, so the same
function judging the finished run says "converged"; a run that reaches its cap first is reported as not
converged (its cap was too short). The scored model is always the run's last one (no checkpoint selection).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefalign.trainers.early_stop import EarlyStopConfig
from prefalign.trainers.early_stop import plateau as criterion


@dataclass
class ConvergenceConfig:
    stop_at_plateau: bool = True
    """Stop each run once its objective has plateaued (run.early_stop of its trainer, with the settings below): the
    stage's length (ppo.steps, offline.epochs, iterative.rounds) is then a cap. False: every run goes its whole length
    and the criterion only judges it afterwards. The factor sweeps always run their whole length (same steps / same
    samples)."""
    rel_tol: float = 0.1
    """Tolerance as a share of the run's total gain on its objective: later improvements smaller than this count as
    flat."""
    abs_tol: float = 1e-3
    """Smallest tolerance (in the objective's units), so a run with no gain at all is flat, not noise."""
    patience: int = 2
    """Evaluations that must follow the plateau point for the run to count as converged (and to stop it)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rel_tol < 1.0 or self.abs_tol < 0 or self.patience < 1:
            raise ValueError("convergence: rel_tol must lie in [0, 1), abs_tol >= 0 and patience >= 1")

    def early_stop(self) -> EarlyStopConfig:
        """The trainers' run.early_stop for this criterion (off unless stop_at_plateau)."""
        return EarlyStopConfig(self.patience if self.stop_at_plateau else 0, self.rel_tol, self.abs_tol)


def plateau(
    points: Sequence[tuple[int, float]], higher_is_better: bool, config: ConvergenceConfig | None = None
) -> dict[str, Any]:
    """The criterion (:func:`prefalign.trainers.early_stop.plateau`) with the study's settings."""
    config = config or ConvergenceConfig()
    return criterion(points, higher_is_better, config.rel_tol, config.abs_tol, config.patience)


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
    """PPO: the validation objective (reward - KL coefficient x KL to the reference) from ``metrics.jsonl``."""
    return {
        "objective": "eval/objective",
        **plateau(logged_series(run_dir / "metrics.jsonl", "eval/objective"), True, config),
    }


def iterative_convergence(run_dir: Path, config: ConvergenceConfig) -> dict[str, Any]:
    """DPO-Iter: the validation objective of the starting model, then of each round's model (``results.json``)."""
    results = json.loads((run_dir / "results.json").read_text())
    points = (results.get("early_stop") or {}).get("validation")
    if not points:
        raise ValueError(f"{run_dir / 'results.json'}: no validation rewards (run with validation_prompts > 0)")
    return {"objective": "eval/objective (round index)", **plateau(points, True, config)}
