"""The study's figures (PNG, written atomically), one set per testbed.

- ``<testbed>_overoptimisation.png`` (Gao et al. 2023's picture): held-out gold reward and learned
  reward of sampled responses against KL to the SFT model, at every saved checkpoint of each PPO row
  and every DPO-Iter round (mean over seeds), so a reader sees where the proxy and the gold part;
- ``<testbed>_training_curves.png``: each run's own convergence series (PPO's validation objective,
  the offline methods' held-out loss, DPO-Iter's validation objective per round), read from the trainers' logs;
- ``<testbed>_methods.png``: gold reward and pass@1 per method, mean and 95% interval over seeds;
- ``sweeps.png`` (full preset): held-out gold reward against each swept factor (reference-EMA rate, rollout
  batch), one line per schedule (same steps / same samples), mean and 95% interval over seeds (Xu et al. Figure 2);
- ``<testbed>_ensemble_overoptimisation.png`` (when the ensemble rows ran): the over-optimisation picture of
  PPO with all factors on the single reward model against the same row on the UWO and WCO ensembles;
- the synthetic study's own ``synthetic/figure1.png`` (heatmaps) and ``figure2.png`` (summary).

Text is set at 10-11 pt on figures at 100 dpi, legible at 100% zoom.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prefalign.studies.comparison.beyond import ENSEMBLE_PLOT, ENSEMBLE_ROWS  # noqa: E402
from prefalign.studies.comparison.convergence import logged_series  # noqa: E402
from prefalign.studies.comparison.methods import LABELS, OFFLINE, PPO_ROWS  # noqa: E402
from prefalign.studies.synthetic.report import save_figure_atomic as _save  # noqa: E402

plt.rcParams.update({"font.size": 11, "axes.titlesize": 11, "legend.fontsize": 10})


def save_figure_atomic(fig, path: Path) -> Path:
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _error_bars(stats: list[dict[str, float]]) -> list[list[float]]:
    """[below, above] the mean of each ``{mean, low, high}`` for matplotlib's ``yerr`` (0 where the interval is NaN)."""
    lower = [0.0 if math.isnan(s["low"]) else s["mean"] - s["low"] for s in stats]
    upper = [0.0 if math.isnan(s["high"]) else s["high"] - s["mean"] for s in stats]
    return [lower, upper]


def _color(method: str, methods: list[str]):
    return plt.get_cmap("tab10")(methods.index(method) % 10)


