"""The study's figures (PNG, written atomically), read from the trainers' own ``metrics.jsonl`` logs.

- ``training_curves.png``: PPO's learned reward and KL per step for each Table 3 row; the offline
  methods' loss and implicit-reward accuracy per step; DPO-Iter's mean learned reward of the
  samples of each round;
- ``gold_vs_kl.png``: held-out gold reward against KL(pi || pi_SFT), one point per method and seed;
- ``methods.png``: gold reward and safety rate per method, mean and 95% interval over seeds;
- the synthetic study's own ``synthetic/figure1.png`` (heatmaps) and ``figure2.png`` (summary).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prefalign.studies.comparison.methods import LABELS, PPO_ROWS  # noqa: E402
from prefalign.studies.synthetic.report import save_figure_atomic as _save  # noqa: E402
from prefalign.trainers.logging import read_metrics  # noqa: E402

OFFLINE = ("dpo", "dpo_sft_first", "rrhf", "pro")


def save_figure_atomic(fig, path: Path) -> Path:
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _color(method: str, methods: list[str]):
    return plt.get_cmap("tab10")(methods.index(method) % 10)


def _curve(axis, rows: list[dict], key: str, label: str | None, color, alpha: float) -> None:
    if key == "rewards/accuracy" and not any("rewards/accuracy" in r for r in rows):
        key = "rank/accuracy"  # RRHF and PRO log the accuracy of their own ranking score
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    if points:
        axis.plot(*zip(*points), color=color, alpha=alpha, label=label, linewidth=1.2)


def _runs(results: dict[str, Any], out: Path, method: str) -> list[Path]:
    return [out / run["runs"][method]["run_dir"] for run in results["per_seed"].values() if method in run["runs"]]


def _plot_method_curves(axes, results: dict, out: Path, methods: list[str], panel: dict[str, tuple[int, str]]) -> None:
    for method in methods:
        for i, folder in enumerate(_runs(results, out, method)):
            rows = read_metrics(folder / "metrics.jsonl")
            for key, (index, _) in panel.items():
                _curve(
                    axes[index],
                    rows,
                    key,
                    LABELS[method] if i == 0 else None,
                    _color(method, methods),
                    0.9 if i == 0 else 0.4,
                )


def _plot_iterative(axis, results: dict, out: Path, methods: list[str]) -> None:
    for i, folder in enumerate(_runs(results, out, "dpo_iter")):
        rounds_file = folder / "rounds.jsonl"
        if rounds_file.exists():
            rounds = [json.loads(line) for line in rounds_file.read_text().splitlines() if line.strip()]
            axis.plot(
                [r["round"] for r in rounds],
                [r["reward/mean"] for r in rounds],
                marker="o",
                color=_color("dpo_iter", methods),
                alpha=0.9 if i == 0 else 0.4,
                label="DPO-Iter" if i == 0 else None,
            )
    axis.set(title="DPO-Iter: learned reward of each round's samples", xlabel="round", ylabel="mean RM score")


def plot_training_curves(results: dict[str, Any], out: Path, path: Path) -> Path:
    methods = results["methods"]
    fig, grid = plt.subplots(2, 3, figsize=(15, 8))
    axes = grid.ravel()
    ppo = [m for m in methods if m in PPO_ROWS]
    offline = [m for m in methods if m in OFFLINE]
    ppo_panels = {
        "reward/mean": (0, "PPO: learned reward of the rollouts"),
        "kl/mean": (1, "PPO: KL(pi || pi_ref) per sequence"),
    }
    offline_panels = {
        "loss": (3, "offline methods: training loss"),
        "rewards/accuracy": (4, "offline methods: ranking accuracy (training batch)"),
    }
    _plot_method_curves(axes, results, out, [m for m in methods if m in ppo], ppo_panels)
    _plot_method_curves(axes, results, out, [m for m in methods if m in offline], offline_panels)
    for key, (index, title) in {**ppo_panels, **offline_panels}.items():
        axes[index].set(title=title, xlabel="step", ylabel=key)
        if axes[index].lines:
            axes[index].legend(fontsize=7)
    axes[3].set_yscale("log")  # RRHF's loss is on another scale than DPO's and PRO's
    if "dpo_iter" in methods:
        _plot_iterative(axes[2], results, out, methods)
    axes[5].axis("off")
    axes[5].text(
        0.0,
        0.5,
        "Lines: first seed solid, other seeds faint.\nRanking accuracy: DPO's implicit reward; RRHF / PRO:\ntheir "
        "ranking score (rank/accuracy).\nPPO's KL is to its (possibly EMA-moved) reference;\n"
        "the evaluation's KL (gold_vs_kl.png) is to the SFT model.",
        fontsize=9,
    )
    fig.suptitle("Training curves (from each trainer's metrics.jsonl)")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def plot_gold_vs_kl(results: dict[str, Any], path: Path) -> Path:
    methods = ["sft", *results["methods"]]
    fig, axis = plt.subplots(figsize=(7.5, 5.5))
    for method in methods:
        points = [
            (run["sft_metrics"] if method == "sft" else run["runs"][method]["metrics"])
            for run in results["per_seed"].values()
        ]
        xs, ys = [p["kl/mean"] for p in points], [p["gold/score"] for p in points]
        axis.scatter(
            xs,
            ys,
            color=plt.get_cmap("tab10")(methods.index(method) % 10),
            label=LABELS[method],
            s=30,
            marker="*" if method == "sft" else "o",
        )
    axis.set(
        xlabel="KL(pi || pi_SFT) on sampled held-out responses (nats)",
        ylabel="held-out gold reward (greedy)",
        title="Gold reward against KL from the SFT model",
    )
    axis.legend(fontsize=7)
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def plot_methods(results: dict[str, Any], path: Path) -> Path:
    methods = ["sft", *results["methods"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for axis, key, title in zip(
        axes, ("gold/score", "gold/safety_rate"), ("gold reward", "safety rate (unsafe prompts)")
    ):
        stats = [results["summary"][m][key] for m in methods]
        means = [s["mean"] for s in stats]
        errors = [0.0 if math.isnan(s["low"]) else (s["high"] - s["low"]) / 2 for s in stats]
        axis.bar(
            range(len(methods)),
            means,
            yerr=errors,
            capsize=3,
            color=[plt.get_cmap("tab10")(i % 10) for i in range(len(methods))],
        )
        axis.set_xticks(range(len(methods)), [LABELS[m] for m in methods], rotation=35, ha="right", fontsize=8)
        axis.set(title=f"{title}: mean and 95% interval over seeds", ylim=(0, 1.05))
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Every figure of the module docstring; returns their paths relative to ``out``."""
    plots = out / "plots"
    figures = [
        plot_training_curves(results, out, plots / "training_curves.png"),
        plot_gold_vs_kl(results, plots / "gold_vs_kl.png"),
        plot_methods(results, plots / "methods.png"),
    ]
    names = [str(Path(f).relative_to(out)) for f in figures]
    if results.get("synthetic"):
        names += [f for f in results["synthetic"]["figures"] if (out / f).exists()]
    return names
