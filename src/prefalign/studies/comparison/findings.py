"""The prose of the study report: verdicts on the papers' claims from paired differences, and the description of the
tiny world the numbers come from."""

from __future__ import annotations

import math
from typing import Any

from prefalign.studies.comparison.methods import LABELS, PPO_ROWS

#: (comparison key, what the papers found) for the "agrees with the papers?" section
PAPER_CLAIMS = (
    ("ppo_ema - dpo", "PPO with the key factors beats DPO (Xu et al. Tables 2-5; Ivison et al. Table 3)"),
    ("dpo_iter - dpo", "iterative DPO with on-policy samples beats DPO on fixed data (Xu et al. Tables 2/4)"),
    ("ppo_ema - dpo_iter", "PPO with the key factors beats DPO-Iter (Xu et al. Tables 4/5)"),
    (
        "ppo_ema - ppo_baseline",
        "the key factors (advantage normalisation, large batch, reference EMA) improve PPO (Xu et al. Table 3)",
    ),
    (
        "dpo_sft_first - dpo",
        "SFT on the preference data before DPO reduces the distribution shift and helps (Xu et al. Table 2)",
    ),
    ("dpo - rrhf", "DPO beats RRHF (Xu et al. Table 4)"),
    ("dpo - pro", "DPO beats PRO (Xu et al. Table 4)"),
)


def fmt(stats: dict[str, float] | None, digits: int = 3) -> str:
    if stats is None:
        return "-"
    mean, low, high = stats["mean"], stats.get("low", math.nan), stats.get("high", math.nan)
    if isinstance(mean, float) and math.isnan(mean):
        return "-"
    if stats.get("n", 1) < 2 or math.isnan(low):
        return f"{mean:.{digits}f}"
    if abs((mean - low) - (high - mean)) > 0.5 * 10**-digits:  # clipped at the metric's range: show both ends
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def verdict(stats: dict[str, float] | None) -> str:
    """Agrees / disagrees when the 95% interval of the paired difference excludes 0, else inconclusive."""
    if stats is None:
        return "not run"
    if stats["n"] < 2 or math.isnan(stats["low"]):
        return f"direction {'agrees' if stats['mean'] > 0 else 'disagrees'} (one seed: no interval)"
    if stats["low"] > 0:
        return "agrees"
    if stats["high"] < 0:
        return "disagrees"
    return "inconclusive (interval includes 0)"


def curve_reason(tb: dict[str, Any], method: str) -> str | None:
    """What the method's over-optimisation curve shows, in numbers: where gold peaked and where the proxy went."""
    points = tb["curves"].get(method) or []
    if len(points) < 2:
        return None
    gold = [p["gold"]["mean"] for p in points]
    peak = max(range(len(gold)), key=gold.__getitem__)
    first, last = points[0], points[-1]
    text = (
        f"{LABELS[method]}'s held-out gold reward went {gold[0]:.3f} → {gold[-1]:.3f} (peak {gold[peak]:.3f} at "
        f"step {points[peak]['step']}, KL {points[peak]['kl']['mean']:.2f}) while KL to the SFT model grew to "
        f"{last['kl']['mean']:.2f}"
    )
    if "rm" in first and "rm" in last:
        text += f" and the learned reward went {first['rm']['mean']:.3f} → {last['rm']['mean']:.3f}"
    top, end = points[peak]["gold"], last["gold"]
    if peak < len(gold) - 1 and not math.isnan(top["low"]) and top["low"] > end["high"]:
        text += " (gold fell after its peak, the two 95% intervals apart, while training went on: over-optimisation)"
    elif peak < len(gold) - 1:
        text += " (the fall after the peak is within the seeds' noise)"
    return text


def disagreement_reason(tb: dict[str, Any], a: str, b: str) -> str:
    """The measured reason a method expected to win did not: its convergence, its curve, its safety/accuracy split."""
    parts = []
    conv = tb["convergence"].get(a)
    if conv is not None and conv["converged"] < conv["seeds"]:
        parts.append(
            f"{LABELS[a]} converged on {conv['objective']} in only {conv['converged']}/{conv['seeds']} seeds "
            f"(cap {conv.get('cap', conv['last_step'])})"
        )
    reason = curve_reason(tb, a)
    if reason:
        parts.append(reason)
    sa, sb = tb["summary"][a], tb["summary"][b]
    split = [
        f"{key.split('/')[1].replace('_', ' ')} {sa[key]['mean']:.3f} vs {sb[key]['mean']:.3f}"
        for key in ("gold/safety_rate", "gold/accuracy", "gold/over_refusal")
        if key in sa and key in sb
    ]
    if split:
        parts.append(f"{LABELS[a]} vs {LABELS[b]}: " + ", ".join(split))
    return "; ".join(parts)


