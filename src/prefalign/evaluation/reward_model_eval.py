"""``prefalign eval-rm``: reward models judged as Ivison et al. (2024, section 3.3) judge them.

1. **Accuracy on held-out pairs, per subset.** A pair is right when the reward model scores the
   chosen response above the rejected one (ties count as wrong, as RewardBench does, or as half).
   Pairs are grouped by a metadata key (``metadata["subset"]``, ``["source"]``, ...). Reported per
   subset (count, accuracy, mean margin), over all pairs (``accuracy``), as a weighted mean of the
   subset accuracies (``weighted``: weights per subset as a setting, by default each subset's
   share of the pairs, so it equals ``accuracy``) and as their unweighted mean (``mean``, the
   RewardBench-style score, where each subset counts the same).
2. **Best-of-N.** For each prompt of a task, N responses sampled from a policy (or read from a
   generations folder); the one the reward model scores highest (the first one on ties) is scored
   with the task's own metric. Reported against the same samples: ``random_draw`` (one uniformly
   drawn sample per prompt, seeded), ``single_sample`` (the expected score of such a draw: the
   task's aggregate over every sample), and ``oracle`` (the sample with the highest task reward,
   an upper bound for any selector). ``gain = best_of_n - single_sample``: a better reward model
   shows as a larger gain. ``picked_top_rate`` is the share of prompts, among those whose samples
   differ in task reward, where the reward model picked a sample of the highest task reward.

Any :class:`~prefalign.rewards.base.RewardFunction` works: a learned reward model (through
:class:`~prefalign.rewards.learned.LearnedReward`), a programmatic reward, or a test scorer.
Departure: Ivison et al. sample 16 responses per prompt for best-of-N; ``sampling.num_samples``
sets N here (16 by default), with every prompt required to have the same N.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prefalign.atomic import write_json_atomic
from prefalign.config import to_dict
from prefalign.data.config import DataConfig, load_pairs
from prefalign.data.schema import PreferencePair
from prefalign.evaluation.generations import read_generations, sample_responses, write_generations
from prefalign.evaluation.registry import build_task, canonical_name
from prefalign.evaluation.reward_model_metrics import (
    accuracy_by_subset,
    best_of_n,
    evaluate_pairs,
    pair_scores,
    subsets_of,
)
from prefalign.evaluation.runner import data_dir_scope, resolve_device
from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer
from prefalign.rewards.base import RewardFunction
from prefalign.rewards.ensemble import check_ensemble_settings, load_learned_reward
from prefalign.rollout.generate import SamplingConfig

# -- 1. accuracy on pairs, per subset -----------------------------------------------------------


@dataclass
class BestOfNConfig:
    tasks: list[str] = field(default_factory=list)
    """Tasks for best-of-N (gsm8k, ifeval, humaneval, mbpp, ...); empty: no best-of-N."""
    policy: ModelConfig = field(default_factory=ModelConfig)
    """The policy that samples the N responses (not loaded when generations_dir is set)."""
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=0.7, max_new_tokens=512, num_samples=16)
    )
    """Sampling of the N responses; num_samples is N (Ivison et al.: 16)."""
    limit: int | None = 100
    """Prompts per task (the first ones; None: all)."""
    micro_batch_size: int = 16
    """Sequences per generate call."""
    generations_dir: str | None = None
    """Read the N responses per prompt from this folder (<task>.jsonl) instead of sampling them."""
    task_paths: dict[str, str] = field(default_factory=dict)
    """Data file per task, e.g. --best_of_n.task_paths apps /data/apps/test.jsonl."""
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Further options per task (YAML)."""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"best_of_n.limit must be positive (or None), got {self.limit}")
        if self.tasks and self.generations_dir is None and self.sampling.num_samples < 2:
            raise ValueError("best_of_n.sampling.num_samples (N) must be at least 2")

    def options_for(self, task: str) -> dict[str, Any]:
        key = canonical_name(task)
        options = {
            k: v for name, opts in self.task_options.items() if canonical_name(name) == key for k, v in opts.items()
        }
        for name, path in self.task_paths.items():
            if canonical_name(name) == key:
                options["path"] = path
        return options


