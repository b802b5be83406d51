"""Evaluation metrics: pass@k, n@k, preference accuracy and a confidence interval for a mean.

- :func:`pass_at_k`: the unbiased estimator of Chen et al. (2021, eq. 1) from ``n`` samples with
  ``c`` correct, ``1 - C(n-c, k) / C(n, k)``, in their numerically stable product form
  ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``.
- :func:`n_at_k`: the n@k of Li et al. (2022, AlphaCode) used by Xu et al. (2024, Table 8, e.g.
  10@1k): of k samples, those passing the public tests (at most n) are submitted; the problem is
  solved if one of them passes the hidden tests. :func:`n_at_k_single` scores one ordered draw of
  k samples (submitting the first n that pass the public tests); :func:`n_at_k` is its expectation
  over draws of k from a larger pool of samples, computed exactly (departure: AlphaCode clusters
  samples before choosing which to submit; here the choice is uniform among public-test passers).
- :func:`preference_accuracy`: how often a reward model scores the chosen response above the
  rejected one (Ivison et al., 2024, RM accuracy).
- :func:`mean_ci`: a mean with a normal-approximation or percentile-bootstrap confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: n samples, c of them correct (Chen et al., 2021)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> float:
    """pass@k averaged over problems (each problem needs at least k samples)."""
    if len(num_samples) != len(num_correct) or not num_samples:
        raise ValueError(f"{len(num_samples)} sample counts and {len(num_correct)} correct counts")
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(num_samples, num_correct)]))


def n_at_k_single(public_passed: Sequence[bool], hidden_passed: Sequence[bool], n: int) -> bool:
    """n@k for one ordered draw of k = len(samples): submit the first ``n`` samples that pass the
    public tests; solved if any submitted one passes the hidden tests."""
    if len(public_passed) != len(hidden_passed):
        raise ValueError(f"{len(public_passed)} public results but {len(hidden_passed)} hidden results")
    submitted = [hidden for public, hidden in zip(public_passed, hidden_passed) if public][:n]
    return any(submitted)


def n_at_k(public_passed: Sequence[bool], hidden_passed: Sequence[bool], n: int, k: int) -> float:
    """Expected n@k when k samples are drawn without replacement from the N >= k given ones.

    With a = samples passing public and hidden tests, b = passing public only and m ~
    Hypergeometric(N, a + b, k) the public passers among the k drawn, the submitted min(n, m) are a
    uniform subset of the a + b public passers, so P(unsolved) = sum_m P(m) C(b, s) / C(a + b, s),
    s = min(n, m). Exact rational arithmetic (N = 1000 samples is fine).
    """
    total = len(public_passed)
    if total != len(hidden_passed):
        raise ValueError(f"{total} public results but {len(hidden_passed)} hidden results")
    if not 1 <= k <= total or n < 1:
        raise ValueError(f"need 1 <= k <= number of samples ({total}) and n >= 1, got k={k}, n={n}")
    a = sum(1 for p, h in zip(public_passed, hidden_passed) if p and h)
    b = sum(1 for p, h in zip(public_passed, hidden_passed) if p and not h)
    passers = a + b
    unsolved = Fraction(0)
    for m in range(max(0, k - (total - passers)), min(k, passers) + 1):
        draw = Fraction(math.comb(passers, m) * math.comb(total - passers, k - m), math.comb(total, k))
        s = min(n, m)
        unsolved += draw * Fraction(math.comb(b, s), math.comb(passers, s))
    return float(1 - unsolved)


def preference_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float], ties: str = "wrong") -> float:
    """Fraction of pairs whose chosen response scores higher; ``ties`` count as "wrong" (0, the
    RewardBench convention) or "half" (0.5)."""
    chosen, rejected = np.asarray(chosen_scores, dtype=float), np.asarray(rejected_scores, dtype=float)
    if chosen.shape != rejected.shape or chosen.ndim != 1 or chosen.size == 0:
        shapes = f"{chosen.shape} and {rejected.shape}"
        raise ValueError(f"need two equal-length non-empty 1-D score lists, got shapes {shapes}")
    if ties not in ("wrong", "half"):
        raise ValueError(f"ties must be 'wrong' or 'half', got {ties!r}")
    wins = (chosen > rejected).astype(float)
    if ties == "half":
        wins += 0.5 * (chosen == rejected)
    return float(wins.mean())


@dataclass(frozen=True)
class MeanCI:
    """A sample mean with a two-sided confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float


def mean_ci(
    values: Sequence[float], confidence: float = 0.95, method: str = "normal", num_resamples: int = 2000, seed: int = 0
) -> MeanCI:
    """Mean and confidence interval: ``"normal"`` (mean +- z * s / sqrt(n), s with ddof=1) or
    ``"bootstrap"`` (percentile interval of ``num_resamples`` resampled means). With one value the
    interval is that value under bootstrap and undefined (nan) under the normal method."""
    data = np.asarray(values, dtype=float)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("mean_ci needs a non-empty 1-D list of values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    mean, alpha = float(data.mean()), 1.0 - confidence
    if method == "normal":
        if data.size < 2:
            return MeanCI(mean, math.nan, math.nan, 1, confidence)
        half = NormalDist().inv_cdf(1 - alpha / 2) * float(data.std(ddof=1)) / math.sqrt(data.size)
        return MeanCI(mean, mean - half, mean + half, int(data.size), confidence)
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = data[rng.integers(0, data.size, size=(num_resamples, data.size))].mean(axis=1)
        low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
        return MeanCI(mean, float(low), float(high), int(data.size), confidence)
    raise ValueError(f"method must be 'normal' or 'bootstrap', got {method!r}")