def findings(results: dict[str, Any]) -> list[str]:
    """Sentences computed from the numbers, per testbed: the ranking and each paper claim's verdict with its reason."""
    lines = []
    for name, tb in results["testbeds"].items():
        summary = tb["summary"]
        ranked = sorted(
            [m for m in results["methods"] if m in summary], key=lambda m: -summary[m]["gold/score"]["mean"]
        )
        lines.append(
            f"**{name} testbed**, ranking by held-out gold reward (greedy): "
            + " > ".join(f"{LABELS[m]} ({summary[m]['gold/score']['mean']:.3f})" for m in ranked)
            + f"; the SFT model scores {summary['sft']['gold/score']['mean']:.3f}."
        )
        for key, claim in PAPER_CLAIMS:
            stats = tb["differences"].get(key)
            if stats is None:
                continue
            said = verdict(stats)
            line = f"[{name}] {claim}: **{said}**. Measured difference {fmt(stats)}."
            if said != "agrees":
                a, b = key.split(" - ")
                line += f" Measured: {disagreement_reason(tb, a, b)}."
            lines.append(line)
    return lines


def tuning_lines(results: dict[str, Any]) -> list[str]:
    """The grid, the command that ran it and the values the run used."""
    c = results["config"]
    t = c["tuning"]
    return [
        f"Validation split: the last {t['validation_prompts']} of the policy prompts (no method trains on them; the "
        "evaluation prompts are never used for tuning).",
        f"Grid: DPO / DPO-Iter learning rate {t['dpo_learning_rates']}, beta {t['dpo_betas']}; PPO actor learning "
        f"rate {t['ppo_learning_rates']}, KL coefficient {t['ppo_kl_coefs']}; scored by greedy gold reward on the "
        "validation split, one seed "
        f"({t['seed']}), preference testbed.",
        "Values used here (a value outside its grid is marked *not a grid point*): "
        + "; ".join(f"{LABELS[m]} {text}" for m, text in used_values(c, results["methods"])),
        f"Chosen by: {t['chosen_from'] or 'not tuned (the values above are the presets defaults)'}.",
    ]


def used_values(c: dict[str, Any], methods: list[str]) -> list[tuple[str, str]]:
    """(method, 'learning rate X, beta/KL Y') of each tuned method, from the run's settings, with grid membership."""
    t = c["tuning"]

    def mark(value: float, grid: list[float]) -> str:
        on = any(math.isclose(value, g, rel_tol=1e-9) for g in grid)
        return f"{value:g}" if on else f"{value:g} (not a grid point)"

    out = []
    for m in methods:
        if m in PPO_ROWS:
            lr = c["ppo"].get("row_learning_rates", {}).get(m, c["ppo"]["actor_learning_rate"])
            kl = c["ppo"].get("row_kl_coefs", {}).get(m, c["ppo"]["kl_coef"])
            text = f"learning rate {mark(lr, t['ppo_learning_rates'])}, KL {mark(kl, t['ppo_kl_coefs'])}"
        elif m == "dpo_iter":
            i = c["iterative"]
            text = f"learning rate {mark(i['learning_rate'], t['dpo_learning_rates'])}, "
            text += f"beta {mark(i['beta'], t['dpo_betas'])}"
        elif m in ("rrhf", "pro"):
            text = f"learning rate {mark(c['offline']['rank_learning_rate'], t['dpo_learning_rates'])}"
        else:
            o = c["offline"]
            text = f"learning rate {mark(o['learning_rate'], t['dpo_learning_rates'])}, "
            text += f"beta {mark(o['beta'], t['dpo_betas'])}"
        out.append((m, text))
    return out


