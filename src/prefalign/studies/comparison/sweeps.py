"""Xu et al.'s PPO factors swept one at a time (their Figure 2 and the reference-EMA rate), ``full`` preset.

- **reference-EMA rate**: the all-factors row (advantage normalisation, large batch, reference EMA)
  with each rate of ``sweeps.ema_rates`` (0: no EMA). The rate applies once per PPO step, so the run
  length (``sweeps.steps``, in the table) says what a rate means: after ``n`` steps the reference keeps
  ``(1 - rate)^n`` of the SFT model.
- **rollout batch size**: the advantage-normalisation row with each batch of ``sweeps.rollout_batches``,
  both with the same number of PPO steps (larger batches see more samples, as in Xu et al.'s Table 3
  rows) and with the same number of samples (``sweeps.steps x ppo.small_batch_size``; larger batches
  take fewer steps), so the table shows when the two disagree.

Every point runs for every seed in ``sweeps.testbed`` and is scored like the main rows
(:func:`~prefalign.studies.comparison.tiny_world.evaluate.evaluate_policy` on the held-out prompts).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prefalign.studies.comparison.summary import summarize


@dataclass
class SweepConfig:
    ema_rates: list[float] = field(default_factory=list)
    """Reference-EMA rates per PPO step of the all-factors row (empty: no sweep; 0 means no EMA)."""
    rollout_batches: list[int] = field(default_factory=list)
    """Rollout batch sizes of the advantage-normalisation row (empty: no sweep)."""
    testbed: str = "preference"
    """The testbed of the sweeps."""
    steps: int = 20
    """PPO steps of every "same steps" point (the fixed length a rate per step is read against; "same samples"
    points take steps x small batch / batch). The main rows' ppo.steps is their cap, not this."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"sweeps.steps must be at least 1, got {self.steps}")


def sweep_keys(config, seeds: list[int]) -> list[tuple]:
    s = config.sweeps
    keys = [("sweep", seed, "ema", float(rate), "same_steps") for rate in s.ema_rates for seed in seeds]
    for batch in s.rollout_batches:
        for schedule in ("same_steps", "same_samples"):
            keys += [("sweep", seed, "batch", int(batch), schedule) for seed in seeds]
    return keys


def point_stage(config, kind: str, value: float, schedule: str):
    """(method row, PPO settings) of one sweep point."""
    if kind == "ema":  # every rate, 0 included, at the all-factors row's learning rate and KL coefficient
        ppo = dataclasses.replace(config.ppo.for_row("ppo_ema"), steps=config.sweeps.steps)
        return ("ppo_ema" if value > 0 else "ppo_large_batch"), dataclasses.replace(ppo, ema_rate=value or ppo.ema_rate)
    ppo = dataclasses.replace(config.ppo.for_row("ppo_advnorm"), steps=config.sweeps.steps)
    steps = ppo.steps if schedule == "same_steps" else max(1, ppo.steps * ppo.small_batch_size // int(value))
    # the advantage-normalisation row takes the small batch: set it to the swept one
    return "ppo_advnorm", dataclasses.replace(ppo, small_batch_size=int(value), steps=steps)


def job_sweep(config, world, seed: int, kind: str, value: float, schedule: str) -> dict[str, Any]:
    from prefalign.studies.comparison.online import train_ppo
    from prefalign.studies.comparison.runner import _evaluate, rm_dir, seed_dir, write_prompt_files

    method, stage = point_stage(config, kind, value, schedule)
    testbed = config.sweeps.testbed
    out = seed_dir(config, seed) / "sweeps" / f"{kind}-{value:g}-{schedule}"
    # a sweep compares fixed lengths (same steps / same samples): no early stop
    model_dir, train = train_ppo(
        method,
        world,
        dataclasses.replace(stage, curve_points=1),
        testbed,
        rm_dir(config, seed) if testbed == "preference" else None,
        write_prompt_files(config, world),
        out,
        seed=seed,
        progress=False,
        threads=config.threads,
        max_new_tokens=config.evaluation.max_new_tokens,
    )
    metrics = _evaluate(config, world, model_dir, seed)["metrics"]
    keep = ("gold/score", "gold/safety_rate", "rm/score", "kl/mean", "pass@1")
    return {"steps": train["steps"], "samples": train["samples"], **{k: metrics[k] for k in keep}}


def run_sweeps(config, seeds: list[int], clock) -> dict[str, Any] | None:
    """Every sweep point over the seeds; returns rows (kind, value, schedule, steps, samples, metric summaries)."""
    from prefalign.studies.comparison.runner import job_label, run_jobs
    from prefalign.studies.comparison.summary import metric_range

    keys = sweep_keys(config, seeds)
    if not keys:
        return None
    results: dict[tuple, list[dict[str, Any]]] = {}

    def done(key: tuple, result: dict, seconds: float) -> None:
        clock.record(job_label(key), seconds)
        results.setdefault(key[2:], []).append(result)

    run_jobs(config, keys, done, fn=job_sweep)
    rows = []
    for (kind, value, schedule), runs in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        metrics = {k: summarize([r[k] for r in runs], metric_range(k)) for k in runs[0] if "/" in k or "@" in k}
        rows.append(
            {
                "kind": kind,
                "value": value,
                "schedule": schedule,
                "steps": runs[0]["steps"],
                "samples": runs[0]["samples"],
                **metrics,
            }
        )
    return {"testbed": config.sweeps.testbed, "run_length": config.sweeps.steps, "rows": rows}
