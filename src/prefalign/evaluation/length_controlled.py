"""AlpacaEval's win rate with ties and the length-controlled (LC) win rate of Dubois et al. (2024).

Preferences use AlpacaEval's encoding: 1 = the baseline wins, 2 = the model wins, 1.5 (or 0) = a tie.
:func:`win_rate` is ``100 * mean(preference - 1)`` (a tie counts half), as ``alpaca_eval``'s
``get_winrate``.

:func:`length_controlled_win_rate` fits AlpacaEval's GLM (``alpaca_eval.metrics.glm_winrate``): a
logistic regression without intercept of the soft preference ``y = preference - 1`` on

    tanh(std_delta_len) [+ instruction_difficulty] + 1,   std_delta_len = (len_baseline - len_model) / sd

(lengths in characters, ``sd`` the sample standard deviation of the differences over the
annotations), with an L1 penalty whose strength C is chosen among ``logspace(-4, 4, 10)`` by 5-fold
cross-validation over instructions on the soft log loss, then refit on all annotations with the best C
(scikit-learn's ``LogisticRegressionCV(penalty="l1", solver="liblinear", fit_intercept=False)`` with
the package's fold assignment). The LC win rate is ``100 * mean_i sigmoid(w . x_i)`` with the length
term set to 0: the win rate the judge would give if the two outputs were equally long.

Which of the package's GLMs: with ``instruction_difficulty`` (the package's per-instruction
``instruction_difficulty.csv``) this is ``length_controlled_noreg``; without it ``length_controlled_minimal``.
The leaderboard's ``length_controlled_v1`` also regularises towards two "gamed" baselines whose
annotations (``df_gamed.csv``) come from the Hugging Face hub, which this project cannot reach; that
term is not implemented (a departure: on the leaderboard it moves LC win rates by well under a point
for ordinary models, per Dubois et al.'s ablations). The fit is our own code (numpy proximal Newton),
checked against the package in ``tests/evaluation/test_length_controlled.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CS = np.logspace(-4, 4, 10)
N_SPLITS = 5


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def preference_of(outcome: str) -> float:
    """AlpacaEval's preference for a pairwise outcome of the model: win 2, tie 1.5, loss 1."""
    return {"win": 2.0, "tie": 1.5, "loss": 1.0}[outcome]


def _as_unit(preferences: Sequence[float]) -> np.ndarray:
    p = np.asarray(preferences, dtype=float)
    p = np.where(p == 0.0, 1.5, p)
    if p.ndim != 1 or p.size == 0 or np.any((p < 1.0) | (p > 2.0)) or not np.all(np.isfinite(p)):
        raise ValueError("preferences must be a non-empty list of numbers in [1, 2] (or 0 for a tie)")
    return p - 1.0


def win_rate(preferences: Sequence[float]) -> dict[str, float]:
    """``win_rate`` (ties half, percent), ``standard_error`` (percent), ``n_wins``, ``n_wins_base``, ``n_draws``."""
    y = _as_unit(preferences)
    sem = float(y.std(ddof=1) / np.sqrt(y.size)) if y.size > 1 else float("nan")
    return {
        "win_rate": float(y.mean() * 100),
        "standard_error": sem * 100,
        "n_wins": float((y > 0.5).sum()),
        "n_wins_base": float((y < 0.5).sum()),
        "n_draws": float((y == 0.5).sum()),
        "n_total": float(y.size),
    }


