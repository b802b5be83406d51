"""The factor sweeps: which row and schedule each point runs."""

from __future__ import annotations

import pytest

from prefalign.config import build_config
from prefalign.studies.comparison.study import PRESETS, StudyConfig
from prefalign.studies.comparison.sweeps import SweepConfig, point_stage, sweep_keys


def test_sweep_points_set_one_factor_and_the_schedule():
    config = build_config(
        StudyConfig,
        overrides={"sweeps": {"ema_rates": [0.0, 0.01], "rollout_batches": [64], "steps": 20}, "ppo": {"steps": 80}},
    )
    keys = sweep_keys(config, [0, 1])
    assert len(keys) == 2 * 2 + 2 * 2  # two rates, one batch in two schedules, two seeds each
    row, stage = point_stage(config, "ema", 0.01, "same_steps")
    assert row == "ppo_ema" and stage.ema_rate == 0.01 and stage.steps == 20
    row, _ = point_stage(config, "ema", 0.0, "same_steps")
    assert row == "ppo_large_batch"  # rate 0: the same row without the EMA
    row, stage = point_stage(config, "batch", 64, "same_samples")
    assert row == "ppo_advnorm" and stage.small_batch_size == 64
    assert stage.steps * 64 == 20 * config.ppo.small_batch_size  # same samples as the small-batch row
    _, stage = point_stage(config, "batch", 64, "same_steps")
    assert stage.steps == 20  # the sweeps' own fixed length, not the main rows' cap (ppo.steps)


def test_the_full_preset_sweeps_and_the_quick_one_does_not():
    full = build_config(StudyConfig, presets=PRESETS, preset="full")
    assert len(full.sweeps.ema_rates) >= 4 and 0.0 in full.sweeps.ema_rates
    assert len(full.sweeps.rollout_batches) >= 3
    assert sweep_keys(StudyConfig(), [0]) == []
    with pytest.raises(ValueError, match="sweeps.testbed"):
        StudyConfig(testbeds=["preference"], sweeps=SweepConfig(testbed="verifiable"))
