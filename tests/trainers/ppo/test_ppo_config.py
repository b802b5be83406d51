"""PPO configuration: the papers' presets, Table 3 rows, validation, recipes, and the ablation command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.cli import main
from prefalign.config import ConfigError, build_config, load_yaml
from prefalign.trainers.ppo import ablation as ppo_ablation
from prefalign.trainers.ppo.ablation import PPOAblationConfig, row_config
from prefalign.trainers.ppo.config import PRESETS, PPOConfig

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def preset(name: str, **overrides) -> PPOConfig:
    return build_config(PPOConfig, presets=PRESETS, preset=name, overrides=overrides)


def test_xu_preset_has_the_papers_settings():
    c = preset("xu")
    assert (c.actor_optim.learning_rate, c.critic_optim.learning_rate) == (1e-5, 5e-6)
    assert (c.sampling.temperature, c.sampling.top_k) == (1.0, 200)
    assert c.reward.clip == 20.0 and c.kl.coef == 0.1 and (c.ppo.gamma, c.ppo.lam) == (1.0, 1.0)
    assert c.ppo.clip_range == 0.2 and c.ppo.advantage_normalization and c.ppo.reference_ema
    assert (c.batch.rollout_batch_size, c.batch.num_minibatches) == (512, 4)


def test_ivison_preset_has_the_papers_settings():
    c = preset("ivison")
    assert c.sampling.temperature == 0.7 and c.kl.coef == 0.05 and (c.ppo.gamma, c.ppo.lam) == (1.0, 0.95)
    assert c.critic_init == "reward" and c.reward.truncated_reward == -10.0
    assert not c.reward.normalize and c.ppo.sft_coef == 0.0  # both off by default


def test_table3_presets_add_one_key_factor_per_row():
    rows = [preset(f"table3-{n}") for n in ("baseline", "advnorm", "largebatch", "ema")]
    factors = [(r.ppo.advantage_normalization, r.batch.rollout_batch_size, r.ppo.reference_ema) for r in rows]
    assert factors == [(False, 64, False), (True, 64, False), (True, 512, False), (True, 512, True)]


def test_invalid_settings_are_rejected_with_the_field_named():
    with pytest.raises(ConfigError, match="rollout_batch_size"):
        preset("tiny", batch={"rollout_batch_size": 15})
    with pytest.raises(ConfigError, match="temperature"):
        preset("tiny", sampling={"temperature": 0.0})
    with pytest.raises(ConfigError, match="critic_init=reward"):
        preset("tiny", critic_init="reward")
    with pytest.raises(ConfigError, match="estimator"):
        preset("tiny", kl={"estimator": "k9"})
    with pytest.raises(ConfigError, match="reward.kind"):
        preset("tiny", reward={"kind": "oracle"})


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("ppo_*.yaml")))
def test_recipes_load(recipe):
    data = load_yaml(RECIPES / recipe)
    if recipe.startswith("ppo_ablation"):
        config = build_config(
            PPOAblationConfig,
            presets=ppo_ablation.PRESETS,
            preset="xu" if "hh" in recipe else None,
            yaml_path=RECIPES / recipe,
        )
        assert config.large_batch_size > config.small_batch_size
    else:
        name = "xu" if "xu" in recipe else "ivison" if "ivison" in recipe else None
        config = build_config(PPOConfig, presets=PRESETS, preset=name, yaml_path=RECIPES / recipe)
        assert config.batch.steps >= 1
    assert data


def test_ablation_rows_change_only_the_key_factors(tmp_path):
    config = build_config(
        PPOAblationConfig, presets=ppo_ablation.PRESETS, preset="tiny", overrides={"output_dir": str(tmp_path)}
    )
    rows = [row_config(config, r) for r in config.rows]
    assert [r.batch.rollout_batch_size for r in rows] == [8, 8, 32, 32]
    assert [r.ppo.advantage_normalization for r in rows] == [False, True, True, True]
    assert [r.ppo.reference_ema for r in rows] == [False, False, False, True]
    assert len({r.run.output_dir for r in rows}) == 4
    assert all(r.kl == config.base.kl and r.sampling == config.base.sampling for r in rows)


def test_ablation_command_prints_the_table_and_resumes_finished_rows(tmp_path, capsys, monkeypatch):
    argv = [
        "ppo-ablation",
        "--preset",
        "tiny",
        "--output_dir",
        str(tmp_path),
        "--base.batch.steps",
        "1",
        "--base.run.threads",
        "1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for label in ("baseline", "+adv. norm", "+large batch", "+ref. EMA", "best eval"):
        assert label in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["row"] for r in results["rows"]] == list(ppo_ablation.ROWS)
    assert all(isinstance(r["best_eval_reward"], float) for r in results["rows"])

    def must_not_run(config):
        raise AssertionError("a finished row was run again")

    monkeypatch.setattr(ppo_ablation, "run_ppo", must_not_run)
    assert main(argv) == 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
