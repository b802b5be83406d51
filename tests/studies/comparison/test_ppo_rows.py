"""Per-row PPO learning rate and KL coefficient: settings, the tuning grid's points and the report's grid marks."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

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


def _world_shape():
    """What ppo_row_config reads of a tiny world: the SFT folder and the model's context length."""
    from prefalign.models.load import ModelConfig

    return SimpleNamespace(model_config=lambda which="sft": ModelConfig(name_or_path="sft"), config=StudyConfig().world)


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_study_rows_carry_xu_table3_factors_and_the_full_preset_value_normalisation(tmp_path, preset):
    from prefalign.studies.comparison.methods import PPO_ROWS
    from prefalign.studies.comparison.online import ppo_row_config
    from prefalign.studies.comparison.study import PRESETS
    from prefalign.trainers.ppo.presets import TABLE3_ROWS

    config = build_config(StudyConfig, presets=PRESETS, preset=preset)
    table3 = ["ppo_baseline", "ppo_advnorm", "ppo_large_batch", "ppo_ema"]  # Xu et al.'s rows, in order
    xu_rows = dict(zip(table3, TABLE3_ROWS.values()))
    for method in table3:
        row = PPO_ROWS[method]
        ppo = ppo_row_config(
            _world_shape(),
            config.ppo.for_row(method),
            "verifiable",
            None,
            tmp_path / "p.jsonl",
            tmp_path,
            row,
            0,
            False,
            1,
            4,
        )
        xu = xu_rows[method]
        assert ppo.ppo.advantage_normalization == xu["ppo"]["advantage_normalization"]
        assert ppo.ppo.reference_ema == xu["ppo"]["reference_ema"]
        large = xu["batch"]["rollout_batch_size"] > TABLE3_ROWS["table3-baseline"]["batch"]["rollout_batch_size"]
        assert ppo.batch.rollout_batch_size == (config.ppo.large_batch_size if large else config.ppo.small_batch_size)
        assert ppo.ppo.value_normalization == (preset == "full")
        assert (ppo.actor_optim.learning_rate, ppo.kl.coef) == (config.ppo.learning_rate(method), config.ppo.kl(method))
    if preset == "full":
        assert config.ppo.value_normalization_beta == 0.99995


def test_every_ema_sweep_point_runs_at_the_all_factors_rows_values():
    from prefalign.studies.comparison.sweeps import point_stage

    config = StudyConfig()
    ppo = dataclasses.replace(config.ppo, row_learning_rates={"ppo_ema": 3e-5}, row_kl_coefs={"ppo_ema": 0.05})
    config = dataclasses.replace(config, ppo=ppo)
    for rate in (0.0, 0.01):
        method, stage = point_stage(config, "ema", rate, "same_steps")
        assert (stage.learning_rate(method), stage.kl(method)) == (3e-5, 0.05)