def _loss_terms(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Soft-label log loss (summed), its gradient and Hessian at ``w``."""
    z = x @ w
    q = _sigmoid(z)
    loss = float(np.sum(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1.0 - y)))
    grad = x.T @ (q - y)
    hess = (x * (q * (1.0 - q))[:, None]).T @ x
    return loss, grad, hess


def fit_l1_logistic(x: np.ndarray, y: np.ndarray, c: float, *, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """argmin_w ||w||_1 + c * sum_i CE(y_i, sigmoid(x_i . w)) (liblinear's L1 objective), by proximal Newton."""
    w = np.zeros(x.shape[1])

    def objective(v: np.ndarray) -> float:
        return float(np.abs(v).sum() + c * _loss_terms(v, x, y)[0])

    current = objective(w)
    for _ in range(max_iter):
        _, grad, hess = _loss_terms(w, x, y)
        grad, hess = c * grad, c * hess + 1e-12 * np.eye(len(w))
        d = np.zeros_like(w)  # coordinate descent on the L1-penalised quadratic model
        for _ in range(200):
            previous = d.copy()
            for j in range(len(w)):
                residual = grad[j] + hess[j] @ d - hess[j, j] * d[j]
                target = w[j] - residual / hess[j, j]
                d[j] = np.sign(target) * max(abs(target) - 1.0 / hess[j, j], 0.0) - w[j]
            if np.max(np.abs(d - previous)) < 1e-14:
                break
        step = 1.0
        while step > 1e-10:
            candidate = objective(w + step * d)
            if candidate <= current:
                break
            step /= 2
        if step <= 1e-10:
            break
        w, improvement = w + step * d, current - candidate
        current = candidate
        if improvement < tol * max(1.0, abs(current)):
            break
    return w


def group_folds(n: int, n_splits: int = N_SPLITS) -> np.ndarray:
    """The fold of each of ``n`` equal-size groups, as scikit-learn's ``GroupKFold`` assigns them."""
    order = np.argsort(np.full(n, 2))[::-1]  # GroupKFold sorts groups by size, largest first
    folds = np.zeros(n, dtype=int)
    folds[order] = np.arange(n) % n_splits  # each group goes to the lightest fold: round robin
    return folds


def _soft_log_loss(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(_sigmoid(x @ w), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


@dataclass(frozen=True)
class LengthControlledFit:
    """The fitted GLM: ``weights`` by feature name, the chosen ``c`` and the LC win rate (percent)."""

    weights: dict[str, float]
    c: float
    length_controlled_win_rate: float
    lc_standard_error: float
    predicted: np.ndarray  # (n,) predicted preference of the model at equal length


def length_controlled_win_rate(
    preferences: Sequence[float],
    model_lengths: Sequence[int],
    baseline_lengths: Sequence[int],
    instruction_difficulty: Sequence[float] | None = None,
) -> LengthControlledFit:
    """The LC win rate of Dubois et al. (2024) (see the module docstring); lengths in characters."""
    y = _as_unit(preferences)
    model_len, base_len = np.asarray(model_lengths, float), np.asarray(baseline_lengths, float)
    if not y.size == model_len.size == base_len.size:
        raise ValueError(f"{y.size} preferences, {model_len.size} model lengths, {base_len.size} baseline lengths")
    if y.size < N_SPLITS * 2:
        raise ValueError(f"the length-controlled win rate needs at least {N_SPLITS * 2} annotations, got {y.size}")
    delta = base_len - model_len
    sd = delta.std(ddof=1)
    std_delta = delta / sd if sd > 0 else np.zeros_like(delta)
    names, columns, test_columns = ["np.tanh(std_delta_len)"], [np.tanh(std_delta)], [np.zeros_like(y)]
    if instruction_difficulty is not None:
        difficulty = np.asarray(instruction_difficulty, float)
        if difficulty.size != y.size:
            raise ValueError(f"{difficulty.size} instruction difficulties for {y.size} annotations")
        names.append("instruction_difficulty")
        columns.append(difficulty)
        test_columns.append(difficulty)
    names.append("not_gamed_baseline.astype(float)")
    columns.append(np.ones_like(y))
    test_columns.append(np.ones_like(y))
    x, x_test = np.stack(columns, axis=1), np.stack(test_columns, axis=1)  # (n, F)
    folds = group_folds(y.size)
    scores = []
    for c in CS:
        losses = []
        for k in range(N_SPLITS):
            train, held = folds != k, folds == k
            losses.append(_soft_log_loss(fit_l1_logistic(x[train], y[train], c), x[held], y[held]))
        scores.append(-float(np.mean(losses)))
    best = float(CS[int(np.argmax(scores))])
    w = fit_l1_logistic(x, y, best)
    predicted = _sigmoid(x_test @ w)
    sem = float(predicted.std(ddof=1) / np.sqrt(predicted.size))
    return LengthControlledFit(dict(zip(names, w.tolist())), best, float(predicted.mean() * 100), sem * 100, predicted)
