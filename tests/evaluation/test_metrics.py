"""pass@k and n@k against brute-force enumeration; preference accuracy; confidence intervals."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from prefalign.evaluation.metrics import mean_ci, mean_pass_at_k, n_at_k, n_at_k_single, pass_at_k, preference_accuracy


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (c correct) that hold a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration_and_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = brute_pass_at_k(n, c, k)
            closed = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
            assert closed == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(2000, 1000) overflows a float; the product form does not.
    assert pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)
    assert pass_at_k(2000, 3, 1000) == pytest.approx(1 - math.comb(1997, 1000) / math.comb(2000, 1000))
    assert pass_at_k(1000, 0, 100) == 0.0 and pass_at_k(1000, 950, 100) == 1.0


def test_pass_at_1_is_the_fraction_correct_and_inputs_are_checked():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert mean_pass_at_k([10, 4], [3, 1], 1) == pytest.approx((0.3 + 0.25) / 2)
    for bad in [(5, 6, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def brute_n_at_k(public: list[bool], hidden: list[bool], n: int, k: int) -> float:
    """Average of n_at_k_single over every ordered draw of k of the samples."""
    draws = list(itertools.permutations(range(len(public)), k))
    solved = sum(n_at_k_single([public[i] for i in d], [hidden[i] for i in d], n) for d in draws)
    return solved / len(draws)


def test_n_at_k_single_submits_the_first_n_public_passers():
    public = [False, True, True, True, False]
    hidden = [True, False, False, True, True]  # the hidden-correct ones fail public, or come third
    assert n_at_k_single(public, hidden, 2) is False
    assert n_at_k_single(public, hidden, 3) is True
    assert n_at_k_single([False, False], [True, True], 10) is False  # nothing passes public: nothing submitted


@pytest.mark.parametrize("seed", range(6))
def test_n_at_k_matches_enumeration_of_draws(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 7))
    public = [bool(x) for x in rng.random(size) < 0.6]
    hidden = [
        bool(p and x) or bool(not p and y) for p, x, y in zip(public, rng.random(size) < 0.5, rng.random(size) < 0.3)
    ]
    for k in range(1, size + 1):
        for n in range(1, k + 1):
            assert n_at_k(public, hidden, n, k) == pytest.approx(brute_n_at_k(public, hidden, n, k), abs=1e-12)


def test_n_at_k_special_cases():
    public, hidden = [True] * 6 + [False] * 4, [True] + [False] * 9
    assert n_at_k(public, hidden, n=10, k=10) == 1.0  # all six passers submitted
    assert n_at_k(public, hidden, n=1, k=10) == pytest.approx(1 / 6)
    # with n >= k, n@k is pass@k restricted to samples passing both test sets
    both = [p and h for p, h in zip(public, hidden)]
    assert n_at_k(public, hidden, n=3, k=3) == pytest.approx(pass_at_k(10, sum(both), 3))
    assert n_at_k([True] * 1000, [False] * 999 + [True], n=10, k=1000) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        n_at_k(public, hidden, n=1, k=11)


def test_preference_accuracy_counts_ties_as_told():
    chosen, rejected = [1.0, 2.0, 0.5, 3.0], [0.0, 2.0, 1.0, 1.0]
    assert preference_accuracy(chosen, rejected) == pytest.approx(0.5)
    assert preference_accuracy(chosen, rejected, ties="half") == pytest.approx(0.625)
    with pytest.raises(ValueError):
        preference_accuracy([1.0], [1.0, 2.0])


def test_mean_ci_normal_and_bootstrap():
    values = np.random.default_rng(0).normal(loc=3.0, scale=2.0, size=400)
    normal = mean_ci(values)
    half = 1.959963984540054 * values.std(ddof=1) / math.sqrt(400)
    assert normal.mean == pytest.approx(values.mean())
    assert (normal.low, normal.high) == pytest.approx((values.mean() - half, values.mean() + half))
    boot = mean_ci(values, method="bootstrap", seed=1)
    assert boot.low == pytest.approx(normal.low, abs=0.06) and boot.high == pytest.approx(normal.high, abs=0.06)
    assert mean_ci(values, confidence=0.5).high - mean_ci(values, confidence=0.5).low < normal.high - normal.low
    single = mean_ci([2.0])
    assert single.mean == 2.0 and math.isnan(single.low)
    with pytest.raises(ValueError):
        mean_ci([])


def test_mean_ci_normal_covers_the_mean_about_as_often_as_promised():
    rng = np.random.default_rng(3)
    intervals = [mean_ci(rng.exponential(size=60)) for _ in range(400)]
    coverage = sum(ci.low <= 1.0 <= ci.high for ci in intervals) / len(intervals)
    assert 0.90 <= coverage <= 0.98
