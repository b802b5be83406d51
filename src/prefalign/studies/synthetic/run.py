"""The synthetic study of Xu et al. (2024), section 4: does DPO put mass on unseen responses?

``run_synthetic(SyntheticConfig())`` runs, for every seed: the scenario (8 prompts, 8
responses, the optimum on the diagonal, a sparse preference data set), the reference policy,
DPO against it, a Bradley-Terry reward model and PPO against that reward with the KL penalty to
the same reference; it also computes Eq. 8's KL-regularised optimum pi*_r for the learned
reward (the policy PPO converges to) and checks Theorem 4.1 numerically. It then reports, over
seeds, mean and t-interval of:

* ``unseen_mass``   mass a policy puts on the responses a prompt's pairs never mention;
* ``optimal_mass``  mass on the optimal response;
* ``cells_raised``  unseen (prompt, response) cells whose probability rose above the
                    reference's by more than ``raised_margin``;

plus the counter-example of Table 1. It prints rich tables and writes to ``output_dir``:
``figure1.png`` (+ ``figure1.json``, its numbers), ``figure2.png`` (+ ``figure2.json``, the
summary bars), ``figure3.png`` (uncovered mass over training, per seed), with ``compare_activation``
``figure4.png`` (both activations side by side) and ``results.json`` (config, per-seed numbers,
summary, checks), atomically.

The pieces live in ``synthetic_scenario`` (data, models, metrics), ``synthetic_training``
(reward model, DPO, PPO), ``synthetic_theory`` (Eq. 8, counter-example, theorem check) and
``synthetic_report`` (statistics, files, figures); they are re-exported here. Choices the
paper leaves open are listed in those modules' docstrings; the main ones: the label order
among non-optimal responses is random, 3 covered responses per prompt (all 3 pairs among
them), tanh MLPs of 32 hidden units, a freshly initialised (near-uniform) reference.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from prefalign.studies.synthetic.figures import compare_activations, plot_unseen_over_training
from prefalign.studies.synthetic.report import (
    figure1_data,
    mean_confidence_interval,
    plot_figure1,
    plot_summary,
    print_report,
    write_json_atomic,
)
from prefalign.studies.synthetic.scenario import (
    SyntheticScenario,
    build_reference,
    build_scenario,
    policy_metrics,
    table_logprobs,
    torch_threads,
)
from prefalign.studies.synthetic.theory import check_theorem, counter_example, kl_regularized_optimum
from prefalign.studies.synthetic.training import reward_table, train_dpo, train_ppo, train_reward_model

__all__ = [
    "SyntheticConfig",
    "SyntheticScenario",
    "build_reference",
    "build_scenario",
    "check_theorem",
    "counter_example",
    "kl_regularized_optimum",
    "policy_metrics",
    "run_seed",
    "run_synthetic",
    "train_dpo",
    "train_ppo",
    "train_reward_model",
]

METHODS = ("reference", "dpo", "ppo", "kl_optimum")
METRICS = ("unseen_mass", "optimal_mass", "cells_raised")


@dataclass
class SyntheticConfig:
    """Settings of the synthetic study (Xu et al. 2024, section 4.2)."""

    seeds: int = 20
    """Number of seeds; seed k of the run is first_seed + k. Each seed draws its own data set,
    reference and initialisations. At least 2 (for the confidence interval)."""
    first_seed: int = 0
    """The first seed."""
    num_prompts: int = 8
    """Number of prompts, and of responses (the paper: 8)."""
    responses_per_prompt: int = 3
    """Coverage: responses per prompt that appear in the preference data, the optimal one
    included (2..num_prompts); the others are unseen for that prompt."""
    pairs_per_prompt: int | None = None
    """Pairs per prompt among the covered responses, from responses_per_prompt - 1 to all of
    them; None (default) takes all pairs."""
    reference: Literal["random", "uniform", "data"] = "random"
    """Reference policy: "random" a freshly initialised MLP (near-uniform), "uniform" exactly
    uniform, "data" fitted to the responses of the preference data (smoothed)."""
    reference_steps: int = 300
    """Adam steps fitting the "data" reference."""
    reference_lr: float = 1e-2
    """Learning rate fitting the "data" reference."""
    reference_smoothing: float = 0.2
    """Uniform mass mixed into the "data" reference's target, in (0, 1]."""
    hidden_size: int = 32
    """Hidden units of every MLP (policy, reference, reward model, critic)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden activation of every MLP; decides how much the networks share between prompts."""
    beta: float = 0.1
    """DPO's beta and PPO's KL coefficient (the same beta, as in Theorem 4.1)."""
    dpo_steps: int = 300
    """Full-batch Adam steps of DPO."""
    dpo_lr: float = 1e-2
    """DPO learning rate."""
    dpo_label_smoothing: float = 0.0
    """cDPO label smoothing of DPO training (0 = the paper's DPO)."""
    reward_steps: int = 300
    """Full-batch Adam steps of the Bradley-Terry reward model."""
    reward_lr: float = 1e-2
    """Reward-model learning rate."""
    ppo_iterations: int = 20
    """PPO iterations (rollout + update)."""
    ppo_episodes_per_prompt: int = 16
    """Episodes sampled per prompt and iteration (batch = num_prompts x this)."""
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
    ppo_minibatches: int = 4
    """Minibatches per pass (must divide the batch)."""
    ppo_lr: float = 1e-2
    """PPO policy learning rate."""
    ppo_value_lr: float = 1e-2
    """PPO critic learning rate."""
    ppo_clip_range: float = 0.2
    """Clip range of the PPO ratio."""
    ppo_value_clip_range: float | None = None
    """Clip range of the value loss; None = plain squared error (the paper's Eq. 9)."""
    ppo_value_coef: float = 0.5
    """Weight of the value loss."""
    ppo_gamma: float = 1.0
    """GAE discount (irrelevant for one-token episodes; the paper uses 1)."""
    ppo_lam: float = 1.0
    """GAE lambda (irrelevant for one-token episodes; the paper uses 1)."""
    ppo_kl_estimator: Literal["k1", "k2", "k3", "abs"] = "k1"
    """Per-sample KL estimator of the KL-penalised reward."""
    ppo_whiten_advantages: bool = True
    """Whiten advantages over each rollout batch (the paper's advantage normalisation)."""
    raised_margin: float = 0.01
    """An unseen cell counts as raised when pi > pi_ref + raised_margin."""
    confidence: float = 0.95
    """Level of the t confidence intervals over seeds."""
    theorem_label_smoothing: float = 0.1
    """Label smoothing of the theorem check's exact minimisation (> 0 so the minimum exists)."""
    figure_seed: int | None = None
    """Seed drawn in Figure 1; None = first_seed."""
    compare_activation: Literal["tanh", "relu"] | None = None
    """Also run every seed with this hidden activation (results under <output_dir>/<activation>/); figure4.png
    shows both side by side for a seed where they disagree on DPO's raise of uncovered mass."""
    output_dir: str = "runs/synthetic"
    """Folder for figure1.png/json, figure2.png/json and results.json."""
    num_threads: int = 1
    """torch CPU threads for the parts of the run outside the training functions, which always
    use one (the models are tiny: more threads only add BLAS start-up cost)."""
    quiet: bool = False
    """Do not print the tables."""

    def __post_init__(self) -> None:
        if self.seeds < 2:
            raise ValueError(f"seeds must be at least 2 for a confidence interval, got {self.seeds}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        k = self.responses_per_prompt
        if not 2 <= k <= self.num_prompts:
            raise ValueError(f"responses_per_prompt must be in [2, num_prompts={self.num_prompts}], got {k}")
        if self.pairs_per_prompt is not None and not k - 1 <= self.pairs_per_prompt <= k * (k - 1) // 2:
            raise ValueError(f"pairs_per_prompt must be in [{k - 1}, {k * (k - 1) // 2}], got {self.pairs_per_prompt}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if (self.num_prompts * self.ppo_episodes_per_prompt) % self.ppo_minibatches:
            raise ValueError("ppo_minibatches must divide num_prompts * ppo_episodes_per_prompt")
        if self.figure_seed is not None and not self.first_seed <= self.figure_seed < self.first_seed + self.seeds:
            raise ValueError(f"figure_seed {self.figure_seed} is not among the run's seeds")


def run_seed(config: SyntheticConfig, seed: int) -> dict[str, Any]:
    """Everything for one seed: metrics per method, training diagnostics, theorem check, tables."""
    scenario = build_scenario(seed, config.num_prompts, config.responses_per_prompt, config.pairs_per_prompt)
    reference = build_reference(
        scenario,
        config.reference,
        config.hidden_size,
        config.reference_steps,
        config.reference_lr,
        config.reference_smoothing,
        config.activation,
    )
    reward = train_reward_model(scenario, config.hidden_size, config.reward_steps, config.reward_lr, config.activation)
    dpo = train_dpo(
        scenario,
        reference,
        config.beta,
        config.dpo_steps,
        config.dpo_lr,
        config.dpo_label_smoothing,
        track_every=max(1, config.dpo_steps // 20),
    )
    ppo = train_ppo(
        scenario,
        reference,
        reward.model,
        config.beta,
        config.ppo_iterations,
        config.ppo_episodes_per_prompt,
        config.ppo_epochs,
        config.ppo_minibatches,
        config.ppo_lr,
        config.ppo_value_lr,
        config.ppo_clip_range,
        config.ppo_value_clip_range,
        config.ppo_value_coef,
        config.ppo_gamma,
        config.ppo_lam,
        config.ppo_kl_estimator,
        config.ppo_whiten_advantages,
        config.hidden_size,
    )
    with torch.no_grad():
        ref_logp = table_logprobs(reference, scenario.num_prompts)
        rewards = reward_table(reward.model, scenario.num_prompts)
        tables = {
            "reference": ref_logp.exp(),
            "dpo": table_logprobs(dpo.model, scenario.num_prompts).exp(),
            "ppo": table_logprobs(ppo.policy, scenario.num_prompts).exp(),
            "kl_optimum": kl_regularized_optimum(ref_logp, rewards, config.beta).exp(),
        }
    metrics = {
        name: policy_metrics(probs, tables["reference"], scenario, config.raised_margin)
        for name, probs in tables.items()
    }
    return {
        "seed": seed,
        "scenario": scenario,
        "tables": tables,
        "rewards": rewards,
        "metrics": metrics,
        "final_losses": {"reward_model_bt": reward.losses[-1], "dpo": dpo.losses[-1]},
        "ppo_final": ppo.history[-1],
        # the mass on uncovered responses during training (DPO: every 5% of its steps; PPO: every iteration)
        "unseen_over_training": {
            "dpo": [(h["step"], h["unseen_mass"]) for h in dpo.history],
            "ppo": [(0, metrics["reference"]["unseen_mass"])]
            + [(i + 1, h["unseen_mass"]) for i, h in enumerate(ppo.history)],
        },
        "ppo_tv_to_kl_optimum": float(0.5 * (tables["ppo"] - tables["kl_optimum"]).abs().sum(dim=-1).mean()),
        "theorem": check_theorem(
            scenario, reference, reward.model, dpo.model, config.beta, config.theorem_label_smoothing
        ),
    }


def summarize(per_seed: list[dict[str, Any]], level: float) -> dict[str, Any]:
    """Mean and t-interval over seeds of every method's metrics, and the paired DPO - PPO."""
    summary: dict[str, Any] = {"confidence_level": level, "num_seeds": len(per_seed)}
    for method in METHODS:
        summary[method] = {
            metric: mean_confidence_interval([run["metrics"][method][metric] for run in per_seed], level)
            for metric in METRICS
        }
    summary["dpo_minus_ppo"] = {
        metric: mean_confidence_interval(
            [run["metrics"]["dpo"][metric] - run["metrics"]["ppo"][metric] for run in per_seed], level
        )
        for metric in METRICS
    }
    for method in ("dpo", "ppo"):  # the peak of the unseen mass during training, per seed
        peaks = [max(v for _, v in run["unseen_over_training"][method]) for run in per_seed]
        summary[f"{method}_unseen_peak_per_seed"] = {str(run["seed"]): p for run, p in zip(per_seed, peaks)}
        summary[f"{method}_unseen_peak_above_reference"] = sum(
            p > run["metrics"]["reference"]["unseen_mass"] + 1e-9 for run, p in zip(per_seed, peaks)
        )
        summary[f"{method}_cells_raised_per_seed"] = {
            str(run["seed"]): run["metrics"][method]["cells_raised"] for run in per_seed
        }
    summary["ppo_tv_to_kl_optimum"] = mean_confidence_interval([run["ppo_tv_to_kl_optimum"] for run in per_seed], level)
    for method in ("dpo", "ppo"):  # the largest single raise of an unseen cell, over all seeds
        raise_of = lambda run: run["metrics"][method]["max_unseen_raise"]  # noqa: E731
        best = max(per_seed, key=lambda run: -math.inf if raise_of(run) is None else raise_of(run))
        m = best["metrics"][method]
        summary[f"{method}_largest_unseen_raise"] = {
            "seed": best["seed"],
            "cell": m["max_unseen_raise_cell"],
            "from": m["max_unseen_raise_from"],
            "to": m["max_unseen_raise_to"],
        }
    return summary


def _check_lines(counter: dict[str, Any], per_seed: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Human-readable lines of the counter-example and the theorem check (max over seeds)."""
    worst = lambda section, key: max(run["theorem"][section][key] for run in per_seed)  # noqa: E731
    mean = lambda section, key: sum(run["theorem"][section][key] for run in per_seed) / len(per_seed)  # noqa: E731
    flat = [run["theorem"]["flat_unseen_direction"] for run in per_seed]
    last_path = counter["dpo_loss_path"][-1]
    ppo_limit = counter["ppo_solutions"][-1]
    return [
        (f"Table 1: DPO loss of (0.1, eps, 0.9-eps), eps={last_path['pi'][1]:g}", f"{last_path['dpo_loss']:.3g}"),
        ("Table 1: DPO loss of pi_DPO = (0.1, 0, 0.9) (infimum 0)", f"{counter['dpo_loss_at_dpo_policy']:.3g}"),
        ("Table 1: KL((0.1, 0, 0.9) || (0.5, 0.5, 0))", f"{counter['dpo_policy_kl_to_reference']}"),
        (f"Table 1: PPO pi* for r={ppo_limit['reward']}", "(" + ", ".join(f"{p:.3g}" for p in ppo_limit["pi"]) + ")"),
        (
            "Thm 4.1: |DPO(pi*_r) - BT(r)|, learned r, max over seeds",
            f"{worst('learned_reward', 'abs_difference'):.2e}",
        ),
        (
            "Thm 4.1: DPO loss at pi*_r (learned r) / reached by DPO training, mean",
            f"{mean('learned_reward', 'dpo_loss_at_kl_optimum'):.2e} / {mean('trained_dpo', 'dpo_loss'):.2e}",
        ),
        ("Thm 4.1: |DPO(pi_DPO) - BT(r_DPO)|, max over seeds", f"{worst('trained_dpo', 'abs_difference'):.2e}"),
        (
            "Thm 4.1: |log pi*_{r_DPO} - log pi_DPO|, max",
            f"{worst('trained_dpo', 'max_abs_logprob_gap_to_kl_optimum'):.2e}",
        ),
        (
            "Thm 4.1: min BT vs min DPO vs DPO(pi*_rmin) (cDPO s), max gap",
            f"{worst('minimum', 'max_abs_difference'):.2e}",
        ),
        (
            "DPO loss flat on unseen: max |DPO(pi') - DPO(pi*)|",
            f"{max(abs(f['dpo_loss_boosted'] - f['dpo_loss_kl_optimum']) for f in flat):.2e}",
        ),
        (
            "  ... while PPO objective drops by (min over seeds)",
            f"{min(f['objective_kl_optimum'] - f['objective_boosted'] for f in flat):.3g}",
        ),
    ]


def run_synthetic(config: SyntheticConfig | None = None) -> dict[str, Any]:
    """Run the whole study (module docstring); returns the results dict also written to JSON."""
    config = config or SyntheticConfig()
    start = time.perf_counter()
    with torch_threads(config.num_threads):
        per_seed = [run_seed(config, config.first_seed + k) for k in range(config.seeds)]
        counter = counter_example(config.beta)
    figure_seed = config.first_seed if config.figure_seed is None else config.figure_seed
    shown = next(run for run in per_seed if run["seed"] == figure_seed)
    t = shown["tables"]
    figure1 = figure1_data(shown["scenario"], t["reference"], t["ppo"], t["dpo"], shown["rewards"])
    summary = summarize(per_seed, config.confidence)
    results: dict[str, Any] = {
        "config": asdict(config),
        "methods": list(METHODS),
        "summary": summary,
        "per_seed": [
            {
                key: run[key]
                for key in (
                    "seed",
                    "metrics",
                    "final_losses",
                    "ppo_final",
                    "ppo_tv_to_kl_optimum",
                    "theorem",
                    "unseen_over_training",
                )
            }
            | {"dpo_policy": run["tables"]["dpo"].tolist(), "unseen": run["scenario"].unseen.tolist()}
            for run in per_seed
        ],
        "counter_example": counter,
        "check_lines": _check_lines(counter, per_seed),
        "figure1": figure1,
        "figure_seed": figure_seed,
        "run_time_s": time.perf_counter() - start,
    }
    output = Path(config.output_dir)
    plot_figure1(figure1, output / "figure1.png")
    write_json_atomic(output / "figure1.json", figure1)
    plot_summary(summary, METHODS, output / "figure2.png")
    write_json_atomic(
        output / "figure2.json",
        {method: summary[method] for method in METHODS}
        | {"confidence_level": config.confidence, "num_seeds": config.seeds},
    )
    plot_unseen_over_training(results["per_seed"], config.raised_margin, output / "figure3.png")
    if config.compare_activation and config.compare_activation != config.activation:
        other = replace(config, activation=config.compare_activation, compare_activation=None, quiet=True)
        other = run_synthetic(replace(other, output_dir=str(output / config.compare_activation)))
        results["activations"] = compare_activations(results, other, figure_seed, output / "figure4.png")
    results["run_time_s"] = time.perf_counter() - start
    write_json_atomic(output / "results.json", results)
    if not config.quiet:
        print_report(results)
    return results
