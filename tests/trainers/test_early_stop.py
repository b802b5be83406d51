"""run.early_stop: the plateau criterion, the watch a trainer keeps, and the DPO and PPO trainers stopping on it."""

from __future__ import annotations

import json

import pytest

from prefalign.config import from_dict
from prefalign.data.schema import PreferencePair, user_prompt
from prefalign.trainers.early_stop import EarlyStopConfig, PlateauWatch, check_early_stop, plateau

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_watch_stops_once_patience_evaluations_follow_the_plateau():
    watch = PlateauWatch(EarlyStopConfig(patience=2, rel_tol=0.1), "eval/loss", higher_is_better=False)
    # gain so far 0.6 -> tolerance 0.06: after 0.3 nothing improves by more than that
    decisions = [watch.update(s, v) for s, v in [(1, 0.9), (2, 0.5), (3, 0.3), (4, 0.28), (5, 0.31)]]
    assert decisions == [False, False, False, False, True]
    assert watch.summary(True) == {
        "objective": "eval/loss",
        "stopped_early": True,
        "plateau_step": 3,
        "evaluations": 5,
    }


def test_a_series_still_improving_never_stops_and_patience_zero_never_stops():
    rising = PlateauWatch(EarlyStopConfig(patience=2), "eval/reward", higher_is_better=True)
    assert not any(rising.update(s, float(s)) for s in range(10))
    off = PlateauWatch(EarlyStopConfig(patience=0), "eval/reward", higher_is_better=True)
    assert not any(off.update(s, 1.0) for s in range(10))
    assert off.judge()["converged"]  # flat, so judged converged after the fact, but never stopped


def test_the_watch_reads_only_its_key_and_restores_from_the_log(tmp_path):
    watch = PlateauWatch(EarlyStopConfig(patience=1), "eval/objective", higher_is_better=True)
    assert not watch.update_from({"loss": 1.0}, 1) and watch.points == []
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"step": 2, "eval/objective": 0.5},
                {"step": 3},
                {"step": 4, "eval/objective": 0.7},
                {"step": 6, "eval/objective": 0.9},
            ]
        )
    )
    watch.restore(log, up_to_step=4)
    assert watch.points == [(2, 0.5), (4, 0.7)]


def test_settings_are_checked_with_the_field_named():
    with pytest.raises(ValueError, match="run.early_stop.patience"):
        EarlyStopConfig(patience=-1)
    with pytest.raises(ValueError, match="run.early_stop.rel_tol"):
        EarlyStopConfig(rel_tol=1.0)
    with pytest.raises(ValueError, match="run.eval_every > 0"):
        check_early_stop(EarlyStopConfig(patience=2), 0, True, "")
    with pytest.raises(ValueError, match="held-out data: no held-out pairs"):
        check_early_stop(EarlyStopConfig(patience=2), 5, False, "no held-out pairs")
    check_early_stop(EarlyStopConfig(patience=0), 0, False, "")  # off: nothing to check


def _pairs(n, offset=0):
    return [
        PreferencePair(
            user_prompt(f"question {i}: " + "tell me " * (i % 4)),
            "yes indeed " * (1 + i % 3),
            "0123 " * (1 + (i * 7) % 5),
        )
        for i in range(offset, offset + n)
    ]


def _dpo_config(tmp_path, name, early_stop, epochs=20.0):
    from prefalign.trainers.preference.dpo_config import DPOConfig

    return from_dict(
        DPOConfig,
        {
            "model": {"name_or_path": "tiny-random"},
            "data": {"max_length": 96},
            "batch": {"global_batch_size": 8, "micro_batch_size": 8, "epochs": epochs},
            "optim": {"learning_rate": 3e-3, "warmup_ratio": 0.0},
            "run": {
                "output_dir": str(tmp_path / name),
                "progress": False,
                "tensorboard": False,
                "eval_every": 2,
                "early_stop": early_stop,
            },
        },
    )


def test_dpo_stops_when_its_held_out_loss_plateaus(tmp_path):
    from prefalign.trainers.preference.dpo import run_dpo

    # 16 pairs, 20 epochs: 40 planned steps; the held-out loss of this easy task falls, then flattens
    results = run_dpo(_dpo_config(tmp_path, "stop", {"patience": 3, "rel_tol": 0.1}), (_pairs(16), _pairs(8, 100)))
    assert results["planned_steps"] == 40 and results["steps"] < 40
    assert results["early_stop"]["stopped_early"] and results["early_stop"]["objective"] == "eval/loss"
    rows = [json.loads(line) for line in (tmp_path / "stop" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == results["steps"]
    judged = plateau([(r["step"], r["eval/loss"]) for r in rows if "eval/loss" in r], False, 0.1, 1e-3, 3)
    assert judged["converged"] and judged["evaluations_after_plateau"] == 3  # stopped at the first such evaluation
    assert results["eval/loss"] == pytest.approx(rows[-1]["eval/loss"])
    assert (tmp_path / "stop" / "model" / "config.json").exists()
    # the same run without early stopping goes on to its 40th step
    full = run_dpo(_dpo_config(tmp_path, "full", {"patience": 0}), (_pairs(16), _pairs(8, 100)))
    assert full["steps"] == 40 and not full["early_stop"]["stopped_early"]


def test_dpo_refuses_early_stopping_without_held_out_pairs(tmp_path):
    from prefalign.trainers.preference.dpo import run_dpo

    with pytest.raises(ValueError, match="held-out"):
        run_dpo(_dpo_config(tmp_path, "none", {"patience": 2}, epochs=1.0), (_pairs(16), []))


def test_ppo_logs_its_objective_and_stops_on_a_flat_one(tmp_path):
    from prefalign.trainers.ppo.trainer import run_ppo
    from tests.trainers.ppo.helpers import tiny_config

    flat = {"patience": 2, "rel_tol": 0.0, "abs_tol": 1e9}  # every change counts as flat: stop at the 3rd evaluation
    cfg = tiny_config(tmp_path / "ppo", {"batch": {"steps": 12}, "run": {"eval_every": 2, "early_stop": flat}})
    results = run_ppo(cfg)
    assert results["steps"] == 6 and results["planned_steps"] == 12 and results["finished"]
    assert results["early_stop"] == {
        "objective": "eval/objective",
        "stopped_early": True,
        "plateau_step": 2,
        "evaluations": 3,
    }
    assert (tmp_path / "ppo" / "model" / "config.json").exists()
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/objective" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    for r in evals:
        assert r["eval/objective"] == pytest.approx(r["eval/reward"] - r["kl/coef"] * r["eval/kl"])
    assert evals[0]["eval/kl"] != 0.0  # the policy has moved from its reference after two updates
