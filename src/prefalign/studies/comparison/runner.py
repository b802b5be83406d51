"""The study's units of work ("jobs") and the pool of worker processes that runs them.

A job is one of

- ``("reward_model", seed)``: the seed's reward model;
- ``("offline", seed, method)``: DPO / RRHF / PRO / DPO + SFT first on the static pairs (one run
  serves both testbeds), then its held-out evaluation and convergence;
- ``("online", seed, method, testbed)``: PPO (a Table 3 row) or DPO-Iter in a testbed, then its
  evaluation, convergence and over-optimisation curve;
- ``("evaluate", seed, model_dir)``: an offline run's model evaluated under the seed's reward model;
- ``("evaluate_sft", seeds)``: the SFT model evaluated once, its responses scored by every seed's
  reward model.

Jobs of the first phase (reward models, offline methods) depend on nothing; the second phase's
need the seed's reward model. Every job is a function of the study's settings and its own key
alone (one torch thread, seeded by its seed), so the results do not depend on how many workers run
them or in which order: ``workers`` processes (one per core) only change the wall time.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from prefalign.studies.comparison.methods import OFFLINE, PPO_ROWS, train_offline, train_reward_model

_WORLD: dict[str, Any] = {}


def world_for(config) -> Any:
    """The tiny world of the study's settings (built by the main process; a worker loads it from the cache once)."""
    from prefalign.studies.comparison.tiny_world.prepare import prepare_tiny_world, settings_hash

    key = settings_hash(config.world)
    if key not in _WORLD:
        _WORLD[key] = prepare_tiny_world(config.world, progress=False)
    return _WORLD[key]


def policy_split(world, validation: int) -> tuple[list, list]:
    """(training, validation) policy prompts: the last ``validation`` ones are the tuning split."""
    prompts = world.data.policy_prompts
    if not 0 <= validation < len(prompts):
        raise ValueError(f"tuning.validation_prompts={validation} must be below the {len(prompts)} policy prompts")
    return (prompts[: len(prompts) - validation], prompts[len(prompts) - validation :]) if validation else (prompts, [])


def write_prompt_files(config, world) -> Path:
    """The training split of the policy prompts as a JSONL prompt file (the PPO trainer's file source)."""
    from prefalign.atomic import write_text_atomic

    train, _ = policy_split(world, config.tuning.validation_prompts)
    rows = [json.dumps({"prompt": p.messages[-1].content}) for p in train]
    path = Path(config.output_dir) / "data" / "policy_prompts_train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(rows) + "\n")
    return path


def seed_dir(config, seed: int) -> Path:
    return Path(config.output_dir) / f"seed-{seed}"


def rm_dir(config, seed: int) -> str:
    return str(seed_dir(config, seed) / "reward_model" / "model")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _evaluate(config, world, model_dir: str, seed: int, prompts=None) -> dict[str, Any]:
    from prefalign.studies.comparison.tiny_world.evaluate import evaluate_policy, load_learned_reward

    reward = load_learned_reward(rm_dir(config, seed))
    prompts = world.data.eval_prompts if prompts is None else prompts
    return evaluate_policy(model_dir, str(world.sft_dir), prompts, config.evaluation, reward)


def job_reward_model(config, world, seed: int) -> dict[str, Any]:
    _, summary = train_reward_model(
        world, config.reward_model, seed_dir(config, seed) / "reward_model", seed, False, config.threads
    )
    return {"reward_model": summary}


def job_offline(config, world, seed: int, method: str) -> dict[str, Any]:
    from prefalign.studies.comparison.convergence import offline_convergence

    out = seed_dir(config, seed) / method
    model_dir, train = train_offline(
        method, world, config.offline, out, seed, False, config.threads, config.convergence.early_stop()
    )
    conv = offline_convergence(out, config.convergence) | run_length(train, "planned_steps")
    return {"train": train, "model_dir": model_dir, "convergence": conv}


def run_length(train: dict[str, Any], cap_key: str) -> dict[str, Any]:
    """The run's cap (its stage's length) and whether it stopped at a plateau before it."""
    return {"cap": int(train[cap_key]), "stopped_early": bool(train["stopped_early"])}


def job_reward_ensemble(config, world, seed: int) -> dict[str, Any]:
    """The extra members of the seed's reward-model ensemble (prefalign.studies.comparison.beyond)."""
    from prefalign.studies.comparison.beyond import train_reward_ensemble

    stage, members = config.reward_model, config.ppo.ensemble_members
    return {
        "reward_ensemble": train_reward_ensemble(
            world, stage, members, rm_dir(config, seed), seed, False, config.threads
        )
    }


def job_evaluate(config, world, seed: int, model_dir: str) -> dict[str, Any]:
    return _evaluate(config, world, model_dir, seed)