@dataclass
class RewardModelEvalConfig:
    reward_model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path="runs/rm/model"))
    """The reward model (a folder written by `prefalign rm`, or any backbone + scalar head); a folder written by
    `prefalign rm --ensemble_size K` (with ensemble.json) is an ensemble, combined by `ensemble`."""
    ensemble: str = "mean"
    """How a reward-model ensemble's member scores combine, for pair accuracy and best-of-N selection (Coste et al.
    2024): mean, wco (worst case: the minimum over members) or uwo (uncertainty-weighted: mean - uwo_lambda * variance
    over members). Ignored for a single model."""
    uwo_lambda: float = 0.5
    """Lambda of the uwo combination (ours: Coste et al. tune it per setting; the variance is over members, divided by
    K)."""
    reward: str | None = None
    """Evaluate this programmatic reward (prefalign.rewards.registry, e.g. length_target:200) instead of reward_model.
    """
    reward_micro_batch_size: int = 8
    """Sequences per reward-model forward pass."""
    reward_max_length: int | None = 1024
    """Score at most this many tokens of prompt + response (the start of a longer prompt is cut)."""
    evaluate_pairs: bool = True
    """Report accuracy on preference pairs."""
    data: DataConfig = field(default_factory=DataConfig)
    """Preference pairs; with the reward model's own data settings (seed, eval_size) the held-out part is its held-out
    split."""
    split: str = "held_out"
    """Which pairs to score: held_out (the data's held-out part) or all."""
    subset_key: str = "source"
    """Metadata key whose value names a pair's subset (pairs without it fall in subset 'all')."""
    subset_weights: dict[str, float] = field(default_factory=dict)
    """Weight per subset in the weighted score, e.g. --subset_weights helpful 1 harmless 2 (empty: by count)."""
    ties: str = "wrong"
    """A tie between chosen and rejected counts as wrong (RewardBench) or half."""
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)
    """Best-of-N selection on tasks."""
    device: str = "auto"
    """Where the models run: auto (cuda when available), cpu or cuda."""
    output: str = "runs/eval-rm/results.json"
    """Results file (JSON); best-of-N samples go to <output name>-generations/."""
    seed: int = 0
    """Seed of the sampling and of the random draw."""

    def __post_init__(self) -> None:
        if self.split not in ("held_out", "all"):
            raise ValueError(f"split must be held_out or all, got {self.split!r}")
        if self.ties not in ("wrong", "half"):
            raise ValueError(f"ties must be wrong or half, got {self.ties!r}")
        if self.reward_micro_batch_size < 1:
            raise ValueError("reward_micro_batch_size must be positive")
        if not self.evaluate_pairs and not self.best_of_n.tasks:
            raise ValueError("nothing to do: evaluate_pairs is off and best_of_n.tasks is empty")
        check_ensemble_settings("", self.ensemble, self.uwo_lambda)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def generations_out(self) -> Path:
        out = Path(self.output)
        return out.with_name(f"{out.stem}-generations")


def build_scorer(config: RewardModelEvalConfig) -> RewardFunction:
    """The programmatic reward named by ``config.reward``, else the learned reward model."""
    if config.reward is not None:
        from prefalign.rewards.registry import task_reward

        return task_reward(config.reward)
    return load_learned_reward(  # one reward model, or an ensemble folder combined by config.ensemble
        config.reward_model,
        resolve_device(config.device),
        config.reward_micro_batch_size,
        max_length=config.reward_max_length,
        rule=config.ensemble,
        uwo_lambda=config.uwo_lambda,
        seed=config.seed,
        name=config.reward_model.name_or_path,
    )


