"""AlpacaEval's length-controlled win rate: our GLM fit against the ``alpaca-eval`` package's own
computation on the same annotations, and against hand computations where the GLM has a closed form."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from unittest import mock

import numpy as np
import pytest

from prefalign.evaluation.length_controlled import (
    fit_l1_logistic,
    group_folds,
    length_controlled_win_rate,
    win_rate,
)

# scikit-learn 1.8+ warns about the arguments alpaca_eval passes to LogisticRegressionCV
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def synthetic_annotations(n: int = 200, seed: int = 0):
    """Preferences of a judge with a length bias and an instruction-difficulty effect, 10% ties."""
    rng = np.random.default_rng(seed)
    model_len, base_len = rng.integers(50, 3000, n), rng.integers(50, 3000, n)
    difficulty = rng.normal(0, 1, n)
    p = 1 / (1 + np.exp(-(0.8 * np.tanh((model_len - base_len) / 1000) - 0.3 + 0.5 * difficulty)))
    preference = np.where(rng.random(n) < p, 2.0, 1.0)
    preference[rng.random(n) < 0.1] = 1.5
    return preference, model_len, base_len, difficulty


def alpaca_eval_glm():
    """The package's GLM module; ``pkg_resources`` (gone from recent setuptools) is shimmed for its import."""
    if "pkg_resources" not in sys.modules:
        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
        sys.modules["pkg_resources"] = shim
    return pytest.importorskip("alpaca_eval.metrics.glm_winrate")


@pytest.mark.parametrize("glm_name", ["length_controlled_minimal", "length_controlled_noreg"])
def test_lc_win_rate_matches_the_alpaca_eval_package(glm_name, tmp_path):
    pd = pytest.importorskip("pandas")
    glm = alpaca_eval_glm()
    preference, model_len, base_len, difficulty = synthetic_annotations()
    n = len(preference)
    # the package reads instruction difficulty from the hub's df_gamed.csv: hand it a local one instead
    table = tmp_path / "df_gamed.csv"
    pd.DataFrame({"index": np.arange(n), "instruction_difficulty": difficulty, "model": "m"}).to_csv(table, index=False)
    annotations = pd.DataFrame(
        {
            "preference": preference,
            "output_1": ["b" * int(k) for k in base_len],  # output_1: the baseline
            "output_2": ["m" * int(k) for k in model_len],
            "generator_1": "baseline",
            "generator_2": "model",
            "annotator": "judge",
            "index": np.arange(n),
        }
    )
    with mock.patch.object(glm, "hf_hub_download", return_value=str(table)):
        expected = glm.get_length_controlled_winrate(
            annotations, glm_name=glm_name, save_weights_dir=None, is_warn_extreme_changes=False
        )
    ours = length_controlled_win_rate(
        preference, model_len, base_len, difficulty if glm_name == "length_controlled_noreg" else None
    )
    assert ours.length_controlled_win_rate == pytest.approx(expected["length_controlled_winrate"], abs=0.01)
    assert ours.lc_standard_error == pytest.approx(expected["lc_standard_error"], abs=0.01)
    assert win_rate(preference)["win_rate"] == pytest.approx(expected["win_rate"], abs=1e-9)
    assert win_rate(preference)["standard_error"] == pytest.approx(expected["standard_error"], abs=1e-9)


def test_equal_lengths_reduce_to_the_intercept_only_fit():
    """With every length difference 0 the GLM is intercept-only, sigmoid(b) = q for every row, and the
    L1 optimality condition C * n * (q - mean y) = -sign(b) gives q = mean y - 1 / (n C) in closed form."""
    preference = [2.0] * 14 + [1.0] * 4 + [1.5] * 2  # y mean = (14 + 1) / 20 = 0.75
    fit = length_controlled_win_rate(preference, [100] * 20, [100] * 20)
    q = 0.75 - 1 / (20 * fit.c)
    assert fit.length_controlled_win_rate == pytest.approx(100 * q, abs=1e-6)
    assert fit.weights["not_gamed_baseline.astype(float)"] == pytest.approx(np.log(q / (1 - q)), abs=1e-6)
    assert fit.weights["np.tanh(std_delta_len)"] == 0.0


def test_l1_logistic_solves_its_optimality_conditions():
    """At the optimum of ||w||_1 + C * loss: C * grad_j = -sign(w_j) where w_j != 0, |C * grad_j| <= 1 at 0."""
    rng = np.random.default_rng(1)
    x = np.column_stack([np.tanh(rng.normal(size=80)), rng.normal(size=80), np.ones(80)])
    y = rng.random(80)
    for c in (0.05, 1.0, 100.0):
        w = fit_l1_logistic(x, y, c)
        grad = c * x.T @ (1 / (1 + np.exp(-(x @ w))) - y)
        for j in range(3):
            if abs(w[j]) > 1e-9:
                assert grad[j] == pytest.approx(-np.sign(w[j]), abs=1e-5)
            else:
                assert abs(grad[j]) <= 1 + 1e-6


def test_group_folds_are_balanced_and_cover_every_group():
    folds = group_folds(23)
    assert sorted(np.bincount(folds).tolist()) == [4, 4, 5, 5, 5]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 10 annotations"):
        length_controlled_win_rate([2.0] * 5, [1] * 5, [1] * 5)
    with pytest.raises(ValueError, match="3 preferences, 2 model lengths"):
        length_controlled_win_rate([2.0] * 3, [1] * 2, [1] * 3)
    with pytest.raises(ValueError, match=r"in \[1, 2\]"):
        win_rate([3.0])
