"""Per-row PPO learning rate and KL coefficient: settings, the tuning grid's points and the report's grid marks."""

from __future__ import annotations

import dataclasses

import pytest

from prefalign.config import ConfigError, build_config
from prefalign.studies.comparison.findings import used_values
from prefalign.studies.comparison.methods import PPOStage
from prefalign.studies.comparison.study import StudyConfig
from prefalign.studies.comparison.tune import with_point


def test_a_row_uses_its_own_values_and_the_others_the_shared_ones():
    stage = PPOStage(actor_learning_rate=2e-5, kl_coef=0.1, row_learning_rates={"ppo_ema": 1e-5}, row_kl_coefs={})
    assert (stage.learning_rate("ppo_ema"), stage.kl("ppo_ema")) == (1e-5, 0.1)
    assert (stage.learning_rate("ppo_baseline"), stage.kl("ppo_baseline")) == (2e-5, 0.1)
    row = stage.for_row("ppo_ema")
    assert (row.actor_learning_rate, row.kl_coef, row.row_learning_rates) == (1e-5, 0.1, {})
    with pytest.raises(ValueError, match="not PPO rows"):
        PPOStage(row_kl_coefs={"dpo": 0.1})
    with pytest.raises(ConfigError, match="not PPO rows"):
        build_config(StudyConfig, overrides={"ppo": {"row_learning_rates": {"ppo_fast": 1e-4}}})


def test_a_grid_point_of_one_row_leaves_the_other_rows_alone():
    config = StudyConfig()
    point = with_point(config, "ppo_ema", 1e-4, 0.05)
    assert (point.ppo.learning_rate("ppo_ema"), point.ppo.kl("ppo_ema")) == (1e-4, 0.05)
    assert point.ppo.learning_rate("ppo_baseline") == config.ppo.learning_rate("ppo_baseline")
    assert point.ppo.kl("ppo_baseline") == config.ppo.kl("ppo_baseline")


def test_the_report_marks_values_outside_the_grid():
    config = StudyConfig()
    ppo = dataclasses.replace(
        config.ppo,
        actor_learning_rate=2e-5,
        kl_coef=0.1,
        row_learning_rates={"ppo_ema": config.tuning.ppo_learning_rates[0]},
        row_kl_coefs={"ppo_ema": config.tuning.ppo_kl_coefs[-1]},
    )
    values = dict(used_values(dataclasses.asdict(dataclasses.replace(config, ppo=ppo)), ["ppo_baseline", "ppo_ema"]))
    assert values["ppo_baseline"].count("not a grid point") == 2
    assert "not a grid point" not in values["ppo_ema"]
