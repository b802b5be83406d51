"""Ivison et al.'s factor block: settings, the generic prompts, the weaker generator, and a minimal-size run."""

from __future__ import annotations

import json
import math

import pytest
from tests.studies.comparison.test_study import MINIMAL, minimal_config

from prefalign.config import build_config
from prefalign.studies.comparison import ivison
from prefalign.studies.comparison.study import PRESETS, StudyConfig, run_study
from prefalign.studies.comparison.tiny_world.data import WorldDataConfig, preference_pairs


def test_only_the_full_preset_runs_the_block_and_bad_settings_are_named():
    assert build_config(StudyConfig, presets=PRESETS, preset="full").ivison.run
    assert not StudyConfig().ivison.run and ivison.keys(StudyConfig(), [0, 1]) == []
    with pytest.raises(ValueError, match="generic_operations"):
        ivison.IvisonConfig(generic_operations=["divide"])
    with pytest.raises(ValueError, match="weak_correct_rate"):
        ivison.IvisonConfig(weak_correct_rate=1.5)
    with pytest.raises(ValueError, match="ppo_ema"):
        ivison.check(StudyConfig(methods=["dpo"], ivison=ivison.IvisonConfig(run=True)))
    with pytest.raises(ValueError, match="num_layers"):  # the world's model has 2 layers by default
        ivison.check(StudyConfig(methods=["dpo", "ppo_ema"], ivison=ivison.IvisonConfig(run=True, small_rm_layers=2)))


def test_the_weaker_generator_gives_worse_chosen_responses():
    config = WorldDataConfig(preference_pairs=400)
    weak = WorldDataConfig(preference_pairs=400, preference_correct_rate=0.2)
    standard = ivison.chosen_gold(preference_pairs(config, 400, "preference"))
    assert ivison.chosen_gold(preference_pairs(weak, 400, "preference")) < standard - 0.05


def _delta(rows, reference):
    return [a - b for a, b in zip(rows, reference)]


def test_table_pairs_each_row_with_its_reference_by_seed():
    config = StudyConfig(methods=["dpo", "ppo_ema"], ivison=ivison.IvisonConfig(run=True))
    golds = {"dpo": [0.5, 0.7, 0.6], "ppo_ema": [0.4, 0.9, 0.65]}
    own = {"weak_data": [0.3, 0.6, 0.2], "small_rm": [0.35, 0.5, 0.7], "generic_prompts": [0.45, 0.8, 0.1]}
    per_seed = {
        s: {
            "reward_model": {"eval/accuracy": 0.7 + 0.01 * s},
            "testbeds": {"preference": {"runs": {m: {"metrics": {"gold/score": g[s]}} for m, g in golds.items()}}},
        }
        for s in range(3)
    }
    extra = {"chosen_gold": 0.4, "standard_chosen_gold": 0.8, "parameters": 10, "standard_parameters": 20}
    variants = {
        v: {s: {"gold": g[s], **extra, "reward_model": {"eval/accuracy": 0.6}} for s in range(3)}
        for v, g in own.items()
    }
    rows = {r["factor"]: r for r in ivison.table(config, per_seed, variants)["rows"]}
    assert rows["base"]["gold_per_seed"] == golds["dpo"] and rows["algorithm"]["gold_per_seed"] == golds["ppo_ema"]
    assert rows["preference data"]["delta_vs_base_per_seed"] == pytest.approx([-0.2, -0.1, -0.4])
    assert rows["algorithm"]["delta_vs_base_per_seed"] == pytest.approx([-0.1, 0.2, 0.05])
    assert rows["reward-model size"]["delta_vs_base_per_seed"] == pytest.approx([-0.15, -0.2, 0.1])
    assert rows["reward-model size"]["delta_vs_reference_per_seed"] == pytest.approx([-0.05, -0.4, 0.05])
    assert rows["policy prompts"]["delta_vs_reference_per_seed"] == pytest.approx([0.05, -0.1, -0.55])
    delta = rows["policy prompts"]["delta_vs_reference"]
    assert delta["mean"] == pytest.approx(-0.2) and delta["low"] < -0.2 < delta["high"] and delta["n"] == 3
    assert rows["preference data"]["gold"]["mean"] == pytest.approx(1.1 / 3)
    ranks = {f: rows[f]["rank"] for f in ("preference data", "policy prompts", "reward-model size", "algorithm")}
    assert ranks == {"preference data": 1, "policy prompts": 2, "reward-model size": 3, "algorithm": 4}
    assert "rank" not in rows["base"]
    table = ivison.rows({"ivison": {"rows": list(rows.values())}})
    assert [r[0] for r in table] == list(rows) and table[0][3] == "-" and table[1][5] == "1"


@pytest.mark.slow
def test_minimal_block_deltas_are_the_paired_differences_of_its_rows(tmp_path):
    world = {**MINIMAL["world"], "model": {**MINIMAL["world"]["model"], "num_layers": 2}}
    config = minimal_config(
        tmp_path / "iv",
        world=world,
        methods=["dpo", "ppo_ema"],
        testbeds=["preference"],
        synthetic=False,
        ivison={"run": True, "small_rm_layers": 1},
    )
    run_study(config)
    results = json.loads((tmp_path / "iv" / "results.json").read_text())
    block = results["ivison"]
    rows = {r["factor"]: r for r in block["rows"]}
    assert list(rows) == ["base", "preference data", "algorithm", "reward-model size", "policy prompts"]
    per_seed = results["per_seed"]
    study_gold = [per_seed[str(s)]["testbeds"]["preference"]["runs"] for s in block["seeds"]]
    assert rows["base"]["gold_per_seed"] == [r["dpo"]["metrics"]["gold/score"] for r in study_gold]
    assert rows["algorithm"]["gold_per_seed"] == [r["ppo_ema"]["metrics"]["gold/score"] for r in study_gold]
    base, ppo = rows["base"]["gold_per_seed"], rows["algorithm"]["gold_per_seed"]
    references = {"preference data": base, "algorithm": base, "reward-model size": ppo, "policy prompts": ppo}
    for factor, reference in references.items():
        row = rows[factor]
        assert len(row["gold_per_seed"]) == 2
        assert row["delta_vs_base_per_seed"] == pytest.approx(_delta(row["gold_per_seed"], base))
        assert row["delta_vs_reference_per_seed"] == pytest.approx(_delta(row["gold_per_seed"], reference))
        mean = sum(row["delta_vs_base_per_seed"]) / 2
        assert row["delta_vs_base"]["mean"] == pytest.approx(mean) and row["delta_vs_base"]["n"] == 2
        assert row["delta_vs_base"]["low"] <= mean <= row["delta_vs_base"]["high"]
        assert row["gold"]["mean"] == pytest.approx(sum(row["gold_per_seed"]) / 2)
    assert rows["base"]["delta_vs_base"] is None
    assert sorted(r["rank"] for f, r in rows.items() if f != "base") == [1, 2, 3, 4]
    assert block["data_quality"]["weak_chosen_gold"] < block["data_quality"]["standard_chosen_gold"]
    sizes = block["reward_models"]
    assert 0 < sizes["small_parameters"] < sizes["standard_parameters"]
    assert not math.isnan(sizes["small_accuracy"]["mean"])
    generic = (tmp_path / "iv" / "seed-0" / "ivison" / "generic_prompts" / "generic_prompts.jsonl").read_text()
    operations = {json.loads(line)["prompt"].split()[0] for line in generic.splitlines()}
    assert operations <= {"sort", "reverse"}
    report = (tmp_path / "iv" / "report.md").read_text()
    assert ivison.TITLE in report and "reward-model size" in report
