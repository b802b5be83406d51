"""The plateau criterion, computed from a run's own log."""

from __future__ import annotations

import json

import pytest

from prefalign.studies.comparison.convergence import (
    ConvergenceConfig,
    iterative_convergence,
    offline_convergence,
    plateau,
    ppo_convergence,
)


def test_a_rising_then_flat_series_plateaus_where_it_stops_rising():
    points = [(0, 0.0), (10, 0.5), (20, 0.95), (30, 1.0), (40, 1.01), (50, 0.99), (60, 1.005)]
    out = plateau(points, True, ConvergenceConfig(rel_tol=0.1, patience=2))
    # gain 1.01, tolerance 0.101: after step 20 (best 0.95) nothing improves by more than 0.101
    assert out["plateau_step"] == 20 and out["evaluations_after_plateau"] == 4 and out["converged"]
    assert out["best"] == pytest.approx(1.01) and out["final"] == pytest.approx(1.005)


def test_a_series_still_improving_at_the_end_has_not_converged():
    out = plateau([(s, float(s)) for s in range(0, 60, 10)], True, ConvergenceConfig(rel_tol=0.1, patience=2))
    assert out["plateau_step"] == 50 and not out["converged"]


def test_lower_is_better_for_a_loss():
    points = [(1, 0.69), (2, 0.60), (3, 0.55), (4, 0.549), (5, 0.551), (6, 0.548)]
    out = plateau(points, False, ConvergenceConfig(rel_tol=0.1, patience=2))
    assert out["plateau_step"] == 3 and out["converged"] and out["best"] == pytest.approx(0.548)


def test_no_finite_value_is_an_error():
    with pytest.raises(ValueError, match="no finite evaluation"):
        plateau([(1, float("nan"))], True)


def test_the_criterion_reads_the_trainers_own_logs(tmp_path):
    rows = [{"step": s, "loss": 1.0} for s in range(1, 7)]
    for row, value in zip(rows[1::2], (0.69, 0.6, 0.6)):
        row["eval/loss"] = value
        row["eval/reward"] = 5.0  # PPO's raw validation reward is not its objective: never read
        row["eval/objective"] = -value
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    off = offline_convergence(tmp_path, ConvergenceConfig(patience=1))
    assert off["objective"] == "eval/loss" and off["plateau_step"] == 4 and off["converged"]
    ppo = ppo_convergence(tmp_path, ConvergenceConfig(patience=1))
    assert ppo["objective"] == "eval/objective" and ppo["plateau_step"] == 4 and ppo["best"] == -0.6
    # DPO-Iter: the validation rewards its trainer recorded (the starting model, then each round)
    (tmp_path / "results.json").write_text('{"early_stop": {"validation": [[0, 0.1], [1, 0.5], [2, 0.9]]}}')
    it = iterative_convergence(tmp_path, ConvergenceConfig(patience=1))
    assert it["evaluations"] == 3 and it["plateau_step"] == 2 and not it["converged"]
    (tmp_path / "results.json").write_text('{"rounds": []}')
    with pytest.raises(ValueError, match="validation_prompts > 0"):
        iterative_convergence(tmp_path, ConvergenceConfig())
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        offline_convergence(tmp_path, ConvergenceConfig())


def test_the_study_criterion_is_the_trainers_early_stop():
    assert ConvergenceConfig(patience=3, rel_tol=0.2, abs_tol=0.01).early_stop().patience == 3
    off = ConvergenceConfig(stop_at_plateau=False, patience=3).early_stop()
    assert off.patience == 0 and not off.enabled
