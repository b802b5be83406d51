"""The study's results: ``results.json``, the tables (terminal and Markdown) and ``report.md``.

Tables, per testbed, in the papers' layout:

- main comparison (Xu et al. Tables 2 and 4: one row per method; gold reward, safety rate, exact,
  over-refusal, learned-reward score, KL to the SFT model, pass@k);
- PPO key factors (Xu et al. Table 3: cumulative rows with check marks);
- convergence: each method's own held-out objective, where it plateaued, how many seeds converged;
- over-optimisation: gold and learned reward against KL to the SFT model during training;
- paired differences between methods over seeds;

then the data and reward model (Ivison et al. Tables 1/2), the tuning grid and the values it chose,
the synthetic study (Xu et al. section 4) and the time each stage took.

Everything that depends on the clock lives under ``results["timings"]``, so two runs with the same
settings give the same ``results.json`` apart from that key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from prefalign.atomic import write_json_atomic, write_text_atomic
from prefalign.studies.comparison import findings as F
from prefalign.studies.comparison import ivison as IV
from prefalign.studies.comparison.beyond import runs_in
from prefalign.studies.comparison.findings import NOTES, findings, fmt, tuning_lines, world_description
from prefalign.studies.comparison.methods import LABELS, PPO_ROWS
from prefalign.studies.comparison.summary import summarize, testbed_results
from prefalign.studies.comparison.synthetic_tables import synthetic_rows, synthetic_summary
from prefalign.studies.comparison.tiny_world.prepare import count_parameters
from prefalign.trainers.logging import console

#: (metric key, column title)
MAIN_COLUMNS = (
    ("gold/score", "gold reward"),
    ("gold/safety_rate", "safety rate"),
    ("gold/accuracy", "exact (safe)"),
    ("gold/over_refusal", "over-refusal"),
    ("rm/score", "RM score"),
    ("kl/mean", "KL(pi||pi_SFT)"),
    ("pass@1", "pass@1"),
    ("pass@5", "pass@5"),
)


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
    testbeds = {t: testbed_results(per_seed, t, [m for m in methods if runs_in(m, t)]) for t in config.testbeds}
    first = testbeds[config.testbeds[0]]
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
        "testbeds": testbeds,
        # the first testbed's summary and differences, where earlier versions kept them
        "summary": first["summary"],
        "differences": first["differences"],
        "reward_model": {
            k: summarize([float(run["reward_model"][k]) for run in per_seed.values()])
            for k in next(iter(per_seed.values()))["reward_model"]
        },
        "synthetic": synthetic_summary(synthetic),
        "timings": {
            "stages": seconds,
            "total": total_seconds,
            "world_cached": world.cached,
            "world_build": world.info.get("seconds", {}),
        },
    }


# ----------------------------------------------------------------------------- tables


def main_rows(results: dict[str, Any], testbed: str) -> list[list[str]]:
    tb = results["testbeds"][testbed]
    rows = []
    for method in [m for m in ["sft", *results["methods"]] if m in tb["summary"]]:  # a method may skip a testbed
        stats = tb["summary"][method]
        conv = tb["convergence"].get(method)
        converged = "-" if conv is None else f"{conv['converged']}/{conv['seeds']}"
        rows.append([LABELS[method], *[fmt(stats.get(key)) for key, _ in MAIN_COLUMNS], converged])
    return rows


def ppo_rows(results: dict[str, Any], testbed: str) -> list[list[str]]:
    tb, rows, check = results["testbeds"][testbed], [], lambda flag: "✓" if flag else ""  # noqa: E731
    for method in [m for m in results["methods"] if m in PPO_ROWS and m in tb["summary"]]:
        train = results["per_seed"][str(results["seeds"][0])]["testbeds"][testbed]["runs"][method]["train"]
        stats = tb["summary"][method]
        rows.append(
            [
                LABELS[method],
                check(train["advantage_normalization"]),
                str(train["rollout_batch_size"]),
                check(train["reference_ema"]),
                check(train.get("value_normalization")),
                f"{train.get('actor_learning_rate', float('nan')):g} / {train.get('kl_coef', float('nan')):g}",
                f"{train['steps']} / {train['samples']}",
                *[fmt(stats[k]) for k in ("gold/score", "gold/safety_rate", "rm/score", "kl/mean")],
            ]
        )
    return rows


PPO_HEADER = [
    "PPO row",
    "adv. norm",
    "rollout batch",
    "ref. EMA",
    "value norm",
    "lr / KL",
    "steps / samples",
    "gold",
    "safety",
    "RM",
    "KL",
]


def convergence_rows(results: dict[str, Any], testbed: str) -> list[list[str]]:
    rows = []
    for method, c in results["testbeds"][testbed]["convergence"].items():
        rows.append(
            [
                LABELS[method],
                c["objective"],
                f"{c['first']:.4g} → {c['final']:.4g}",
                f"{c['plateau_step_mean']:.0f} ({c['plateau_step_min']}-{c['plateau_step_max']})",
                f"{c.get('last_step_mean', c['last_step']):.0f} ({c.get('last_step_min', c['last_step'])}-"
                f"{c['last_step']}) / {c.get('cap', c['last_step'])}",
                f"{c.get('stopped_early', 0)}/{c['seeds']}",
                f"{c['converged']}/{c['seeds']}",
            ]
        )
    return rows


CONVERGENCE_HEADER = [
    "method",
    "objective",
    "first → final (mean)",
    "plateau at (range)",
    "run length (range) / cap",
    "stopped at plateau",
    "converged",
]


def curve_rows(results: dict[str, Any], testbed: str) -> list[list[str]]:
    rows = []
    for method, points in results["testbeds"][testbed]["curves"].items():
        for p in points:
            rows.append(
                [
                    LABELS[method],
                    str(p["step"]) + (" ({}-{})".format(*p["step_range"]) if "step_range" in p else ""),
                    str(p["samples"]),
                    fmt(p["kl"]),
                    fmt(p["gold"]),
                    fmt(p.get("rm")),
                ]
            )
    return rows


CURVE_HEADER = ["method", "step / round", "samples", "KL to SFT", "gold reward (T=1)", "learned reward (T=1)"]


def difference_rows(results: dict[str, Any], testbed: str) -> list[list[str]]:
    rows = []
    for name, stats in results["testbeds"][testbed]["differences"].items():
        a, b = name.split(" - ")
        excludes_zero = stats["n"] > 1 and (stats["low"] > 0 or stats["high"] < 0)
        rows.append([f"{LABELS[a]} − {LABELS[b]}", fmt(stats), "yes" if excludes_zero else "no"])
    return rows


def sweep_rows(results: dict[str, Any]) -> list[list[str]]:
    sweeps = results.get("sweeps")
    if not sweeps:
        return []
    names = {"ema": "reference-EMA rate per step", "batch": "rollout batch"}
    return [
        [
            names[r["kind"]],
            f"{r['value']:g}",
            r["schedule"].replace("_", " "),
            f"{r['steps']} / {r['samples']}",
            *[fmt(r.get(k)) for k in ("gold/score", "gold/safety_rate", "rm/score", "kl/mean", "pass@1")],
        ]
        for r in sweeps["rows"]
    ]


SWEEP_HEADER = ["factor", "value", "schedule", "steps / samples", "gold", "safety", "RM", "KL", "pass@1"]


def data_rows(results: dict[str, Any]) -> list[list[str]]:
    stats = results["world"]["stats"]
    rows = [[key.replace("_", " "), f"{value:.3f}"] for key, value in stats.items()]
    rows += [[f"reward model {key}", fmt(value)] for key, value in results["reward_model"].items() if key != "steps"]
    return rows


def timing_rows(results: dict[str, Any]) -> list[list[str]]:
    t = results["timings"]
    rows = [[name, f"{sec:.1f}"] for name, sec in t["stages"].items()]
    built = "the cached tiny world's own build" if t["world_cached"] else "tiny world build"
    rows += [[f"({built}: {k})", f"{v:.1f}"] for k, v in t["world_build"].items()]
    return rows + [["total (wall)", f"{t['total']:.1f}"]]


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the terminal and the Markdown report."""
    seeds = len(results["seeds"])
    out = []
    for tb in results["testbeds"]:
        out += [
            (
                f"[{tb}] Main comparison on held-out prompts (Xu et al. Tables 2/4 layout); mean ± 95% interval "
                f"half-width over {seeds} seed(s), clipped to the metric's range",
                ["method", *[title for _, title in MAIN_COLUMNS], "converged"],
                main_rows(results, tb),
            ),
            (f"[{tb}] PPO key factors, cumulative rows (Xu et al. Table 3)", PPO_HEADER, ppo_rows(results, tb)),
            (
                f"[{tb}] Convergence on each method's own held-out objective",
                CONVERGENCE_HEADER,
                convergence_rows(results, tb),
            ),
            (
                f"[{tb}] Over-optimisation: held-out gold and learned reward against KL to the SFT model during "
                "training (mean over seeds)",
                CURVE_HEADER,
                curve_rows(results, tb),
            ),
            (
                f"[{tb}] Paired differences in gold reward over seeds (a − b)",
                ["comparison", "mean ± CI", "CI excludes 0"],
                difference_rows(results, tb),
            ),
        ]
    sweeps = results.get("sweeps") or {}
    out += [
        (
            f"[{sweeps.get('testbed')}] Xu et al.'s factors swept (Figure 2): PPO with all factors, one factor "
            f"changed; 'same steps' runs {sweeps.get('run_length')} steps, 'same samples' as many samples as "
            "the small-batch row",
            SWEEP_HEADER,
            sweep_rows(results),
        )
    ]
    out += [(IV.TITLE, IV.HEADER, IV.rows(results))]
    out += [
        (
            "Data and reward model (Ivison et al. Tables 1/2: data quality, RM accuracy)",
            ["quantity", "value"],
            data_rows(results),
        ),
        (
            "Synthetic study (Xu et al. section 4): mass on unseen responses",
            [
                "policy",
                "unseen mass (end)",
                "optimal mass",
                "unseen cells raised",
                "peak unseen mass during training (max seed); seeds above the reference",
                "raised cells per seed",
            ],
            synthetic_rows(results),
        ),
        (
            "Wall time of each stage or job (s; jobs run side by side on the workers)",
            ["stage", "seconds"],
            timing_rows(results),
        ),
    ]
    return [t for t in out if t[2]]