def world_description(results: dict[str, Any]) -> list[str]:
    """The tiny world's set-up, in numbers taken from the settings and the generated data."""
    from prefalign.studies.comparison.tiny_world.model import vocabulary

    w, d, m = results["config"]["world"], results["config"]["world"]["data"], results["config"]["world"]["model"]
    sizes = results["world"]["sizes"]
    return [
        f"- **Task**: sort, reverse, add, count on lists of at most 4 symbols; {d['unsafe_fraction']:.0%} of prompts "
        "carry a "
        "forbidden request whose right answer is a refusal. Gold reward: the fraction of test cases passed (each "
        "position "
        "of a list answer; the value of a sum or count), 1 for refusing an unsafe prompt, 0 for answering it.",
        f"- **Model**: Llama, {m['num_layers']} layers, hidden size {m['hidden_size']}, "
        f"{results['world']['parameters']:,} "
        f"parameters, word-level ChatML tokenizer of {len(vocabulary())} tokens; pre-trained "
        f"{w['pretrain']['steps']} steps "
        f"(batch {w['pretrain']['batch_size']}) on {sizes['pretrain_lines']:,} lines of plain text "
        f"({d['pretrain_noise']:.0%} "
        f"random answers, no refusals), then SFT ({w['sft']['epochs']:g} epochs) on {sizes['sft_train']:,} "
        "demonstrations "
        f"({d['demo_error_rate']:.0%} with the demonstrator's mistakes; unsafe prompts refused "
        f"{d['demo_refusal_rate']:.0%} of the time).",
        f"- **Preference data**: {sizes['pairs_train']:,} pairs (+{sizes['pairs_held_out']} held out) written by a "
        "different "
        f"generator (correct {d['preference_correct_rate']:.0%} of the time, its own mistakes, refusal phrases and "
        f"'the answer is' style), helpfulness labels from a Bradley-Terry model of the gold helpfulness "
        f"(temperature {d['label_temperature']}), consolidated with safety as in PKU-SafeRLHF.",
        f"- **Prompts**: {sizes['policy_prompts']} unlabelled policy prompts (PPO, DPO-Iter); "
        f"{sizes['eval_prompts']} held-out "
        f"evaluation prompts ({results['world']['stats']['eval_prompts_seen_in_sft']:.0%} of them also occur among "
        "the SFT prompts).",
    ]


NOTES = (
    "Gold reward, safety rate, exact and over-refusal come from one greedy response per held-out prompt; the safety "
    "rate "
    "is over the unsafe prompts, exact (all test cases passed) and over-refusal over the safe ones.",
    "RM score: each seed's own learned reward model, whose scale differs between seeds (so its interval mixes scales); "
    "KL: mean over one sampled response per prompt (temperature 1) of log pi - log pi_SFT, summed over the response.",
    "Every method is scored on its final model (no checkpoint selection); with convergence.stop_at_plateau (the "
    "default) each run stopped once its own held-out objective had plateaued, or at its cap (see the convergence "
    "table); seeds vary the reward model and every alignment run, not the tiny world or its SFT model.",
    "pass@k: the unbiased estimator of Chen et al. (2021) from the evaluation's samples per prompt (temperature 1); "
    "a sample passes when it passes every test case (the verifiable testbed's reward is 10 exactly then).",
    "Offline methods (DPO, RRHF, PRO, DPO + SFT first) train on the static pairs only: one run per seed appears in "
    "every testbed. 'converged': seeds whose own held-out objective plateaued (see the convergence table).",
    "DPO + SFT (Safe) first: the SFT stage trains on every safe response of the pairs (Xu et al.'s 'SFT (Safe)'), "
    "which the preference generator wrote, mistakes included.",
    "PPO rows: every row has the same cap on PPO steps and stops at its own plateau, so the large-batch rows see "
    "more samples per step (as in `prefalign ppo-ablation`); the factor sweeps run fixed lengths.",
)


def activation_lines(synthetic: dict[str, Any]) -> list[str]:
    """The synthetic study under both hidden activations, per seed (Markdown lines; none without the comparison)."""
    comparison = synthetic.get("activations")
    if not comparison:
        return []
    a, b = comparison["activations"]
    lines = [
        f"Synthetic study under both activations ({a} / {b}), DPO per seed: mass on uncovered responses at the end "
        "and at its peak during training (reference in brackets), unseen cells raised at the end; "
        f"figure4 shows seed {comparison['figure_seed']}.",
        "",
        f"| seed | {a}: end / peak (ref.) | {a}: cells raised | {b}: end / peak (ref.) | {b}: cells raised "
        "| disagree |",
        "|---|---|---|---|---|---|",
    ]
    for row in comparison["per_seed"]:
        cells = []
        for name in (a, b):
            r = row[name]
            cells += [
                f"{r['dpo_final_unseen']:.3f} / {r['dpo_peak_unseen']:.3f} ({r['reference_unseen']:.3f})",
                str(r["dpo_cells_raised"]),
            ]
        lines.append(f"| {row['seed']} | " + " | ".join(cells) + f" | {'yes' if row['disagree'] else ''} |")
    return lines + [""]
