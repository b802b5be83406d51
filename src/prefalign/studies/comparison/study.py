"""``prefalign study``: the whole comparison of Xu et al. (2024) and Ivison et al. (2024) on the tiny world.

Stages, in order (each one's wall time goes into the report):

1. the tiny world: data, pre-training and SFT (:mod:`prefalign.studies.comparison.tiny_world`; cached by the
   hash of their settings, so a second run starts at stage 2);
2. per seed: a reward model on the preference pairs (``run_reward_model``), then every method of
   :data:`~prefalign.studies.comparison.methods.METHODS` through its ordinary trainer: RRHF, PRO, DPO,
   DPO with SFT on the pairs first, DPO-Iter labelled by the learned reward model, and PPO in the
   four cumulative rows of Xu et al. Table 3;
3. evaluation of the SFT model and of every trained policy on the held-out prompts: gold reward
   and safety rate (greedy), learned-reward score, KL to the SFT model and the gold reward of
   sampled responses (:mod:`prefalign.studies.comparison.tiny_world.evaluate`);
4. the synthetic study of Xu et al. section 4 (``run_synthetic``);
5. the report (:mod:`prefalign.studies.comparison.report`): ``report.md``, ``results.json``, PNG plots,
   ``study.log`` (stages and times), ``console.log`` (everything printed), and the same tables in
   the terminal.

Seeds vary the reward model and every alignment run (initial data order, sampling); the tiny world
and its SFT model are shared by all seeds, as the papers share one SFT model. Every method is scored
on its final model (no checkpoint selection). Means over seeds come with 95% Student-t intervals
(:func:`prefalign.studies.synthetic.report.mean_confidence_interval`; with 2 seeds the t quantile is
12.7, so only large, consistent differences are called significant).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefalign.studies.comparison.methods import (
    METHODS,
    PPO_ROWS,
    IterativeStage,
    OfflineStage,
    PPOStage,
    RewardModelStage,
    available,
    train_iterative,
    train_offline,
    train_ppo,
    train_reward_model,
    write_prompt_file,
)
from prefalign.studies.comparison.tiny_world.evaluate import EvalConfig, evaluate_policy, load_learned_reward
from prefalign.studies.comparison.tiny_world.prepare import TinyWorld, TinyWorldConfig, prepare_tiny_world
from prefalign.studies.synthetic.run import SyntheticConfig
from prefalign.trainers.logging import console


@dataclass
class StudyConfig:
    world: TinyWorldConfig = field(default_factory=TinyWorldConfig)
    """The tiny world: data sizes and noise, model shape, pre-training and SFT."""
    seeds: int = 2
    """Seeds of the alignment stage (reward model and every method); seed k is first_seed + k."""
    first_seed: int = 0
    """The first seed."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Methods to run: rrhf, pro, dpo, dpo_sft_first, dpo_iter, ppo_baseline, ppo_advnorm, ppo_large_batch, ppo_ema."""
    reward_model: RewardModelStage = field(default_factory=RewardModelStage)
    """Reward-model training (used by PPO, DPO-Iter and the evaluation)."""
    offline: OfflineStage = field(default_factory=OfflineStage)
    """DPO, RRHF, PRO and the SFT-first stage."""
    iterative: IterativeStage = field(default_factory=IterativeStage)
    """DPO-Iter."""
    ppo: PPOStage = field(default_factory=PPOStage)
    """PPO and its Table 3 rows."""
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    """Scoring on the held-out prompts."""
    synthetic: bool = True
    """Also run the synthetic study of Xu et al. section 4."""
    synthetic_settings: SyntheticConfig = field(default_factory=lambda: SyntheticConfig(seeds=6, quiet=True))
    """Its settings (output_dir is set to <output_dir>/synthetic)."""
    output_dir: str = "runs/study"
    """Folder of the report, results.json, plots, logs and every run."""
    threads: int | None = 1
    """torch CPU threads (the models are tiny: one thread is fastest, and on a busy machine several threads
    waiting on each other are many times slower)."""
    progress: bool = True
    """Show the trainers' progress bars."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")


PRESETS: dict[str, dict[str, Any]] = {
    # the defaults: a few minutes on a 2-core laptop CPU
    "quick": {},
    # more seeds, more data, longer training
    "full": {
        "seeds": 5,
        "world": {
            "data": {"sft_examples": 3000, "preference_pairs": 2400, "policy_prompts": 1024, "eval_prompts": 512},
            "pretrain": {"steps": 800},
        },
        "reward_model": {"epochs": 4.0},
        "iterative": {"rounds": 3},
        "offline": {"epochs": 3.0, "sft_first_epochs": 3.0},
        "ppo": {"steps": 50, "small_batch_size": 64, "large_batch_size": 256},
        "synthetic_settings": {"seeds": 20},
        "output_dir": "runs/study-full",
    },
}


class StageClock:
    """Wall time of each named stage, and a numbered header line for each."""

    def __init__(self, total: int, log: Path):
        self.total, self.done, self.seconds, self.log = total, 0, {}, log
        self.started = time.perf_counter()

    def run(self, name: str, fn, *args, **kwargs):
        self.done += 1
        line = f"[{self.done}/{self.total}] {name} (study time {time.perf_counter() - self.started:.0f} s)"
        console.rule(f"[bold]{line}")
        self._write(line)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - start
        self._write(f"    {name}: {self.seconds[name]:.1f} s")
        return out

    def _write(self, line: str) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as fh:
            fh.write(line + "\n")


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def run_method(
    method: str, config: StudyConfig, world: TinyWorld, rm_dir: str, seed_dir: Path, seed: int
) -> tuple[str, dict]:
    """Train one method for one seed; returns its model folder and training summary."""
    common = dict(seed=seed, progress=config.progress, threads=config.threads)
    tokens = config.evaluation.max_new_tokens
    if method in PPO_ROWS:
        prompt_file = write_prompt_file(world, Path(config.output_dir) / "data" / "policy_prompts.jsonl")
        return train_ppo(
            method, world, config.ppo, rm_dir, prompt_file, seed_dir / "ppo", max_new_tokens=tokens, **common
        )
    if method == "dpo_iter":
        return train_iterative(
            world, config.iterative, config.offline, rm_dir, seed_dir / method, max_new_tokens=tokens, **common
        )
    return train_offline(method, world, config.offline, seed_dir / method, **common)


def run_seed(config: StudyConfig, world: TinyWorld, seed: int, clock: StageClock, methods: list[str]) -> dict[str, Any]:
    """The reward model and every method of one seed, each evaluated on the held-out prompts."""
    out = Path(config.output_dir)
    seed_dir = out / f"seed-{seed}"
    rm_dir, rm_summary = clock.run(
        f"seed {seed}: reward model",
        train_reward_model,
        world,
        config.reward_model,
        seed_dir / "reward_model",
        seed,
        config.progress,
        config.threads,
    )
    reward = load_learned_reward(rm_dir)
    sft_dir = str(world.sft_dir)
    runs: dict[str, Any] = {}
    for method in methods:
        model_dir, train = clock.run(
            f"seed {seed}: {method}", run_method, method, config, world, rm_dir, seed_dir, seed
        )
        evaluation = clock.run(
            f"seed {seed}: evaluate {method}",
            evaluate_policy,
            model_dir,
            sft_dir,
            world.data.eval_prompts,
            config.evaluation,
            reward,
        )
        run_dir = (
            seed_dir / method if method == "dpo_iter" else Path(model_dir).parent
        )  # DPO-Iter: the folder of its rounds
        runs[method] = {
            "train": train,
            "metrics": evaluation["metrics"],
            "examples": evaluation["examples"],
            "run_dir": _relative(str(run_dir), out),
        }
    sft_eval = evaluate_policy(sft_dir, sft_dir, world.data.eval_prompts, config.evaluation, reward)
    return {
        "reward_model": rm_summary,
        "runs": runs,
        "sft_metrics": sft_eval["metrics"],
        "reward_model_dir": _relative(rm_dir, out),
    }


def _run_study(config: StudyConfig) -> dict[str, Any]:
    from prefalign.studies.comparison.report import assemble_results, write_report

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from prefalign.config import save_yaml

    save_yaml(config, out / "config.yaml")
    if config.threads:
        torch.set_num_threads(config.threads)
    skipped = {m: reason for m in config.methods if (reason := available(m)) is not None}
    methods = [m for m in config.methods if m not in skipped]
    total = 1 + config.seeds * (1 + 2 * len(methods)) + int(config.synthetic)
    clock = StageClock(total, out / "study.log")
    world = clock.run("tiny world: data, pre-training, SFT", prepare_tiny_world, config.world, progress=config.progress)
    seeds = [config.first_seed + k for k in range(config.seeds)]
    per_seed = {seed: run_seed(config, world, seed, clock, methods) for seed in seeds}
    synthetic = None
    if config.synthetic:
        from prefalign.studies.synthetic.run import run_synthetic

        settings = dataclasses.replace(config.synthetic_settings, output_dir=str(out / "synthetic"), quiet=True)
        synthetic = clock.run("synthetic study (Xu et al. section 4)", run_synthetic, settings)
    results = assemble_results(
        config, world, per_seed, synthetic, skipped, clock.seconds, time.perf_counter() - clock.started
    )
    write_report(results, out)
    return results


def run_study(config: StudyConfig | None = None) -> dict[str, Any]:
    """Run every stage of the module docstring; returns the results (also in ``results.json``).

    Everything printed to the terminal (the trainers' progress and summaries, the tables) is also
    kept in ``<output_dir>/console.log``.
    """
    from prefalign.atomic import write_text_atomic

    config = config or StudyConfig()
    recording = console.record
    console.record = True
    try:
        return _run_study(config)
    finally:
        write_text_atomic(Path(config.output_dir) / "console.log", console.export_text(clear=True))
        console.record = recording