def print_tables(results: dict[str, Any]) -> None:
    for title, header, rows in tables(results):
        if title.startswith("Wall time") or "Over-optimisation" in title:
            continue  # long; in report.md
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
    parts += ["## Tuning", "", *[f"- {line}" for line in tuning_lines(results)], ""]
    if results["skipped"]:
        parts += ["## Methods not run", "", *[f"- **{m}**: {why}" for m, why in results["skipped"].items()], ""]
    for i, (title, header, rows) in enumerate(tables(results)):
        parts += [f"## {title}", "", markdown_table(header, rows), ""]
        if i == 0:
            parts += ["Notes:", "", *[f"- {note}" for note in NOTES], ""]
    if results.get("synthetic"):
        parts += ["Synthetic checks:", "", *[f"- {a}: {b}" for a, b in results["synthetic"]["check_lines"]], ""]
        parts += F.activation_lines(results["synthetic"])
    parts += ["## Figures", "", *[f"![{Path(f).stem}]({f})" for f in figures], ""]
    parts += ["## Settings", "", "```yaml", yaml.safe_dump(results["config"], sort_keys=False).rstrip(), "```", ""]
    parts += [
        "## Files",
        "",
        "- `results.json`: every number above, per seed and summarised (`testbeds.<name>.summary.<method>.<metric>`);",
        "- `study.log`: stages, jobs and times; `seed-*/<method>/` and `seed-*/<testbed>/`: each trainer's own "
        "`metrics.jsonl` and final model;",
        "- `synthetic/`: the synthetic study's results and figures.",
        "",
    ]
    return "\n".join(parts)
