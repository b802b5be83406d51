"""The study's results: summary statistics, tables (terminal and Markdown), ``results.json`` and ``report.md``.

Tables, in the papers' layout:

- main comparison (Xu et al. Tables 2 and 4: one row per method; gold reward, safety rate,
  learned-reward score, KL to the SFT model);
- PPO key factors (Xu et al. Table 3: cumulative rows with check marks);
- paired differences between methods over seeds (the comparisons the papers draw);
- the reward model and the data (Ivison et al. Table 1 and 2: data quality, RM accuracy);
- the synthetic study (Xu et al. section 4);
- the time each stage took.

Everything that depends on the clock lives under ``results["timings"]``, so two runs with the same
settings give the same ``results.json`` apart from that key.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from prefalign.atomic import write_json_atomic, write_text_atomic
from prefalign.studies.comparison.findings import NOTES, findings, fmt, world_description
from prefalign.studies.comparison.methods import LABELS, PPO_ROWS
from prefalign.studies.comparison.tiny_world.prepare import count_parameters
from prefalign.studies.synthetic.report import mean_confidence_interval
from prefalign.trainers.logging import console

#: (metric key, column title, higher is better)
MAIN_COLUMNS = (
    ("gold/score", "gold reward", True),
    ("gold/safety_rate", "safety rate", True),
    ("gold/accuracy", "exact (safe prompts)", True),
    ("gold/over_refusal", "over-refusal", False),
    ("rm/score", "RM score", True),
    ("kl/mean", "KL(pi||pi_SFT)", False),
    ("sampled/gold_score", "gold reward (T=1)", True),
)
#: paired comparisons (a - b per seed) reported on the gold reward
COMPARISONS = (
    ("ppo_ema", "dpo"),
    ("dpo_iter", "dpo"),
    ("dpo_sft_first", "dpo"),
    ("dpo", "pro"),
    ("dpo", "rrhf"),
    ("ppo_ema", "ppo_baseline"),
    ("ppo_ema", "dpo_iter"),
)


def summarize(values: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and Student-t interval over seeds (with few seeds a normal interval would be far too narrow)."""
    if len(values) < 2:
        return {"mean": float(values[0]), "low": math.nan, "high": math.nan, "n": len(values)}
    ci = mean_confidence_interval(values, confidence)
    return {"mean": ci["mean"], "low": ci["low"], "high": ci["high"], "n": ci["n"]}


def _metric_summary(per_seed: dict[int, Any], method: str) -> dict[str, Any]:
    def metrics(run):
        return run["sft_metrics"] if method == "sft" else run["runs"][method]["metrics"]

    keys = metrics(next(iter(per_seed.values()))).keys()
    return {k: summarize([float(metrics(run)[k]) for run in per_seed.values()]) for k in keys}


def paired_differences(per_seed: dict[int, Any], methods: list[str], metric: str = "gold/score") -> dict[str, Any]:
    out = {}
    for a, b in COMPARISONS:
        if a in methods and b in methods:
            diffs = [run["runs"][a]["metrics"][metric] - run["runs"][b]["metrics"][metric] for run in per_seed.values()]
            out[f"{a} - {b}"] = summarize(diffs)
    return out


def synthetic_summary(synthetic: dict[str, Any] | None) -> dict[str, Any] | None:
    if synthetic is None:
        return None
    summary = synthetic["summary"]
    keep = ("reference", "dpo", "ppo", "kl_optimum", "dpo_minus_ppo")
    return {
        "num_seeds": summary["num_seeds"],
        **{m: summary[m] for m in keep if m in summary},
        "check_lines": synthetic.get("check_lines", []),
        "figures": ["synthetic/figure1.png", "synthetic/figure2.png"],
    }


def assemble_results(
    config,
    world,
    per_seed: dict[int, Any],
    synthetic: dict[str, Any] | None,
    skipped: dict[str, str],
    seconds: dict[str, float],
    total_seconds: float,
) -> dict[str, Any]:
    """The contents of ``results.json`` (timings under their own key)."""
    methods = [m for m in config.methods if m not in skipped]
    return {
        "config": dataclasses.asdict(config),
        "world": {
            "settings_hash": world.info["settings_hash"],
            "stats": world.data.stats,
            "parameters": count_parameters(world.sft_dir),
            "sizes": {
                "pretrain_lines": len(world.data.pretrain_text),
                "sft_train": len(world.data.sft_train),
                "pairs_train": len(world.data.pairs_train),
                "pairs_held_out": len(world.data.pairs_held_out),
                "policy_prompts": len(world.data.policy_prompts),
                "eval_prompts": len(world.data.eval_prompts),
            },
        },
        "methods": methods,
        "skipped": skipped,
        "seeds": list(per_seed),
        "per_seed": {str(seed): run for seed, run in per_seed.items()},
        "summary": {m: _metric_summary(per_seed, m) for m in ["sft", *methods]},
        "reward_model": {
            k: summarize([float(run["reward_model"][k]) for run in per_seed.values()])
            for k in next(iter(per_seed.values()))["reward_model"]
        },
        "differences": paired_differences(per_seed, methods),
        "synthetic": synthetic_summary(synthetic),
        "timings": {
            "stages": seconds,
            "total": total_seconds,
            "world_cached": world.cached,
            "world_build": world.info.get("seconds", {}),
        },
    }


# ----------------------------------------------------------------------------- formatting


def main_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for method in ["sft", *results["methods"]]:
        stats = results["summary"][method]
        rows.append([LABELS[method], *[fmt(stats.get(key)) for key, _, _ in MAIN_COLUMNS]])
    return rows