def job_evaluate_sft(config, world, seeds: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    """The SFT model's evaluation for every seed: its responses and metrics do not depend on the seed (fixed
    sampling seed), only ``rm/score`` does (the seed's reward model), so the model is evaluated once and its
    greedy responses scored by each seed's reward model."""
    from prefalign.studies.comparison.tiny_world.evaluate import load_learned_reward

    prompts = world.data.eval_prompts
    ev = _evaluate(config, world, str(world.sft_dir), seeds[0])
    out = {}
    for seed in seeds:
        metrics = dict(ev["metrics"])
        if seed != seeds[0]:
            metrics["rm/score"] = float(
                load_learned_reward(rm_dir(config, seed))(prompts, ev["greedy_responses"]).mean()
            )
        out[seed] = {"metrics": metrics, "examples": ev["examples"]}
    return out


def job_online(config, world, seed: int, method: str, testbed: str) -> dict[str, Any]:
    from prefalign.studies.comparison import convergence, curves
    from prefalign.studies.comparison.online import train_iterative, train_ppo
    from prefalign.studies.comparison.tiny_world.evaluate import load_learned_reward

    tokens = config.evaluation.max_new_tokens
    train_prompts, _ = policy_split(world, config.tuning.validation_prompts)
    reward_model = rm_dir(config, seed) if testbed == "preference" else None
    common = dict(
        seed=seed,
        progress=False,
        threads=config.threads,
        max_new_tokens=tokens,
        early_stop=config.convergence.early_stop(),
    )
    out = seed_dir(config, seed) / testbed
    learned = load_learned_reward(rm_dir(config, seed))
    sft = str(world.sft_dir)
    if method in PPO_ROWS:
        prompt_file = write_prompt_files(config, world)
        model_dir, train = train_ppo(
            method, world, config.ppo, testbed, reward_model, prompt_file, out / "ppo", **common
        )
        run_dir = Path(model_dir).parent
        conv = convergence.ppo_convergence(run_dir, config.convergence) | run_length(train, "planned_steps")
        curve = curves.ppo_curve(
            run_dir,
            sft,
            world.data.eval_prompts,
            config.evaluation,
            learned,
            train["rollout_batch_size"],
            max_points=config.ppo.curve_points,
        )
    else:
        run_dir = out / method
        model_dir, train = train_iterative(
            world, config.iterative, config.offline, testbed, reward_model, train_prompts, run_dir, **common
        )
        conv = convergence.iterative_convergence(run_dir, config.convergence) | run_length(train, "planned_rounds")
        curve = curves.iterative_curve(run_dir, sft, world.data.eval_prompts, config.evaluation, learned)
    evaluation = _evaluate(config, world, model_dir, seed)
    return {
        "train": train,
        "metrics": evaluation["metrics"],
        "examples": evaluation["examples"],
        "convergence": conv,
        "curve": curve,
        "run_dir": _relative(run_dir, Path(config.output_dir)),
    }


JOBS: dict[str, Callable[..., dict[str, Any]]] = {
    "reward_model": job_reward_model,
    "reward_ensemble": job_reward_ensemble,
    "offline": job_offline,
    "evaluate": job_evaluate,
    "evaluate_sft": job_evaluate_sft,
    "online": job_online,
}


def run_job(config, key: tuple, fn: Callable | None = None) -> tuple[tuple, dict[str, Any], float]:
    """Run one job (in a worker or in-process) by ``fn`` or ``JOBS[key[0]]``; returns (key, result, seconds)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    world = world_for(config)
    result = (fn or JOBS[key[0]])(config, world, *key[1:])
    return key, result, time.perf_counter() - started


def job_label(key: tuple) -> str:
    if key[0] == "evaluate_sft":
        return f"SFT model evaluate (seeds {', '.join(map(str, key[1]))})"
    return " ".join(str(k) for k in (key[1], *key[2:], key[0] if key[0] != "online" else ""))


_POOLS: dict[int, concurrent.futures.ProcessPoolExecutor] = {}


def worker_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """The ``workers`` processes shared by every :func:`run_jobs` call until :func:`close_pools` (a worker imports
    torch and transformers and loads the tiny world once, not once per phase of the study)."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )
    return pool


def close_pools() -> None:
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


def run_jobs(
    config, keys: list[tuple], on_done: Callable[[tuple, dict, float], None], fn: Callable | None = None
) -> None:
    """Run ``keys`` on ``config.workers`` processes (in this process when 1); ``on_done`` sees each as it ends.

    ``fn`` (a module-level function, so a worker can import it) runs every key instead of ``JOBS[key[0]]``."""
    if config.workers <= 1 or len(keys) == 1:
        for key in keys:
            on_done(*run_job(config, key, fn))
        return
    pool = worker_pool(config.workers)
    futures = [pool.submit(run_job, config, key, fn) for key in keys]
    try:
        for future in concurrent.futures.as_completed(futures):
            on_done(*future.result())
    except BaseException:
        for future in futures:
            future.cancel()
        raise


__all__ = [
    "OFFLINE",
    "JOBS",
    "run_job",
    "run_jobs",
    "close_pools",
    "policy_split",
    "world_for",
    "rm_dir",
    "seed_dir",
    "job_label",
]