def _run_best_of_n(config: RewardModelEvalConfig, scorer: RewardFunction, console: Console) -> dict[str, Any]:
    cfg = config.best_of_n
    policy = tokenizer = None
    reports = {}
    with data_dir_scope(config.data.data_dir):
        for name in cfg.tasks:
            task = build_task(name, **cfg.options_for(name))
            prompts = task.prompts(cfg.limit)
            if cfg.generations_dir is not None:
                generations = read_generations(Path(cfg.generations_dir) / f"{task.name}.jsonl", prompts)
            else:
                if policy is None:
                    tokenizer = load_tokenizer(cfg.policy)
                    policy = load_causal_lm(cfg.policy, seed=config.seed).to(resolve_device(config.device))
                generations = sample_responses(
                    policy, tokenizer, prompts, cfg.sampling, cfg.micro_batch_size, config.seed
                )
            report, rewards, results = best_of_n(
                task, prompts, generations, scorer, seed=config.seed, batch_size=config.reward_micro_batch_size
            )
            annotated = [{**r, "reward_model_score": s} for r, s in zip(results, rewards)]
            path = write_generations(config.generations_out() / f"{task.name}.jsonl", prompts, generations, annotated)
            reports[task.name] = {**report, "generations": str(path)}
            console.print(
                f"{task.name}: best-of-{report['n']} {report['best_of_n']:.4f} vs single sample "
                f"{report['single_sample']:.4f}"
            )
    return reports


def _pairs(config: RewardModelEvalConfig, console: Console) -> list[PreferencePair]:
    train, held_out, report = load_pairs(config.data)
    console.print(report.summary())
    return held_out if config.split == "held_out" else [*train, *held_out]


def evaluate_reward_model(
    config: RewardModelEvalConfig,
    scorer: RewardFunction | None = None,
    pairs: Sequence[PreferencePair] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Pair accuracy and best-of-N as configured; ``scorer``/``pairs`` replace building them from the config. Writes
    ``output``."""
    console = console or Console()
    started = time.time()
    scorer = scorer if scorer is not None else build_scorer(config)
    results: dict[str, Any] = {"reward": getattr(scorer, "name", type(scorer).__name__)}
    if config.evaluate_pairs:
        pairs = list(pairs) if pairs is not None else _pairs(config, console)
        weights = dict(config.subset_weights) or None
        results["pairs"] = evaluate_pairs(
            scorer,
            pairs,
            subset_key=config.subset_key,
            weights=weights,
            ties=config.ties,
            batch_size=config.reward_micro_batch_size,
        )
        console.print(pairs_table(results["pairs"]))
    if config.best_of_n.tasks:
        results["best_of_n"] = _run_best_of_n(config, scorer, console)
        console.print(best_of_n_table(results["best_of_n"]))
    results.update(seconds=round(time.time() - started, 2), config=to_dict(config))
    write_json_atomic(config.output, results)
    console.print(f"results: {config.output}")
    return results


def run_reward_model_eval(config: RewardModelEvalConfig) -> dict[str, Any]:
    return evaluate_reward_model(config)


# -- tables -------------------------------------------------------------------------------------


def pairs_table(report: Mapping[str, Any]) -> Table:
    table = Table(title=f"reward-model accuracy on {report['num_pairs']} pairs by {report['subset_key']!r}")
    for column in ("subset", "pairs", "weight", "accuracy", "margin"):
        table.add_column(column, justify="left" if column == "subset" else "right")
    for subset, row in report["subsets"].items():
        table.add_row(
            subset, str(row["n"]), f"{report['weights'][subset]:.3f}", f"{row['accuracy']:.4f}", f"{row['margin']:+.4f}"
        )
    table.add_section()
    table.add_row("[bold]weighted[/bold]", str(report["num_pairs"]), "", f"[bold]{report['weighted']:.4f}[/bold]", "")
    table.add_row("mean of subsets", "", "", f"{report['mean']:.4f}", "")
    table.add_row("all pairs", str(report["num_pairs"]), "", f"{report['accuracy']:.4f}", f"{report['margin']:+.4f}")
    return table


def best_of_n_table(reports: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(title="best-of-N (task score of the chosen sample)")
    for column in ("task", "N", "prompts", "random draw", "single sample", "best-of-N", "gain", "oracle"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name, r in reports.items():
        table.add_row(
            name,
            str(r["n"]),
            str(r["num_prompts"]),
            f"{r['random_draw']:.4f}",
            f"{r['single_sample']:.4f}",
            f"[bold]{r['best_of_n']:.4f}[/bold]",
            f"{r['gain']:+.4f}",
            f"{r['oracle']:.4f}",
        )
    return table


__all__ = [
    "BestOfNConfig",
    "RewardModelEvalConfig",
    "accuracy_by_subset",
    "best_of_n",
    "evaluate_pairs",
    "evaluate_reward_model",
    "pair_scores",
    "run_reward_model_eval",
    "subsets_of",
]
