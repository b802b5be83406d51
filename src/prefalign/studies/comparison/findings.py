"""The prose of the study report: verdicts on the papers' claims from paired differences, and the description of the
tiny world the numbers come from."""

from __future__ import annotations

import math
from typing import Any

from prefalign.studies.comparison.methods import LABELS

#: (comparison key, what the papers found) for the "agrees with the papers?" section
PAPER_CLAIMS = (
    ("ppo_ema - dpo", "PPO with the key factors beats DPO (Xu et al. Tables 2-5; Ivison et al. Table 3)"),
    ("dpo_iter - dpo", "iterative DPO with on-policy samples beats DPO on fixed data (Xu et al. Tables 2/4)"),
    (
        "dpo_sft_first - dpo",
        "SFT on the preference data before DPO reduces the distribution shift and helps (Xu et al. Table 2)",
    ),
    ("dpo - rrhf", "DPO beats RRHF (Xu et al. Table 4)"),
    ("dpo - pro", "DPO beats PRO (Xu et al. Table 4)"),
    (
        "ppo_ema - ppo_baseline",
        "the key factors (advantage normalisation, large batch, reference EMA) improve PPO (Xu et al. Table 3)",
    ),
)


def fmt(stats: dict[str, float] | None, digits: int = 3) -> str:
    if stats is None:
        return "-"
    mean, low, high = stats["mean"], stats.get("low", math.nan), stats.get("high", math.nan)
    if isinstance(mean, float) and math.isnan(mean):
        return "-"
    if stats.get("n", 1) < 2 or math.isnan(low):
        return f"{mean:.{digits}f}"
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


def findings(results: dict[str, Any]) -> list[str]:
    """Sentences computed from the numbers: the ranking and each paper claim's verdict."""
    summary = results["summary"]
    ranked = sorted(results["methods"], key=lambda m: -summary[m]["gold/score"]["mean"])
    lines = [
        "Ranking by held-out gold reward (greedy): "
        + " > ".join(f"{LABELS[m]} ({summary[m]['gold/score']['mean']:.3f})" for m in ranked)
        + f"; the SFT model scores {summary['sft']['gold/score']['mean']:.3f}."
    ]
    for key, claim in PAPER_CLAIMS:
        stats = results["differences"].get(key)
        measured = "" if stats is None else f" Measured difference {fmt(stats)}."
        lines.append(f"{claim}: **{verdict(stats)}**.{measured}")
    return lines


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
    "Every method is scored on its final model (no checkpoint selection); seeds vary the reward model and every "
    "alignment run, not the tiny world or its SFT model.",
    "DPO + SFT (Safe) first: the SFT stage trains on every safe response of the pairs (Xu et al.'s 'SFT (Safe)'), "
    "which the preference generator wrote, mistakes included.",
    "PPO rows: every row runs the same number of PPO steps, so the large-batch rows see more samples (as in "
    "`prefalign ppo-ablation`).",
)
