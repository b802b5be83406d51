"""``prefalign study`` end to end at a minimal size: files, tables, caching and reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.config import build_config
from prefalign.studies.comparison.methods import METHODS
from prefalign.studies.comparison.study import PRESETS, StudyConfig, run_study

MINIMAL = {
    "world": {
        "data": {
            "pretrain_lines": 256,
            "sft_examples": 64,
            "sft_held_out": 8,
            "preference_pairs": 64,
            "preference_held_out": 8,
            "policy_prompts": 40,
            "eval_prompts": 16,
        },
        "model": {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2},
        "pretrain": {"steps": 4, "batch_size": 32},
        "sft": {"epochs": 1.0, "batch_size": 32},
    },
    "seeds": 2,
    "reward_model": {"epochs": 1.0, "batch_size": 32},
    "offline": {"epochs": 1.0, "batch_size": 16, "sft_first_epochs": 1.0},
    "iterative": {"rounds": 1, "samples_per_prompt": 4, "epochs": 1.0},
    "ppo": {"steps": 1, "small_batch_size": 8, "large_batch_size": 16, "num_minibatches": 2, "validation_prompts": 8},
    "evaluation": {"max_new_tokens": 4},
    "synthetic_settings": {"seeds": 2, "dpo_steps": 5, "reward_steps": 5, "ppo_iterations": 1, "reference_steps": 5},
    "progress": False,
}


def minimal_config(output_dir: Path) -> StudyConfig:
    return build_config(StudyConfig, overrides={**MINIMAL, "output_dir": str(output_dir)})


def without_timings(results: dict) -> dict:
    results = dict(results)
    results.pop("timings")
    results["config"] = {k: v for k, v in results["config"].items() if k != "output_dir"}
    return results


@pytest.mark.slow
def test_study_runs_every_method_and_a_fixed_seed_reproduces_the_results(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first = run_study(minimal_config(tmp_path / "a"))
    out = tmp_path / "a"
    for name in (
        "report.md",
        "results.json",
        "study.log",
        "console.log",
        "config.yaml",
        "plots/training_curves.png",
        "plots/gold_vs_kl.png",
        "plots/methods.png",
        "synthetic/figure1.png",
    ):
        assert (out / name).exists(), name
    assert first["methods"] == list(METHODS) and not first["skipped"]
    assert not first["timings"]["world_cached"]
    for method in ["sft", *METHODS]:
        stats = first["summary"][method]
        assert 0.0 <= stats["gold/score"]["mean"] <= 1.0 and stats["gold/score"]["n"] == 2
    report = (out / "report.md").read_text()
    assert "PPO key factors" in report and "DPO-Iter" in report and "Synthetic study" in report
    # the second run finds the pre-trained and SFT models in the cache and reproduces every number
    second = run_study(minimal_config(tmp_path / "b"))
    assert second["timings"]["world_cached"]
    on_disk = json.loads((tmp_path / "b" / "results.json").read_text())
    assert without_timings(on_disk) == without_timings(json.loads((out / "results.json").read_text()))


def test_presets_build_and_methods_are_checked(tmp_path):
    quick = build_config(StudyConfig, presets=PRESETS, preset="quick")
    full = build_config(StudyConfig, presets=PRESETS, preset="full")
    assert quick == StudyConfig()
    assert full.seeds > quick.seeds and full.ppo.steps > quick.ppo.steps
    # the recipes are the presets, written out
    recipes = Path(__file__).resolve().parents[3] / "recipes"
    assert build_config(StudyConfig, yaml_path=recipes / "study_quick.yaml") == quick
    assert build_config(StudyConfig, yaml_path=recipes / "study_full.yaml") == full
    with pytest.raises(ValueError, match="unknown methods"):
        StudyConfig(methods=["dpo", "kto"])
