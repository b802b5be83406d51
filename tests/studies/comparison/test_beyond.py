"""The study's rows beyond the two papers (GRPO, RLOO, PPO on a UWO / WCO reward-model ensemble) at a minimal size:
full preset only, the ensemble rows in the preference testbed only, and the ensemble over-optimisation plot."""

from __future__ import annotations

import json

import pytest
from tests.studies.comparison.test_study import minimal_config

from prefalign.config import build_config
from prefalign.rewards.ensemble import ensemble_members
from prefalign.studies.comparison.beyond import CRITIC_FREE_ROWS, ENSEMBLE_ROWS
from prefalign.studies.comparison.study import PRESETS, QUICK_METHODS, StudyConfig, run_study

NEW_ROWS = [*CRITIC_FREE_ROWS, *ENSEMBLE_ROWS]


def test_the_new_rows_are_in_the_full_preset_only():
    quick = build_config(StudyConfig, presets=PRESETS, preset="quick")
    full = build_config(StudyConfig, presets=PRESETS, preset="full")
    assert not set(NEW_ROWS) & set(quick.methods) and quick.methods == QUICK_METHODS
    assert set(NEW_ROWS) <= set(full.methods)


@pytest.mark.slow
def test_grpo_rloo_and_ensemble_rows_run_where_they_apply(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE_DIR", str(tmp_path / "cache"))
    methods = ["ppo_ema", *NEW_ROWS]
    ppo = {"steps": 2, "small_batch_size": 8, "large_batch_size": 16, "num_minibatches": 2}
    ppo |= {"validation_prompts": 8, "evaluations": 2, "ensemble_members": 2}
    ppo |= {"value_normalization": True, "value_normalization_beta": 0.99995}  # the full preset's PPO rows
    config = minimal_config(tmp_path / "s", methods=methods, seeds=1, synthetic=False, ppo=ppo)
    results = run_study(config)
    preference, verifiable = (results["testbeds"][t]["summary"] for t in ("preference", "verifiable"))
    assert set(methods) <= set(preference)
    assert set(CRITIC_FREE_ROWS) <= set(verifiable) and not set(ENSEMBLE_ROWS) & set(verifiable)
    runs = results["per_seed"]["0"]["testbeds"]
    for testbed in ("preference", "verifiable"):
        for method, estimator in CRITIC_FREE_ROWS.items():
            train = runs[testbed]["runs"][method]["train"]
            # no critic, so the preset's value normalisation is off in these rows only
            assert train["advantage_estimator"] == estimator and train["value_normalization"] is False
        train = runs[testbed]["runs"]["ppo_ema"]["train"]
        assert train["advantage_estimator"] == "gae" and train["value_normalization"] is True
    out = tmp_path / "s"
    # the seed's ensemble: its own reward model and one more member; the PPO rows read it with their rule
    members = ensemble_members(out / "seed-0" / "reward_ensemble")
    assert [p.resolve() for p in members][0] == (out / "seed-0" / "reward_model" / "model").resolve()
    for method, rule in ENSEMBLE_ROWS.items():
        config_yaml = (out / runs["preference"]["runs"][method]["run_dir"] / "config.yaml").read_text()
        assert "reward_ensemble" in config_yaml and f"ensemble: {rule}" in config_yaml
    logged = (out / runs["verifiable"]["runs"]["ppo_grpo"]["run_dir"] / "metrics.jsonl").read_text().splitlines()
    assert logged and all("value_loss" not in json.loads(row) for row in logged)  # no critic trained
    assert (out / "plots" / "preference_ensemble_overoptimisation.png").exists()
    assert not (out / "plots" / "verifiable_ensemble_overoptimisation.png").exists()
    differences = results["testbeds"]["preference"]["differences"]
    assert {"ppo_grpo - ppo_ema", "ppo_rloo - ppo_ema", "ppo_uwo - ppo_ema", "ppo_wco - ppo_ema"} <= set(differences)
    report = (out / "report.md").read_text()
    assert "PPO, UWO ensemble reward" in report and "GRPO (no critic)" in report
    assert json.loads((out / "results.json").read_text())["methods"] == methods
