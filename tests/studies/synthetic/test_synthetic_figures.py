"""The synthetic study's training-time figure and the two-activation comparison."""

from __future__ import annotations

import dataclasses
import json

import pytest

from prefalign.studies.synthetic.figures import activation_comparison
from prefalign.studies.synthetic.run import SyntheticConfig, run_synthetic

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(seed: int, reference: float, curve: list[float], cells: int) -> dict:
    return {
        "seed": seed,
        "metrics": {
            "reference": {"unseen_mass": reference},
            "dpo": {"unseen_mass": curve[-1], "cells_raised": cells},
            "ppo": {"unseen_mass": 0.0, "cells_raised": 0},
        },
        "unseen_over_training": {"dpo": list(enumerate(curve))},
    }


def test_activations_disagree_when_only_one_raises_uncovered_mass():
    config = {"raised_margin": 0.01}
    tanh = {"config": {**config, "activation": "tanh"}, "per_seed": [_run(0, 0.5, [0.5, 0.2, 0.0], 0)]}
    tanh["per_seed"].append(_run(1, 0.5, [0.5, 0.3, 0.0], 0))
    tanh["per_seed"].append(_run(2, 0.5, [0.5, 0.505, 0.0], 0))
    relu = {"config": {**config, "activation": "relu"}, "per_seed": [_run(0, 0.5, [0.5, 0.7, 0.0], 0)]}
    relu["per_seed"].append(_run(1, 0.5, [0.5, 0.3, 0.1], 2))  # never above the reference, but raises 2 cells
    relu["per_seed"].append(_run(2, 0.5, [0.5, 0.504, 0.0], 0))  # within the margin: no raise under either
    comparison = activation_comparison(tanh, relu)
    assert comparison["disagree"] == [0, 1]
    assert comparison["per_seed"][0]["relu"]["dpo_peak_above_reference"]
    assert not comparison["per_seed"][0]["tanh"]["dpo_peak_above_reference"]
    assert comparison["per_seed"][1]["relu"]["dpo_cells_raised"] == 2


@pytest.mark.slow
def test_compare_activation_writes_both_runs_and_the_side_by_side_figure(tmp_path):
    config = SyntheticConfig(
        seeds=2, dpo_steps=20, reward_steps=20, ppo_iterations=2, quiet=True, output_dir=str(tmp_path / "s")
    )
    results = run_synthetic(dataclasses.replace(config, compare_activation="relu"))
    folder = tmp_path / "s"
    for name in ("figure3.png", "figure4.png", "relu/results.json", "relu/figure3.png"):
        assert (folder / name).exists(), name
    other = json.loads((folder / "relu" / "results.json").read_text())
    assert other["config"]["activation"] == "relu" and "activations" not in other
    comparison = results["activations"]
    assert comparison == activation_comparison(results, other) | {"figure_seed": comparison["figure_seed"]}
    assert comparison["figure_seed"] == (comparison["disagree"] or [0])[0]
    assert [row["seed"] for row in comparison["per_seed"]] == [0, 1]
    # per seed, DPO's table and the uncovered cells are kept for the figures
    assert len(results["per_seed"][0]["dpo_policy"]) == 8 and len(results["per_seed"][0]["unseen"]) == 8
