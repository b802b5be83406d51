"""Reporting for the synthetic study: confidence intervals, atomic files, figures, rich tables.

* Confidence intervals are Student-t intervals over seeds, mean ± t_{(1+level)/2, n-1} s/sqrt(n)
  with s the unbiased standard deviation. The t quantile is computed here (no scipy in the
  environment) by bisection on the t CDF, itself a Simpson integral of the t density.
* Every file is written atomically: to a temporary file in the destination folder, then
  ``os.replace`` (so a reader never sees half a file). JSON has no infinities or NaN: they are
  written as the strings "inf", "-inf" and "nan".
* Figure 1 (Xu et al. 2024, Figure 1): five 8x8 heatmaps of one seed -- (a) the preference
  data's coverage (pairs per cell, "wins/pairs" written in the cell), (b) the reference policy,
  (c) PPO, (d) DPO, (e) the learned reward, centred per prompt (BT rewards are defined up to
  a per-prompt constant). Rows are prompts, columns responses; unseen cells are hatched and
  the optimal (diagonal) cells framed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prefalign.atomic import atomic_write, write_text_atomic


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with df degrees of freedom (0 < p < 1)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"need 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 4001)  # Simpson's rule on 4000 intervals
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
        weights = np.ones_like(grid)
        weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
        return 0.5 + float((weights * density).sum()) * (grid[1] - grid[0]) / 3.0

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, 2.0 * high
    for _ in range(80):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return 0.5 * (low + high)


def mean_confidence_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean, t-interval half width and bounds of ``values`` (at least 2 of them)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {data.size}")
    mean = float(data.mean())
    half = student_t_quantile(0.5 + level / 2.0, data.size - 1) * float(data.std(ddof=1)) / math.sqrt(data.size)
    return {
        "mean": mean,
        "half_width": half,
        "low": mean - half,
        "high": mean + half,
        "min": float(data.min()),
        "max": float(data.max()),
        "n": int(data.size),
    }


def to_json_safe(value: Any) -> Any:
    """Tensors and arrays to lists, tuples to lists, non-finite floats to "inf"/"-inf"/"nan"."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(key): to_json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(item) for item in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """JSON (via :func:`to_json_safe`, strict: no NaN/inf literals) written atomically."""
    return write_text_atomic(path, json.dumps(to_json_safe(data), indent=2, allow_nan=False) + "\n")


def save_figure_atomic(figure, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    return atomic_write(Path(path), lambda temporary: figure.savefig(temporary, format="png", dpi=100))


def _heatmap(axis, matrix: np.ndarray, unseen: np.ndarray, title: str, cmap: str, labels: list[list[str]], vmin, vmax):
    """One 8x8 panel: colours, a label per cell, hatched unseen cells, framed diagonal."""
    from matplotlib.patches import Rectangle

    image = axis.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    size = matrix.shape[0]
    for i in range(size):
        for j in range(matrix.shape[1]):
            strength = (
                abs(matrix[i, j] - (vmin + vmax) / 2) / ((vmax - vmin) / 2)
                if cmap == "RdBu_r"
                else (matrix[i, j] - vmin) / (vmax - vmin)
            )
            axis.text(
                j, i, labels[i][j], ha="center", va="center", fontsize=10, color="white" if strength > 0.6 else "black"
            )
            if unseen[i, j]:
                axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="grey", lw=0))
        axis.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
    axis.set_title(title, fontsize=13)
    axis.set_xlabel("response", fontsize=12)
    axis.set_ylabel("prompt", fontsize=12)
    axis.tick_params(labelsize=10)
    axis.set_xticks(range(matrix.shape[1]))
    axis.set_yticks(range(size))
    axis.figure.colorbar(image, ax=axis, shrink=0.75, pad=0.03)
    return image


def figure1_data(scenario, ref_probs, ppo_probs, dpo_probs, rewards) -> dict[str, Any]:
    """The numbers drawn in Figure 1 (all (P, R) nested lists), for its JSON twin."""
    centred = rewards - rewards.mean(dim=-1, keepdim=True)
    return {
        "seed": scenario.seed,
        "unseen": scenario.unseen.tolist(),
        "pair_counts": scenario.pair_counts().tolist(),
        "win_counts": scenario.win_counts().tolist(),
        "reference": ref_probs.tolist(),
        "ppo": ppo_probs.tolist(),
        "dpo": dpo_probs.tolist(),
        "reward_centred": centred.tolist(),
    }


def plot_figure1(data: dict[str, Any], path: str | Path) -> Path:
    """Figure 1 from :func:`figure1_data`'s dict, as a PNG at ``path`` (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unseen = np.asarray(data["unseen"], dtype=bool)
    counts, wins = np.asarray(data["pair_counts"]), np.asarray(data["win_counts"])
    fig, axes = plt.subplots(1, 5, figsize=(30, 6.5))  # fixed margins: constrained layout would draw twice
    fig.subplots_adjust(left=0.025, right=0.99, bottom=0.1, top=0.86, wspace=0.14)
    coverage_labels = [[f"{w}/{c}" if c else "" for w, c in zip(wr, cr)] for wr, cr in zip(wins, counts)]
    _heatmap(axes[0], counts, unseen, "(a) data coverage (wins/pairs)", "Greens", coverage_labels, 0, counts.max() + 1)
    for axis, key, title in zip(axes[1:4], ("reference", "ppo", "dpo"), ("(b) reference", "(c) PPO", "(d) DPO")):
        probs = np.asarray(data[key])
        labels = [[f"{v:.2f}" for v in row] for row in probs]
        _heatmap(axis, probs, unseen, f"{title} policy", "Blues", labels, 0.0, 1.0)
    reward = np.asarray(data["reward_centred"])
    bound = float(np.abs(reward).max()) or 1.0
    _heatmap(
        axes[4],
        reward,
        unseen,
        "(e) learned reward (centred per prompt)",
        "RdBu_r",
        [[f"{v:.1f}" for v in row] for row in reward],
        -bound,
        bound,
    )
    fig.suptitle(
        f"Synthetic scenario, seed {data['seed']}: hatched = unseen in the preference data, framed = optimal response",
        fontsize=14,
    )
    try:
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)


