"""``prefalign study``: the whole comparison of Xu et al. (2024) and Ivison et al. (2024) on the tiny world.

Stages, in order (each one's wall time goes into the report):

1. the tiny world: data, pre-training and SFT (:mod:`prefalign.studies.comparison.tiny_world`; cached by the
   hash of their settings, so a second run starts at stage 2);
2. phase 1, per seed: a reward model on the preference pairs, and every offline method (DPO, RRHF,
   PRO, DPO with SFT on the pairs first) on the static pairs;
3. phase 2, per seed and testbed (:mod:`prefalign.studies.comparison.online`: ``preference``, reward
   from the learned reward model; ``verifiable``, reward from the gold test cases): DPO-Iter and PPO
   in the rows of Xu et al. Table 3, each with its convergence series and over-optimisation curve;
   the offline methods' and the SFT model's evaluation;
4. the synthetic study of Xu et al. section 4 (``run_synthetic``, also with the other hidden activation; with two
   or more workers it runs in a process of its own beside the workers, since it needs no tiny world);
5. the report (:mod:`prefalign.studies.comparison.report`): ``report.md``, ``results.json``, PNG plots,
   ``study.log`` (stages and times), ``console.log`` (everything printed), and the same tables in
   the terminal.

Phases 2 and 3 run as independent jobs on ``workers`` processes (:mod:`prefalign.studies.comparison.runner`);
the results do not depend on the number of workers. Seeds vary the reward model and every
alignment run (initial data order, sampling); the tiny world and its SFT model are shared by all
seeds, as the papers share one SFT model. Every method is scored on its final model (no checkpoint
selection); each method's convergence on its own held-out objective is judged from its log
(:mod:`prefalign.studies.comparison.convergence`). Means over seeds come with 95% Student-t intervals
clipped to the metric's range (:mod:`prefalign.studies.comparison.summary`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefalign.studies.comparison.beyond import ENSEMBLE_ROWS, runs_in
from prefalign.studies.comparison.convergence import ConvergenceConfig
from prefalign.studies.comparison.ivison import IvisonConfig
from prefalign.studies.comparison.ivison import check as check_ivison
from prefalign.studies.comparison.methods import (
    METHODS,
    OFFLINE,
    IterativeStage,
    OfflineStage,
    PPOStage,
    RewardModelStage,
    available,
)
from prefalign.studies.comparison.online import TESTBEDS
from prefalign.studies.comparison.sweeps import SweepConfig
from prefalign.studies.comparison.tiny_world.evaluate import EvalConfig
from prefalign.studies.comparison.tiny_world.prepare import TinyWorldConfig, prepare_tiny_world
from prefalign.studies.comparison.tuning import TuningConfig
from prefalign.studies.synthetic.run import SyntheticConfig
from prefalign.trainers.logging import console

#: the rows of the quick preset: SFT (always), DPO, DPO-Iter, PPO baseline and PPO with all three factors
QUICK_METHODS = ["dpo", "dpo_iter", "ppo_baseline", "ppo_ema"]


@dataclass
class StudyConfig:
    world: TinyWorldConfig = field(default_factory=TinyWorldConfig)
    """The tiny world: data sizes and noise, model shape, pre-training and SFT."""
    seeds: int = 9
    """Seeds of the alignment stage (reward model and every method); seed k is first_seed + k."""
    first_seed: int = 0
    """The first seed."""
    methods: list[str] = field(default_factory=lambda: list(QUICK_METHODS))
    """Methods to run: rrhf, pro, dpo, dpo_sft_first, dpo_iter, ppo_baseline, ppo_advnorm, ppo_large_batch, ppo_ema
    (ppo_ema is the row with all three of Xu et al.'s factors)."""
    testbeds: list[str] = field(default_factory=lambda: list(TESTBEDS))
    """Testbeds: preference (reward from the learned reward model), verifiable (reward from the gold test cases)."""
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
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
    """The plateau criterion judged on each run's own held-out objective."""
    tuning: TuningConfig = field(default_factory=TuningConfig)
    """The validation split of the policy prompts, the learning-rate / beta / KL grids and the values they chose."""
    sweeps: SweepConfig = field(default_factory=SweepConfig)
    """Xu et al.'s factors one at a time: reference-EMA rates and rollout batch sizes (full preset)."""
    ivison: IvisonConfig = field(default_factory=IvisonConfig)
    """Ivison et al.'s factors from one base: data quality, algorithm, RM size, policy prompts (full preset)."""
    synthetic: bool = True
    """Also run the synthetic study of Xu et al. section 4."""
    synthetic_settings: SyntheticConfig = field(
        default_factory=lambda: SyntheticConfig(seeds=6, quiet=True, compare_activation="relu")
    )
    """Its settings (output_dir is set to <output_dir>/synthetic)."""
    output_dir: str = "runs/study"
    """Folder of the report, results.json, plots, logs and every run."""
    threads: int | None = 1
    """torch CPU threads per worker (the models are tiny: one thread is fastest, and on a busy machine several
    threads waiting on each other are many times slower)."""
    workers: int = 2
    """Worker processes running the seeds' jobs side by side (one per core; 1: everything in this process)."""
    progress: bool = True
    """Show the trainers' progress bars."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")
        bad = [t for t in self.testbeds if t not in TESTBEDS]
        if bad or not self.testbeds:
            raise ValueError(f"unknown testbeds {bad}; choose from {list(TESTBEDS)}")
        if self.sweeps.testbed not in self.testbeds:
            raise ValueError(f"sweeps.testbed {self.sweeps.testbed!r} is not among the testbeds {self.testbeds}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.ivison.run:
            check_ivison(self)


PRESETS: dict[str, dict[str, Any]] = {
    # the README's main command: 9 seeds, both testbeds, SFT / DPO / DPO-Iter / PPO baseline / PPO with all factors
    "quick": {},
    # every method and row, more data, more seeds
    "full": {
        "seeds": 5,
        "methods": list(METHODS),
        "world": {
            "data": {"sft_examples": 3000, "preference_pairs": 2400, "policy_prompts": 1024, "eval_prompts": 512},
            "pretrain": {"steps": 800},
        },
        "reward_model": {"epochs": 4.0},
        # the PPO rows as Xu et al. define them: value normalisation in every row, with the xu preset's rate
        "ppo": {"value_normalization": True, "value_normalization_beta": 0.99995},
        "sweeps": {"ema_rates": [0.0, 0.001, 0.01, 0.1], "rollout_batches": [16, 32, 64, 128]},
        "ivison": {"run": True},
        "synthetic_settings": {"seeds": 20},
        "output_dir": "runs/study-full",
    },
}


class StageClock:
    """Wall time of each named stage or job, and a numbered header line for each."""

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
        self.record(name, time.perf_counter() - start, header=False)
        return out

    def record(self, name: str, seconds: float, header: bool = True) -> None:
        """A job that ran elsewhere (a worker) and took ``seconds`` there."""
        if header:
            self.done += 1
            console.print(
                f"[{self.done}/{self.total}] {name}: {seconds:.1f} s (study time "
                f"{time.perf_counter() - self.started:.0f} s)"
            )
        self.seconds[name] = seconds
        self._write(f"    {name}: {seconds:.1f} s")

    def _write(self, line: str) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as fh:
            fh.write(line + "\n")


def _phases(config: StudyConfig, seeds: list[int], methods: list[str]) -> tuple[list[tuple], list[tuple]]:
    """(phase 1 jobs, phase 2 jobs) in the order they are handed out (longest first)."""
    first = [("reward_model", s) for s in seeds] + [("offline", s, m) for s in seeds for m in methods if m in OFFLINE]
    if "preference" in config.testbeds and any(m in ENSEMBLE_ROWS for m in methods):
        first += [("reward_ensemble", s) for s in seeds]
    online = [m for m in methods if m not in OFFLINE]
    order = {"ppo_ema": 0, "ppo_large_batch": 1, "dpo_iter": 2}
    online.sort(key=lambda m: order.get(m, 3))
    second = [("online", s, m, t) for m in online for t in config.testbeds for s in seeds if runs_in(m, t)]
    return first, second


def run_all_jobs(config: StudyConfig, world, clock: StageClock, methods: list[str]) -> dict[int, Any]:
    """Every job of both phases; returns per seed: reward model, and per testbed the SFT and every method."""
    from prefalign.studies.comparison.runner import job_label, run_jobs

    seeds = [config.first_seed + k for k in range(config.seeds)]
    per_seed: dict[int, Any] = {s: {"reward_model": None, "offline": {}, "testbeds": {}} for s in seeds}
    evaluations: dict[tuple, Any] = {}

    def done(key: tuple, result: dict, seconds: float) -> None:
        clock.record(job_label(key), seconds)
        kind, seed = key[0], key[1]
        if kind in ("reward_model", "reward_ensemble"):
            per_seed[seed][kind] = result[kind]
        elif kind == "offline":
            per_seed[seed]["offline"][key[2]] = result
        elif kind == "evaluate":
            evaluations[(seed, key[2])] = result
        elif kind == "evaluate_sft":
            evaluations.update({(s, str(world.sft_dir)): r for s, r in result.items()})
        else:
            per_seed[seed]["testbeds"].setdefault(key[3], {})[key[2]] = result

    first, second = _phases(config, seeds, methods)
    run_jobs(config, first, done)
    sft = str(world.sft_dir)
    evals = [("evaluate_sft", tuple(seeds))]
    evals += [("evaluate", s, per_seed[s]["offline"][m]["model_dir"]) for s in seeds for m in per_seed[s]["offline"]]
    run_jobs(config, second + evals, done)
    out = Path(config.output_dir)
    for s in seeds:
        for testbed in config.testbeds:
            runs = per_seed[s]["testbeds"].setdefault(testbed, {})
            for m, off in per_seed[s]["offline"].items():
                ev = evaluations[(s, off["model_dir"])]
                run_dir = Path(off["model_dir"]).parent
                runs[m] = {
                    "train": off["train"],
                    "metrics": ev["metrics"],
                    "examples": ev["examples"],
                    "convergence": off["convergence"],
                    "run_dir": str(run_dir.resolve().relative_to(out.resolve())),
                }
            per_seed[s]["testbeds"][testbed] = {
                "sft_metrics": evaluations[(s, sft)]["metrics"],
                "runs": {m: runs[m] for m in methods if m in runs},
            }
        per_seed[s].pop("offline")
    return per_seed


SYNTHETIC_LABEL = "synthetic study (Xu et al. section 4)"


def _synthetic_settings(config: StudyConfig, out: Path) -> SyntheticConfig:
    return dataclasses.replace(config.synthetic_settings, output_dir=str(out / "synthetic"), quiet=True)


def _timed_synthetic(settings: SyntheticConfig, threads: int | None) -> tuple[dict[str, Any], float]:
    from prefalign.studies.synthetic.run import run_synthetic

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    return run_synthetic(settings), time.perf_counter() - started


def _start_synthetic(config: StudyConfig, out: Path):
    """With two or more workers: the synthetic study in a process of its own, started now (a future), else None."""
    if not config.synthetic or config.workers < 2:
        return None
    import concurrent.futures
    import multiprocessing

    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(_timed_synthetic, _synthetic_settings(config, out), config.threads)
    pool.shutdown(wait=False)
    return future


def _finish_synthetic(config: StudyConfig, out: Path, future, clock: StageClock) -> dict[str, Any] | None:
    """The synthetic study's results: from the process started by :func:`_start_synthetic`, or run here."""
    if not config.synthetic:
        return None
    if future is None:
        return clock.run(SYNTHETIC_LABEL, run_synthetic_here, _synthetic_settings(config, out), config.threads)
    results, seconds = future.result()
    clock.record(SYNTHETIC_LABEL + ", beside the workers", seconds)
    return results


def run_synthetic_here(settings: SyntheticConfig, threads: int | None) -> dict[str, Any]:
    return _timed_synthetic(settings, threads)[0]


def _run_study(config: StudyConfig) -> dict[str, Any]:
    from prefalign.config import save_yaml
    from prefalign.studies.comparison.report import assemble_results, write_report

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(config, out / "config.yaml")
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.tuning.run:
        from prefalign.studies.comparison.tune import run_tuning

        return run_tuning(config)
    skipped = {m: reason for m in config.methods if (reason := available(m)) is not None}
    methods = [m for m in config.methods if m not in skipped]
    offline = [m for m in methods if m in OFFLINE]
    first, second = _phases(config, [config.first_seed + k for k in range(config.seeds)], methods)
    jobs = len(first) + len(second) + 1 + config.seeds * len(offline)  # + the SFT's and offline runs' evaluations
    clock = StageClock(1 + jobs + int(config.synthetic), out / "study.log")
    # the world is built on every core (one thread per worker), before anything else runs: pre-training is the
    # study's longest single stage (53 s on 2 threads against 73 s on one, measured); the synthetic study then
    # runs in a process of its own beside the workers
    torch.set_num_threads(max(config.threads or 1, config.workers))
    world = clock.run("tiny world: data, pre-training, SFT", prepare_tiny_world, config.world, progress=config.progress)
    if config.threads:
        torch.set_num_threads(config.threads)
    synthetic_job = _start_synthetic(config, out)  # needs no world: beside the workers
    per_seed = run_all_jobs(config, world, clock, methods)
    from prefalign.studies.comparison.sweeps import run_sweeps, sweep_keys

    seeds = [config.first_seed + k for k in range(config.seeds)]
    clock.total += len(sweep_keys(config, seeds))
    sweeps = run_sweeps(config, seeds, clock)
    from prefalign.studies.comparison.ivison import keys as ivison_keys
    from prefalign.studies.comparison.ivison import run_ivison

    clock.total += len(ivison_keys(config, seeds))
    ivison = run_ivison(config, per_seed, clock)
    synthetic = _finish_synthetic(config, out, synthetic_job, clock)
    results = assemble_results(
        config, world, per_seed, synthetic, skipped, clock.seconds, time.perf_counter() - clock.started
    )
    results["sweeps"] = sweeps
    results["ivison"] = ivison
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
        from prefalign.studies.comparison.runner import close_pools

        close_pools()
        write_text_atomic(Path(config.output_dir) / "console.log", console.export_text(clear=True))
        console.record = recording