def ppo_rows(results: dict[str, Any]) -> list[list[str]]:
    rows, check = [], lambda flag: "✓" if flag else ""  # noqa: E731
    for method in [m for m in results["methods"] if m in PPO_ROWS]:
        train = results["per_seed"][str(results["seeds"][0])]["runs"][method]["train"]
        stats = results["summary"][method]
        rows.append(
            [
                LABELS[method],
                check(train["advantage_normalization"]),
                str(train["rollout_batch_size"]),
                check(train["reference_ema"]),
                fmt(stats["gold/score"]),
                fmt(stats["gold/safety_rate"]),
                fmt(stats["rm/score"]),
                fmt(stats["kl/mean"]),
            ]
        )
    return rows


PPO_HEADER = ["PPO row", "adv. norm", "rollout batch", "ref. EMA", "gold reward", "safety rate", "RM score", "KL"]


def data_rows(results: dict[str, Any]) -> list[list[str]]:
    stats = results["world"]["stats"]
    rows = [[key.replace("_", " "), f"{value:.3f}"] for key, value in stats.items()]
    rows += [[f"reward model {key}", fmt(value)] for key, value in results["reward_model"].items() if key != "steps"]
    return rows


def synthetic_rows(results: dict[str, Any]) -> list[list[str]]:
    syn = results.get("synthetic")
    if not syn:
        return []
    return [
        [m, *[fmt(syn[m][k]) for k in ("unseen_mass", "optimal_mass", "cells_raised")]]
        for m in ("reference", "dpo", "ppo", "kl_optimum", "dpo_minus_ppo")
        if m in syn
    ]


def difference_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, stats in results["differences"].items():
        a, b = name.split(" - ")
        excludes_zero = stats["n"] > 1 and (stats["low"] > 0 or stats["high"] < 0)
        rows.append([f"{LABELS[a]} − {LABELS[b]}", fmt(stats), "yes" if excludes_zero else "no"])
    return rows


def timing_rows(results: dict[str, Any]) -> list[list[str]]:
    t = results["timings"]
    rows = [[name, f"{sec:.1f}"] for name, sec in t["stages"].items()]
    built = "the cached tiny world's own build" if t["world_cached"] else "tiny world build"
    rows += [[f"({built}: {k})", f"{v:.1f}"] for k, v in t["world_build"].items()]
    return rows + [["total", f"{t['total']:.1f}"]]


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the terminal and the Markdown report."""
    seeds = len(results["seeds"])
    out = [
        (
            "Main comparison on held-out prompts (Xu et al. Tables 2/4 layout); mean ± 95% t-interval half-width "
            f"over {seeds} seed(s)",
            ["method", *[title for _, title, _ in MAIN_COLUMNS]],
            main_rows(results),
        ),
        ("PPO key factors, cumulative rows (Xu et al. Table 3)", PPO_HEADER, ppo_rows(results)),
        (
            "Paired differences in gold reward over seeds (a − b)",
            ["comparison", "mean ± CI", "CI excludes 0"],
            difference_rows(results),
        ),
        (
            "Data and reward model (Ivison et al. Tables 1/2: data quality, RM accuracy)",
            ["quantity", "value"],
            data_rows(results),
        ),
        (
            "Synthetic study (Xu et al. section 4): mass on unseen responses",
            ["policy", "unseen mass", "optimal mass", "unseen cells raised"],
            synthetic_rows(results),
        ),
        ("Wall time of each stage (s)", ["stage", "seconds"], timing_rows(results)),
    ]
    return [t for t in out if t[2]]


def print_tables(results: dict[str, Any]) -> None:
    for title, header, rows in tables(results):
        table = Table(title=title, title_justify="left")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_report(results: dict[str, Any], out: Path) -> None:
    """``results.json``, the plots, ``report.md`` (all atomically), then the tables in the terminal."""
    from prefalign.studies.comparison.plots import write_plots

    write_json_atomic(out / "results.json", results)
    figures = write_plots(results, out)
    write_text_atomic(out / "report.md", report_markdown(results, figures))
    print_tables(results)
    console.print(f"report: {out / 'report.md'}")


# ----------------------------------------------------------------------------- report.md


def report_markdown(results: dict[str, Any], figures: list[str]) -> str:
    """The whole ``report.md``."""
    parts = [
        "# prefalign study: PPO, DPO and relatives on the tiny world",
        "",
        "All numbers below are computed by this run (see `results.json`); the outcome is reported as measured.",
        "",
    ]
    parts += ["## The tiny world", "", *world_description(results), ""]
    parts += ["## Findings", "", *[f"- {line}" for line in findings(results)], ""]
    if results["skipped"]:
        parts += ["## Methods not run", "", *[f"- **{m}**: {why}" for m, why in results["skipped"].items()], ""]
    for i, (title, header, rows) in enumerate(tables(results)):
        parts += [f"## {title}", "", markdown_table(header, rows), ""]
        if i == 0:
            parts += ["Notes:", "", *[f"- {note}" for note in NOTES], ""]
    if results.get("synthetic"):
        parts += ["Synthetic checks:", "", *[f"- {a}: {b}" for a, b in results["synthetic"]["check_lines"]], ""]
    parts += ["## Figures", "", *[f"![{Path(f).stem}]({f})" for f in figures], ""]
    parts += ["## Settings", "", "```yaml", yaml.safe_dump(results["config"], sort_keys=False).rstrip(), "```", ""]
    parts += [
        "## Files",
        "",
        "- `results.json`: every number above, per seed and summarised; `study.log`: stages and times;",
        "- `seed-*/<method>/metrics.jsonl`: each trainer's own log; `seed-*/<method>/model`: the trained policies;",
        "- `synthetic/`: the synthetic study's results and figures.",
        "",
    ]
    return "\n".join(parts)
