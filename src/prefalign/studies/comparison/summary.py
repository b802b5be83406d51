"""The study's numbers summarised over seeds: means with intervals, paired differences, convergence and curves.

Intervals are 95% Student-t intervals over seeds (:func:`prefalign.studies.synthetic.report.mean_confidence_interval`),
**clipped to the metric's range** (:data:`RANGES`: rates, gold rewards and pass@k lie in [0, 1]), so
none runs past what the metric can take. A metric that is the same in every seed (the SFT model's
gold reward: one model, greedy decoding) gets a zero-width interval.

``results["testbeds"][name]["summary"][method][metric] = {mean, low, high, n}`` for every method of
the testbed (the SFT start included) and every metric its evaluation reports.
"""

from __future__ import annotations

import math
from typing import Any

from prefalign.studies.synthetic.report import mean_confidence_interval

#: metric name (or prefix) -> its range (low, high); clipping applies to intervals of these metrics
RANGES: dict[str, tuple[float, float]] = {
    "gold/": (0.0, 1.0),
    "sampled/gold_score": (0.0, 1.0),
    "pass@": (0.0, 1.0),
    "truncated": (0.0, 1.0),
}
#: paired comparisons (a - b per seed) on the gold reward, in every testbed where both were run
COMPARISONS = (
    ("ppo_ema", "dpo"),
    ("dpo_iter", "dpo"),
    ("ppo_ema", "dpo_iter"),
    ("ppo_ema", "ppo_baseline"),
    ("ppo_baseline", "dpo"),
    ("dpo_sft_first", "dpo"),
    ("dpo_drop_dual_unsafe", "dpo"),
    ("dpo_drop_dual_safe", "dpo"),
    ("dpo", "pro"),
    ("dpo", "rrhf"),
    ("ppo_advnorm", "ppo_baseline"),
    ("ppo_large_batch", "ppo_advnorm"),
    ("ppo_ema", "ppo_large_batch"),
    ("ppo_grpo", "ppo_ema"),
    ("ppo_rloo", "ppo_ema"),
    ("ppo_uwo", "ppo_ema"),
    ("ppo_wco", "ppo_ema"),
    ("dpo", "sft"),
)


def metric_range(metric: str) -> tuple[float, float]:
    for prefix, bounds in RANGES.items():
        if metric.startswith(prefix):
            return bounds
    return (-math.inf, math.inf)


def summarize(values: list[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, float]:
    """Mean and 95% Student-t interval over seeds, clipped to ``bounds``; one value: no interval (NaN bounds)."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return {"mean": values[0], "low": math.nan, "high": math.nan, "n": len(values)}
    ci = mean_confidence_interval(values, 0.95)
    return {
        "mean": ci["mean"],
        "low": max(ci["low"], bounds[0]),
        "high": min(ci["high"], bounds[1]),
        "n": ci["n"],
    }


def _runs(per_seed: dict[int, Any], testbed: str, method: str) -> list[dict[str, Any]]:
    tb = [run["testbeds"][testbed] for run in per_seed.values()]
    return [{"metrics": t["sft_metrics"]} if method == "sft" else t["runs"][method] for t in tb]


def method_summary(per_seed: dict[int, Any], testbed: str, method: str) -> dict[str, dict[str, float]]:
    runs = _runs(per_seed, testbed, method)
    keys = runs[0]["metrics"].keys()
    return {k: summarize([float(r["metrics"][k]) for r in runs], metric_range(k)) for k in keys}


def paired_differences(
    per_seed: dict[int, Any], testbed: str, methods: list[str], metric: str = "gold/score"
) -> dict[str, Any]:
    """Per-seed differences a - b (both trained with the same seed) for every comparison whose two methods ran."""
    out = {}
    have = {"sft", *methods}
    for a, b in COMPARISONS:
        if a in have and b in have:
            diffs = [
                ra["metrics"][metric] - rb["metrics"][metric]
                for ra, rb in zip(_runs(per_seed, testbed, a), _runs(per_seed, testbed, b))
            ]
            out[f"{a} - {b}"] = summarize(diffs, (-1.0, 1.0))
    return out


def convergence_summary(per_seed: dict[int, Any], testbed: str, method: str) -> dict[str, Any]:
    """How many seeds converged (and stopped at their plateau), the plateau step and the run length (mean, range)
    against the cap."""
    conv = [r["convergence"] for r in _runs(per_seed, testbed, method)]
    steps, lengths = [c["plateau_step"] for c in conv], [c["last_step"] for c in conv]
    return {
        "objective": conv[0]["objective"],
        "converged": sum(bool(c["converged"]) for c in conv),
        "stopped_early": sum(bool(c.get("stopped_early")) for c in conv),
        "seeds": len(conv),
        "plateau_step_mean": sum(steps) / len(steps),
        "plateau_step_min": min(steps),
        "plateau_step_max": max(steps),
        "last_step": max(lengths),
        "last_step_mean": sum(lengths) / len(lengths),
        "last_step_min": min(lengths),
        "cap": max((c.get("cap") or c["last_step"]) for c in conv),
        "first": sum(c["first"] for c in conv) / len(conv),
        "final": sum(c["final"] for c in conv) / len(conv),
    }


def curve_summary(per_seed: dict[int, Any], testbed: str, method: str) -> list[dict[str, Any]]:
    """The over-optimisation curve averaged over seeds point by point: point i of every seed's curve (a DPO-Iter
    round; for PPO the i-th of the checkpoints spread over the run, whose step differs between seeds when runs stop
    at their own plateaus: ``step`` is then the mean, ``step_range`` the range)."""
    curves = [r.get("curve") for r in _runs(per_seed, testbed, method)]
    if not curves or any(not c for c in curves):
        return []
    length = min(len(c) for c in curves)
    out = []
    for i in range(length):
        points = [c[i] for c in curves]
        steps = [p["step"] for p in points]
        samples = [p.get("samples", p["step"]) for p in points]
        row = {"step": round(sum(steps) / len(steps)), "samples": round(sum(samples) / len(samples))}
        if min(steps) != max(steps):
            row["step_range"] = [min(steps), max(steps)]
        for key in ("kl", "gold", "rm"):
            if all(key in p for p in points):
                row[key] = summarize([p[key] for p in points], (0.0, 1.0) if key == "gold" else (-math.inf, math.inf))
        out.append(row)
    return out


def testbed_results(per_seed: dict[int, Any], testbed: str, methods: list[str]) -> dict[str, Any]:
    """``results["testbeds"][testbed]``: summary, paired differences, convergence and curves."""
    online = [m for m in methods if m == "dpo_iter" or m.startswith("ppo")]
    return {
        "summary": {m: method_summary(per_seed, testbed, m) for m in ["sft", *methods]},
        "differences": paired_differences(per_seed, testbed, methods),
        "convergence": {m: convergence_summary(per_seed, testbed, m) for m in methods},
        "curves": {m: curve_summary(per_seed, testbed, m) for m in online},
    }
