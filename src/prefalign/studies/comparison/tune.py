"""``prefalign study --tuning.run True``: the grid search of :mod:`prefalign.studies.comparison.tuning`.

One reward model (seed ``tuning.seed``), then one run per method and grid point in the preference
testbed, each scored by the greedy gold reward of its final model on the validation split of the
policy prompts (ties on it go to the point with the smaller KL to the SFT model). Writes
``<output_dir>/tuning.json`` (every point's score and the winners) and prints the table; the winners go into
the presets by hand (with ``tuning.chosen_from`` naming the run). Each point's score is kept in its folder's
``point.json``, so a rerun of the command skips finished points.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from prefalign.studies.comparison.methods import LABELS, OFFLINE, PPO_ROWS
from prefalign.studies.comparison.runner import (
    _evaluate,
    job_label,
    policy_split,
    rm_dir,
    run_jobs,
    seed_dir,
    write_prompt_files,
)
from prefalign.trainers.logging import console


def grid(config, method: str) -> list[tuple[float, float]]:
    """(learning rate, beta or KL coefficient) points of a method."""
    t = config.tuning
    if method in PPO_ROWS:
        return list(itertools.product(t.ppo_learning_rates, t.ppo_kl_coefs))
    return list(itertools.product(t.dpo_learning_rates, t.dpo_betas))


def with_point(config, method: str, lr: float, second: float):
    """The study's settings with one grid point applied to the method's stage."""
    if method in PPO_ROWS:
        ppo = config.ppo
        rates, kls = {**ppo.row_learning_rates, method: lr}, {**ppo.row_kl_coefs, method: second}
        return dataclasses.replace(config, ppo=dataclasses.replace(ppo, row_learning_rates=rates, row_kl_coefs=kls))
    if method == "dpo_iter":
        return dataclasses.replace(
            config, iterative=dataclasses.replace(config.iterative, learning_rate=lr, beta=second)
        )
    field = "rank_learning_rate" if method in ("rrhf", "pro") else "learning_rate"
    return dataclasses.replace(config, offline=dataclasses.replace(config.offline, beta=second, **{field: lr}))


def point_dir(config, method: str, lr: float, second: float) -> Path:
    return Path(config.output_dir) / "tuning" / f"{method}-lr{lr:g}-{second:g}"


def job_tune(config, world, seed: int, method: str, lr: float, second: float) -> dict[str, Any]:
    """Train one grid point and score it on the validation prompts (kept in ``point.json``: a rerun skips it)."""
    import json

    from prefalign.atomic import write_json_atomic
    from prefalign.studies.comparison.methods import train_offline
    from prefalign.studies.comparison.online import train_iterative, train_ppo

    point = with_point(config, method, lr, second)
    out = point_dir(config, method, lr, second)
    if (out / "point.json").exists():
        return json.loads((out / "point.json").read_text())
    train_prompts, validation = policy_split(world, config.tuning.validation_prompts)
    # the grid's runs stop at a plateau exactly as the study's do (their objective on the training split's own
    # validation prompts), so a learning rate is chosen for the run length it will get
    common = dict(seed=seed, progress=False, threads=config.threads, early_stop=config.convergence.early_stop())
    if method in OFFLINE:
        model_dir, _ = train_offline(method, world, point.offline, out, **common)
    elif method in PPO_ROWS:
        prompt_file = write_prompt_files(config, world)
        model_dir, _ = train_ppo(
            method,
            world,
            point.ppo if config.convergence.stop_at_plateau else dataclasses.replace(point.ppo, evaluations=1),
            "preference",
            rm_dir(config, seed),
            prompt_file,
            out,
            max_new_tokens=config.evaluation.max_new_tokens,
            **common,
        )
    else:
        model_dir, _ = train_iterative(
            world,
            point.iterative,
            point.offline,
            "preference",
            rm_dir(config, seed),
            train_prompts,
            out,
            max_new_tokens=config.evaluation.max_new_tokens,
            **common,
        )
    metrics = _evaluate(config, world, model_dir, seed, prompts=validation)["metrics"]
    result = {"validation_gold": metrics["gold/score"], "validation_kl": metrics["kl/mean"]}
    write_json_atomic(out / "point.json", result)
    return result


def best_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest validation gold reward; among points that tie on it (the same greedy responses score alike,
    e.g. when Adam's first steps do not depend on beta), the one closest to the SFT model (smallest validation KL)."""
    top = max(p["validation_gold"] for p in points)
    return min((p for p in points if p["validation_gold"] >= top - 1e-9), key=lambda p: p["validation_kl"])


def run_tuning(config) -> dict[str, Any]:
    from prefalign.atomic import write_json_atomic
    from prefalign.studies.comparison.tiny_world.prepare import prepare_tiny_world

    if config.tuning.validation_prompts < 1:
        raise ValueError("tuning.run needs tuning.validation_prompts >= 1")
    prepare_tiny_world(config.world, progress=config.progress)  # built here once, before the workers load it
    seed = config.tuning.seed
    scores: dict[str, list[dict[str, Any]]] = {}

    def done(key: tuple, result: dict, seconds: float) -> None:
        console.print(f"{job_label(key)}: {seconds:.1f} s {result}")
        if key[0] == "tune":
            scores.setdefault(key[2], []).append(
                {"learning_rate": key[3], "beta_or_kl": key[4], **result, "seconds": seconds}
            )

    if not Path(rm_dir(config, seed), "config.json").exists():
        run_jobs(config, [("reward_model", seed)], done)
    keys = [("tune", seed, m, lr, b) for m in config.methods for lr, b in grid(config, m)]
    run_jobs(config, keys, done, fn=job_tune)
    chosen = {}
    for method, points in scores.items():
        points.sort(key=lambda p: (p["learning_rate"], p["beta_or_kl"]))
        best = best_point(points)
        chosen[method] = {"learning_rate": best["learning_rate"], "beta_or_kl": best["beta_or_kl"]}
        console.print(f"{LABELS[method]}: best {chosen[method]} (validation gold {best['validation_gold']:.3f})")
    results = {"seed": seed, "validation_prompts": config.tuning.validation_prompts, "points": scores, "chosen": chosen}
    write_json_atomic(Path(config.output_dir) / "tuning.json", results)
    console.print(f"tuning results: {Path(config.output_dir) / 'tuning.json'} (runs under {seed_dir(config, seed)})")
    return results
