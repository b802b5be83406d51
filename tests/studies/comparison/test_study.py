"""``prefalign study`` end to end at a minimal size: both testbeds, files, tables, caching and reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.config import build_config
from prefalign.studies.comparison.study import PRESETS, QUICK_METHODS, StudyConfig, run_study

MINIMAL = {
    "world": {
        "data": {
            "pretrain_lines": 256,
            "sft_examples": 96,
            "sft_held_out": 8,
            "preference_pairs": 64,
            "preference_held_out": 8,
            "policy_prompts": 48,
            "eval_prompts": 16,
        },
        "model": {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2},
        "pretrain": {"steps": 4, "batch_size": 32},
        "sft": {"epochs": 1.0, "batch_size": 32},
    },
    "seeds": 2,
    "workers": 1,
    "reward_model": {"epochs": 1.0, "batch_size": 32},
    "offline": {"epochs": 1.0, "batch_size": 4, "sft_first_epochs": 1.0, "evaluations": 3},
    "iterative": {"rounds": 1, "samples_per_prompt": 8, "epochs": 1.0, "validation_prompts": 8},
    "ppo": {
        "steps": 2,
        "small_batch_size": 8,
        "large_batch_size": 16,
        "num_minibatches": 2,
        "validation_prompts": 8,
        "evaluations": 2,
    },
    "tuning": {"validation_prompts": 8},
    "evaluation": {"max_new_tokens": 4, "curve_prompts": 8},
    "synthetic_settings": {"seeds": 2, "dpo_steps": 5, "reward_steps": 5, "ppo_iterations": 1, "reference_steps": 5},
    "progress": False,
}


def minimal_config(output_dir: Path, **more) -> StudyConfig:
    return build_config(StudyConfig, overrides={**MINIMAL, "output_dir": str(output_dir), **more})


def without_timings(results: dict) -> dict:
    results = dict(results)
    results.pop("timings")
    results["config"] = {k: v for k, v in results["config"].items() if k not in ("output_dir", "workers")}
    return results


@pytest.mark.slow
def test_study_runs_both_testbeds_and_a_fixed_seed_reproduces_the_results(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE_DIR", str(tmp_path / "cache"))
    sweeps = {"ema_rates": [0.0, 0.1], "rollout_batches": [16], "steps": 2}
    first = run_study(minimal_config(tmp_path / "a", sweeps=sweeps))
    out = tmp_path / "a"
    for name in (
        "report.md",
        "results.json",
        "study.log",
        "console.log",
        "config.yaml",
        "plots/preference_overoptimisation.png",
        "plots/verifiable_overoptimisation.png",
        "plots/verifiable_methods.png",
        "plots/preference_training_curves.png",
        "synthetic/figure1.png",
    ):
        assert (out / name).exists(), name
    assert first["methods"] == QUICK_METHODS and not first["skipped"]
    assert not first["timings"]["world_cached"]
    for testbed in ("preference", "verifiable"):
        tb = first["testbeds"][testbed]
        for method in ["sft", *QUICK_METHODS]:
            stats = tb["summary"][method]["gold/score"]
            assert set(stats) == {"mean", "low", "high", "n"} and stats["n"] == 2
            assert 0.0 <= stats["low"] <= stats["mean"] <= stats["high"] <= 1.0  # clipped to the range
            assert 0.0 <= tb["summary"][method]["pass@5"]["mean"] <= 1.0
        for method in QUICK_METHODS:
            assert tb["convergence"][method]["seeds"] == 2
        # the SFT model is evaluated once: per seed only the seed's reward model's score differs
        sft = [first["per_seed"][str(s)]["testbeds"][testbed]["sft_metrics"] for s in (0, 1)]
        assert {k for k in sft[0] if sft[0][k] != sft[1][k]} <= {"rm/score"} and sft[0]["rm/score"] != sft[1][
            "rm/score"
        ]
        for method in ("dpo_iter", "ppo_baseline", "ppo_ema"):
            points = tb["curves"][method]
            assert points[0]["step"] == 0 and points[0]["kl"]["mean"] == pytest.approx(0.0, abs=1e-6)
            assert len(points) >= 2 and "rm" in points[-1]
    rows = {(r["kind"], r["value"], r["schedule"]): r for r in first["sweeps"]["rows"]}
    assert set(rows) == {
        ("ema", 0.0, "same_steps"),
        ("ema", 0.1, "same_steps"),
        ("batch", 16, "same_steps"),
        ("batch", 16, "same_samples"),
    }
    assert rows[("batch", 16, "same_samples")]["samples"] == 2 * 8  # sweeps.steps x the small batch
    assert rows[("batch", 16, "same_steps")]["samples"] == 2 * 16
    assert rows[("ema", 0.1, "same_steps")]["gold/score"]["n"] == 2
    report = (out / "report.md").read_text()
    assert "[verifiable] Main comparison" in report and "Over-optimisation" in report and "Convergence" in report
    assert "factors swept" in report and "| reference-EMA rate per step | 0.1 | same steps |" in report
    assert (out / "plots" / "sweeps.png").exists()
    # a second run (two worker processes) finds the models in the cache and reproduces every number
    second = run_study(minimal_config(tmp_path / "b", workers=2, synthetic=False))
    assert second["timings"]["world_cached"]
    a = without_timings(json.loads((out / "results.json").read_text()))
    b = without_timings(json.loads((tmp_path / "b" / "results.json").read_text()))
    for key in ("synthetic", "sweeps"):
        a.pop(key), b.pop(key), a["config"].pop(key), b["config"].pop(key)
    assert a == b


@pytest.mark.slow
def test_every_method_stops_at_its_plateau_before_its_cap_and_the_report_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE_DIR", str(tmp_path / "cache"))
    flat = {"patience": 1, "rel_tol": 0.0, "abs_tol": 1e9}  # every change counts as flat: stop at the 2nd evaluation
    config = minimal_config(
        tmp_path / "s",
        seeds=1,
        synthetic=False,
        convergence=flat,
        iterative={**MINIMAL["iterative"], "rounds": 3},
        ppo={**MINIMAL["ppo"], "steps": 6, "evaluations": 3},
    )
    results = run_study(config)
    for testbed in ("preference", "verifiable"):
        conv = results["testbeds"][testbed]["convergence"]
        for method in QUICK_METHODS:
            c = conv[method]
            assert c["stopped_early"] == 1 and c["converged"] == 1 and c["last_step"] < c["cap"], (testbed, method)
        assert conv["ppo_baseline"]["last_step"] == 4 and conv["ppo_baseline"]["cap"] == 6  # evaluations at 2, 4
        assert conv["dpo_iter"]["last_step"] == 1 and conv["dpo_iter"]["cap"] == 3  # the start, then round 1
        run = results["per_seed"]["0"]["testbeds"][testbed]["runs"]["ppo_baseline"]
        assert run["train"]["steps"] == 4 and run["train"]["stopped_early"]
    report = (tmp_path / "s" / "report.md").read_text()
    assert "| PPO baseline | eval/objective |" in report and "4 (4-4) / 6 | 1/1 | 1/1 |" in report


def test_tuning_ties_go_to_the_point_closest_to_the_sft_model():
    from prefalign.studies.comparison.tune import best_point

    points = [
        {"learning_rate": 1e-5, "beta_or_kl": 0.1, "validation_gold": 0.69, "validation_kl": 0.198},
        {"learning_rate": 1e-5, "beta_or_kl": 0.3, "validation_gold": 0.69, "validation_kl": 0.194},
        {"learning_rate": 1e-4, "beta_or_kl": 0.3, "validation_gold": 0.60, "validation_kl": 0.010},
    ]
    assert best_point(points)["beta_or_kl"] == 0.3  # tied on gold: the smaller KL
    points[0]["validation_gold"] = 0.70
    assert best_point(points)["beta_or_kl"] == 0.1  # a higher gold wins whatever its KL


def test_presets_build_and_settings_are_checked(tmp_path):
    quick = build_config(StudyConfig, presets=PRESETS, preset="quick")
    full = build_config(StudyConfig, presets=PRESETS, preset="full")
    assert quick == StudyConfig()
    assert quick.seeds >= 5 and set(quick.testbeds) == {"preference", "verifiable"}
    assert {"dpo", "dpo_iter", "ppo_baseline", "ppo_ema"} <= set(quick.methods)
    assert set(full.methods) > set(quick.methods)
    # the recipes are the presets, written out
    recipes = Path(__file__).resolve().parents[3] / "recipes"
    assert build_config(StudyConfig, yaml_path=recipes / "study_quick.yaml") == quick
    assert build_config(StudyConfig, yaml_path=recipes / "study_full.yaml") == full
    with pytest.raises(ValueError, match="unknown methods"):
        StudyConfig(methods=["dpo", "kto"])
    with pytest.raises(ValueError, match="unknown testbeds"):
        StudyConfig(testbeds=["code"])


@pytest.mark.slow
def test_tuning_scores_every_grid_point_on_the_validation_split(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE_DIR", str(tmp_path / "cache"))
    grid = {
        "run": True,
        "validation_prompts": 8,
        "dpo_learning_rates": [1e-4, 1e-3],
        "dpo_betas": [0.1],
        "ppo_learning_rates": [1e-5],
        "ppo_kl_coefs": [0.1],
    }
    config = minimal_config(tmp_path / "t", tuning=grid, methods=["dpo", "ppo_baseline"])
    results = run_study(config)
    assert {(p["learning_rate"], p["beta_or_kl"]) for p in results["points"]["dpo"]} == {(1e-4, 0.1), (1e-3, 0.1)}
    assert len(results["points"]["ppo_baseline"]) == 1
    best = max(results["points"]["dpo"], key=lambda p: p["validation_gold"])
    assert results["chosen"]["dpo"] == {"learning_rate": best["learning_rate"], "beta_or_kl": best["beta_or_kl"]}
    assert json.loads((tmp_path / "t" / "tuning.json").read_text())["chosen"] == results["chosen"]
    # a rerun reads every finished point back instead of training it again
    (tmp_path / "t" / "tuning" / "dpo-lr0.0001-0.1" / "point.json").write_text(
        '{"validation_gold": 2.0, "validation_kl": 0.5}'
    )
    again = run_study(config)["points"]["dpo"]
    assert [p["validation_gold"] for p in again] == [2.0, results["points"]["dpo"][1]["validation_gold"]]