def plot_summary(summary: dict[str, Any], methods: Sequence[str], path: str | Path) -> Path:
    """Bars of each method's mean with its confidence interval, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("unseen_mass", "optimal_mass", "cells_raised")
    fig, axes = plt.subplots(1, len(metrics), figsize=(15, 4.8))
    for axis, metric in zip(axes, metrics):
        stats = [summary[method][metric] for method in methods]
        axis.bar(
            range(len(methods)),
            [s["mean"] for s in stats],
            yerr=[s["half_width"] for s in stats],
            capsize=4,
            color=["#999999", "#1f77b4", "#d62728", "#2ca02c"][: len(methods)],
        )
        axis.set_xticks(range(len(methods)))
        axis.set_xticklabels(methods, fontsize=11)
        axis.tick_params(axis="y", labelsize=10)
        axis.set_title(metric.replace("_", " "), fontsize=13)
    level, seeds = summary["confidence_level"], summary["num_seeds"]
    fig.suptitle(f"mean and {level:.0%} t-interval over {seeds} seeds", fontsize=13)
    fig.tight_layout()
    try:
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)


def format_interval(stats: dict[str, float], digits: int = 3) -> str:
    """'mean ± half_width'."""
    return f"{stats['mean']:.{digits}f} ± {stats['half_width']:.{digits}f}"


def print_report(results: dict[str, Any], console=None) -> None:
    """The rich tables of a run_synthetic result: methods x metrics, then the checks."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    summary = results["summary"]
    table = Table(
        title=f"Synthetic study (Xu et al. 2024, sec. 4.2): mean ± {summary['confidence_level']:.0%} CI "
        f"over {summary['num_seeds']} seeds"
    )
    for column in ("policy", "mass on unseen", "mass on optimal", "unseen cells raised"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for method in results["methods"]:
        row = summary[method]
        table.add_row(
            method,
            format_interval(row["unseen_mass"]),
            format_interval(row["optimal_mass"]),
            format_interval(row["cells_raised"], 2),
        )
    diff = summary["dpo_minus_ppo"]
    table.add_row(
        "DPO - PPO (paired)",
        format_interval(diff["unseen_mass"]),
        format_interval(diff["optimal_mass"]),
        format_interval(diff["cells_raised"], 2),
    )
    console.print(table)
    checks = Table(title="Counter-example (Table 1) and Theorem 4.1 checks")
    checks.add_column("check")
    checks.add_column("value", justify="right")
    for name, value in results["check_lines"]:
        checks.add_row(name, value)
    console.print(checks)