def plot_overoptimisation(results: dict[str, Any], testbed: str, path: Path, only: tuple[str, ...] = ()) -> Path:
    """Gold and learned reward against KL, every online row (``only``: just these rows)."""
    curves, methods = results["testbeds"][testbed]["curves"], ["sft", *results["methods"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for method, points in curves.items():
        if not points or (only and method not in only):
            continue
        kl = [p["kl"]["mean"] for p in points]
        for axis, key in zip(axes, ("gold", "rm")):
            if all(key in p for p in points):
                axis.plot(
                    kl,
                    [p[key]["mean"] for p in points],
                    marker="o",
                    color=_color(method, methods),
                    label=LABELS[method],
                )
    axes[0].set(xlabel="KL(pi || pi_SFT), nats per response", ylabel="gold reward (T=1)", title="Gold reward vs KL")
    axes[1].set(
        xlabel="KL(pi || pi_SFT), nats per response",
        ylabel="learned RM score (T=1)",
        title="Learned reward (proxy) vs KL",
    )
    for axis in axes:
        if axis.lines:
            axis.legend()
        axis.grid(alpha=0.3)
    what = "with and without the reward-model ensemble" if only else "during training"
    fig.suptitle(f"{testbed} testbed: over-optimisation {what} (first point: the SFT model; mean over seeds)")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def _series(folder: Path, method: str) -> list[tuple[int, float]]:
    """The run's convergence series (prefalign.studies.comparison.convergence)."""
    if method in PPO_ROWS:
        return logged_series(folder / "metrics.jsonl", "eval/objective")
    if method in OFFLINE:
        return logged_series(folder / "metrics.jsonl", "eval/loss")
    results = folder / "results.json"
    points = (json.loads(results.read_text()).get("early_stop") or {}).get("validation") if results.exists() else None
    return [(int(r), float(v)) for r, v in points or []]


def plot_training_curves(results: dict[str, Any], testbed: str, out: Path, path: Path) -> Path:
    methods = results["methods"]
    ran = results["testbeds"][testbed]["summary"]  # a method may skip a testbed
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    groups = (
        (
            [m for m in methods if m in PPO_ROWS and m in ran],
            0,
            "PPO: validation reward - KL coef. x KL (its objective)",
            "step",
        ),
        ([m for m in methods if m in OFFLINE], 1, "offline methods: held-out loss", "step"),
        ([m for m in methods if m == "dpo_iter"], 2, "DPO-Iter: validation reward - beta x KL to the start", "round"),
    )
    for group, index, title, xlabel in groups:
        for method in group:
            for i, run in enumerate(results["per_seed"].values()):
                folder = out / run["testbeds"][testbed]["runs"][method]["run_dir"]
                points = _series(folder, method)
                if points:
                    axes[index].plot(
                        *zip(*points),
                        color=_color(method, methods),
                        alpha=0.9 if i == 0 else 0.35,
                        label=LABELS[method] if i == 0 else None,
                    )
        axes[index].set(title=title, xlabel=xlabel)
        if axes[index].lines:
            axes[index].legend()
    fig.suptitle(f"{testbed} testbed: each run's convergence series (first seed solid, others faint)")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def plot_methods(results: dict[str, Any], testbed: str, path: Path) -> Path:
    summary = results["testbeds"][testbed]["summary"]
    methods = [m for m in ["sft", *results["methods"]] if m in summary]  # a method may skip a testbed
    keys = [k for k in ("gold/score", "pass@1", "gold/safety_rate") if k in summary["sft"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.8))
    for axis, key in zip(axes, keys):
        stats = [summary[m][key] for m in methods]
        means = [s["mean"] for s in stats]
        axis.bar(
            range(len(methods)), means, yerr=_error_bars(stats), capsize=3, color=[_color(m, methods) for m in methods]
        )
        axis.set_xticks(range(len(methods)), [LABELS[m] for m in methods], rotation=35, ha="right")
        axis.set(title=f"{key}: mean, 95% interval over seeds", ylim=(0, 1.05))
    fig.suptitle(f"{testbed} testbed")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def plot_sweeps(sweeps: dict[str, Any], path: Path) -> Path:
    kinds = [k for k in ("ema", "batch") if any(r["kind"] == k for r in sweeps["rows"])]
    titles = {"ema": "reference-EMA rate per step", "batch": "rollout batch size"}
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.2), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        for schedule in ("same_steps", "same_samples"):
            rows = sorted(
                (r for r in sweeps["rows"] if r["kind"] == kind and r["schedule"] == schedule), key=lambda r: r["value"]
            )
            if not rows:
                continue
            stats = [r["gold/score"] for r in rows]
            x = list(range(len(rows)))
            means = [s["mean"] for s in stats]
            axis.errorbar(x, means, yerr=_error_bars(stats), marker="o", capsize=3, label=schedule.replace("_", " "))
            axis.set_xticks(x, [f"{r['value']:g}" for r in rows])
        axis.set(xlabel=titles[kind], ylabel="held-out gold reward", title=f"{titles[kind]} (mean, 95% interval)")
        axis.legend()
    fig.suptitle(f"PPO with all factors, one factor swept ({sweeps['testbed']} testbed, {sweeps['run_length']} steps)")
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Every figure of the module docstring; returns their paths relative to ``out``."""
    plots = out / "plots"
    figures = []
    for testbed in results["testbeds"]:
        figures += [
            plot_overoptimisation(results, testbed, plots / f"{testbed}_overoptimisation.png"),
            plot_training_curves(results, testbed, out, plots / f"{testbed}_training_curves.png"),
            plot_methods(results, testbed, plots / f"{testbed}_methods.png"),
        ]
        if any(results["testbeds"][testbed]["curves"].get(m) for m in ENSEMBLE_ROWS):  # with and without the ensemble
            path = plots / f"{testbed}_ensemble_overoptimisation.png"
            figures.append(plot_overoptimisation(results, testbed, path, only=ENSEMBLE_PLOT))
    if results.get("sweeps") and results["sweeps"]["rows"]:
        figures.append(plot_sweeps(results["sweeps"], plots / "sweeps.png"))
    names = [str(Path(f).relative_to(out)) for f in figures]
    if results.get("synthetic"):
        names += [f for f in results["synthetic"]["figures"] if (out / f).exists()]
    return names
