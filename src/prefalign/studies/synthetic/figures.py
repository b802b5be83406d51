"""The synthetic study's training-time figure and its two-activation comparison.

- ``figure3.png`` (:func:`plot_unseen_over_training`): the mass DPO and PPO put on uncovered responses
  during training, one line per seed, with the reference's mass and each seed's peak marked, so a
  raise that the mean over seeds hides (early in training, or in a few seeds) stays visible;
- ``figure4.png`` (:func:`plot_activations`): with ``compare_activation``, the same seeds trained with
  both hidden activations; :func:`activation_comparison` lists per seed whether DPO raises uncovered
  mass (its peak above the reference, and unseen cells raised at the end) under each, and the figure
  shows one seed where the two disagree (else the figure seed) side by side: DPO's policy under each
  activation and both training curves.

Text is sized for reading at 100% zoom (the PNGs are written at 100 dpi, so a 10-point label is 14
pixels high).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from prefalign.studies.synthetic.report import _heatmap, save_figure_atomic

#: points of text in the figures (at 100 dpi): cell labels, axis labels, titles
LABEL, AXIS, TITLE = 10, 12, 13


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(axis, points, reference: float, label: str, color, marker_peak: bool = True) -> None:
    steps, values = zip(*points)
    axis.plot(steps, values, color=color, lw=1.5, alpha=0.85, label=label)
    if marker_peak:
        k = int(np.argmax(values))
        axis.plot(steps[k], values[k], "o", color=color, ms=5)
    axis.axhline(reference, color=color, lw=0.8, ls=":", alpha=0.6)


def plot_unseen_over_training(per_seed: list[dict[str, Any]], margin: float, path: str | Path) -> Path:
    """Figure 3: unseen mass over training per seed (DPO by step, PPO by iteration); dots mark each seed's peak,
    dotted lines the seed's reference mass; the titles count the seeds whose peak exceeds it by ``margin``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    colours = plt.get_cmap("tab20")
    for axis, method, xlabel in zip(axes, ("dpo", "ppo"), ("DPO step", "PPO iteration")):
        above = 0
        for k, run in enumerate(per_seed):
            reference = run["metrics"]["reference"]["unseen_mass"]
            points = run["unseen_over_training"][method]
            above += max(v for _, v in points) > reference + margin
            _curve(axis, points, reference, f"seed {run['seed']}", colours(k % 20))
        axis.set_title(
            f"{method.upper()}: mass on uncovered responses\npeak above the reference by > {margin:g} in "
            f"{above}/{len(per_seed)} seeds",
            fontsize=TITLE,
        )
        axis.set_xlabel(xlabel, fontsize=AXIS)
        axis.set_ylabel("uncovered mass (mean over prompts)", fontsize=AXIS)
        axis.tick_params(labelsize=LABEL)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=LABEL, ncol=1 if len(per_seed) <= 12 else 2)
    fig.suptitle("Per seed: dots = the seed's peak, dotted = the seed's reference policy", fontsize=TITLE, y=0.99)
    fig.subplots_adjust(left=0.06, right=0.86 if len(per_seed) <= 12 else 0.8, bottom=0.11, top=0.82, wspace=0.22)
    try:
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)


def _raises(run: dict[str, Any], margin: float) -> dict[str, Any]:
    """What DPO does to uncovered responses in one seed: peak above the reference (by more than ``margin``),
    cells raised at the end."""
    reference = run["metrics"]["reference"]["unseen_mass"]
    peak = max(v for _, v in run["unseen_over_training"]["dpo"])
    return {
        "dpo_final_unseen": run["metrics"]["dpo"]["unseen_mass"],
        "dpo_peak_unseen": peak,
        "reference_unseen": reference,
        "dpo_peak_above_reference": bool(peak > reference + margin),
        "dpo_cells_raised": run["metrics"]["dpo"]["cells_raised"],
        "ppo_cells_raised": run["metrics"]["ppo"]["cells_raised"],
    }


def activation_comparison(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Per seed, DPO's raise of uncovered mass under each activation, and the seeds where they disagree (one
    raises, by its peak or by cells raised at the end, and the other does not)."""
    a, b = first["config"]["activation"], second["config"]["activation"]
    margin = first["config"]["raised_margin"]
    rows, disagree = [], []
    for run_a, run_b in zip(first["per_seed"], second["per_seed"]):
        x, y = _raises(run_a, margin), _raises(run_b, margin)
        differs = x["dpo_peak_above_reference"] != y["dpo_peak_above_reference"] or (
            (x["dpo_cells_raised"] > 0) != (y["dpo_cells_raised"] > 0)
        )
        rows.append({"seed": run_a["seed"], a: x, b: y, "disagree": differs})
        if differs:
            disagree.append(run_a["seed"])
    return {"activations": [a, b], "per_seed": rows, "disagree": disagree}


def plot_activations(first: dict[str, Any], second: dict[str, Any], seed: int, path: str | Path) -> Path:
    """Figure 4: seed ``seed`` under both activations: DPO's policy under each (hatched = uncovered) and the
    unseen mass over DPO's training under each."""
    plt = _pyplot()
    a, b = first["config"]["activation"], second["config"]["activation"]
    run = {r["seed"]: r for r in first["per_seed"]}[seed]
    other = {r["seed"]: r for r in second["per_seed"]}[seed]
    fig, axes = plt.subplots(1, 3, figsize=(20, 6))
    for axis, name, r in zip(axes[:2], (a, b), (run, other)):
        probs, mask = np.asarray(r["dpo_policy"]), np.asarray(r["unseen"], dtype=bool)
        _heatmap(axis, probs, mask, f"DPO policy, {name}", "Blues", [[f"{v:.2f}" for v in row] for row in probs], 0, 1)
        for text in axis.texts:
            text.set_fontsize(LABEL)
        axis.title.set_fontsize(TITLE)
    for name, r, colour in ((a, run, "#1f77b4"), (b, other, "#d62728")):
        reference = r["metrics"]["reference"]["unseen_mass"]
        _curve(axes[2], r["unseen_over_training"]["dpo"], reference, name, colour)
    axes[2].set_title("DPO: mass on uncovered responses over training", fontsize=TITLE)
    axes[2].set_xlabel("DPO step", fontsize=AXIS)
    axes[2].legend(fontsize=LABEL)
    axes[2].tick_params(labelsize=LABEL)
    axes[2].grid(alpha=0.3)
    fig.suptitle(f"Seed {seed}, hidden activation {a} vs {b} (hatched = uncovered in the pairs)", fontsize=TITLE)
    fig.subplots_adjust(left=0.03, right=0.98, bottom=0.1, top=0.86, wspace=0.15)
    try:
        return save_figure_atomic(fig, path)
    finally:
        plt.close(fig)


def compare_activations(first: dict[str, Any], second: dict[str, Any], figure_seed: int, path: str | Path) -> dict:
    """:func:`activation_comparison`, and figure 4 of the first seed where they disagree (else ``figure_seed``)."""
    comparison = activation_comparison(first, second)
    comparison["figure_seed"] = (comparison["disagree"] or [figure_seed])[0]
    plot_activations(first, second, comparison["figure_seed"], path)
    return comparison
