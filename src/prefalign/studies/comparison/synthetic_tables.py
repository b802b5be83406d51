"""The synthetic study (Xu et al. section 4) inside the comparison's results: its summary and its report rows."""

from __future__ import annotations

import math
from typing import Any

from prefalign.studies.comparison.findings import fmt


def synthetic_summary(synthetic: dict[str, Any] | None) -> dict[str, Any] | None:
    if synthetic is None:
        return None
    summary = synthetic["summary"]
    keep = ("reference", "dpo", "ppo", "kl_optimum", "dpo_minus_ppo")
    peaks = {m: summary.get(f"{m}_unseen_peak_per_seed", {}) for m in ("dpo", "ppo")}
    bounds = {"unseen_mass": (0.0, 1.0), "optimal_mass": (0.0, 1.0), "cells_raised": (0.0, math.inf)}
    clipped = {
        m: {
            k: {**v, "low": max(v["low"], bounds[k][0]), "high": min(v["high"], bounds[k][1])} if k in bounds else v
            for k, v in summary[m].items()
        }
        for m in keep
        if m in summary and m != "dpo_minus_ppo"
    }
    return {
        "num_seeds": summary["num_seeds"],
        **{m: summary[m] for m in keep if m in summary},
        **clipped,  # intervals of masses and counts clipped to their range
        "unseen_peak_per_seed": peaks,
        "unseen_peak_above_reference": {m: summary.get(f"{m}_unseen_peak_above_reference") for m in ("dpo", "ppo")},
        "cells_raised_per_seed": {m: summary.get(f"{m}_cells_raised_per_seed", {}) for m in ("dpo", "ppo")},
        "unseen_over_training": {str(r["seed"]): r.get("unseen_over_training") for r in synthetic["per_seed"]},
        "figure_seed": synthetic.get("figure_seed"),
        "check_lines": synthetic.get("check_lines", []),
        "figures": [f"synthetic/figure{k}.png" for k in (1, 2, 3, 4) if k < 4 or "activations" in synthetic],
        "activations": synthetic.get("activations"),
    }


def synthetic_rows(results: dict[str, Any]) -> list[list[str]]:
    syn = results.get("synthetic")
    if not syn:
        return []
    rows = []
    for m in ("reference", "dpo", "ppo", "kl_optimum", "dpo_minus_ppo"):
        if m not in syn:
            continue
        peaks = syn.get("unseen_peak_per_seed", {}).get(m) or {}
        above = (syn.get("unseen_peak_above_reference") or {}).get(m)
        peak = (
            f"{max(peaks.values()):.3f} (seed {max(peaks, key=peaks.get)}); {above}/{len(peaks)} seeds"
            if peaks
            else "-"
        )
        raised = (syn.get("cells_raised_per_seed") or {}).get(m) or {}
        rows.append(
            [
                m,
                *[fmt(syn[m][k]) for k in ("unseen_mass", "optimal_mass", "cells_raised")],
                peak,
                ", ".join(f"{s}:{c}" for s, c in raised.items()) or "-",
            ]
        )
    return rows
