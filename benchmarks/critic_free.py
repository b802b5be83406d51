"""PPO step time and peak memory with the critic (GAE) against without it (a critic-free estimator).

    .venv/bin/python benchmarks/critic_free.py [--estimators gae grpo] [--prompts 4] [--samples 4]
        [--new-tokens 32] [--micro 8] [--steps 2] [--threads 1] [--repeats 1] [--output FILE]

Each estimator runs in its own process (peak memory is per process), on the same work: policy =
SmolLM2-135M-Instruct, reward model = the same backbone with a fresh scalar head, the critic (GAE only)
initialised from the reward model as Ivison et al. do, HH-RLHF prompts cut to 128 tokens,
``--prompts`` prompts x ``--samples`` responses per step, one minibatch update. Each step is a full
:func:`prefalign.trainers.ppo.trainer.ppo_step`; one warm-up step is not timed. Reported per
estimator: seconds per step (and its generate / score / update parts), the resident set after loading
the models and its peak (ru_maxrss, GiB; on a GPU, also the peak of allocated GPU memory), and each
one's ratio to the first estimator (the baseline, gae by default). With ``--repeats R`` the estimators
run in turn R times (gae, grpo, gae, grpo, ...) and each keeps its fastest run: on a shared machine the
minimum is the figure least inflated by other jobs (the load average at each run is printed beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from prefalign.config import build_config
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.ppo.trainer import PRESETS, PPOConfig, build_context, ppo_step


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def benchmark_config(args: argparse.Namespace, estimator: str) -> PPOConfig:
    return build_config(
        PPOConfig,
        presets=PRESETS,
        overrides={
            "policy": {"name_or_path": "smollm2-135m-instruct"},
            "critic_init": "reward",
            "reward": {"kind": "model", "model": {"name_or_path": "smollm2-135m-instruct"}},
            "data": {"source": "hh-rlhf", "num_prompts": 256, "validation_prompts": 0, "max_prompt_length": 128},
            "sampling": {"temperature": 1.0, "max_new_tokens": args.new_tokens, "num_samples": args.samples},
            "ppo": {"advantage_estimator": estimator},
            "batch": {
                "rollout_batch_size": args.prompts * args.samples,
                "num_minibatches": 1,
                "micro_batch_size": args.micro,
                "steps": args.steps + 1,
            },
            "run": {
                "output_dir": f"runs/bench-critic-free-{estimator}",
                "threads": args.threads,
                "tensorboard": False,
                "progress": False,
            },
        },
    )


def measure(args: argparse.Namespace, estimator: str) -> dict:
    """One estimator in this process: timed steps after a warm-up step."""
    cfg = benchmark_config(args, estimator)
    ctx = build_context(cfg, make_accelerator(cfg.run))
    rss_loaded = peak_rss_gib()
    ppo_step(ctx, 0)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    parts = {"time/generate": 0.0, "time/score": 0.0, "time/update": 0.0}
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        metrics = ppo_step(ctx, step)
        for key in parts:
            parts[key] += metrics[key] / args.steps
    out = {
        "estimator": estimator,
        "critic": ctx.parts.critic is not None,
        "seconds_per_step": (time.perf_counter() - start) / args.steps,
        **parts,
        "rss_after_loading_gib": rss_loaded,
        "peak_rss_gib": peak_rss_gib(),
    }
    if torch.cuda.is_available():
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", nargs="+", default=["gae", "grpo"], help="the first one is the baseline")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4, help="responses per prompt (grpo and rloo need >= 2)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="runs per estimator, in turn; the fastest is kept")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # run one estimator, print its JSON
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child)))
        return
    best: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for estimator in args.estimators:
            command = [sys.executable, __file__, "--child", estimator] + [
                f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("prompts", "samples", "new_tokens", "micro")
            ]
            command += [f"--steps={args.steps}", f"--threads={args.threads}"]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1]) | {"load_average": os.getloadavg()[0]}
            print(f"run {repeat + 1}: {estimator} {row['seconds_per_step']:.2f} s/step, load {row['load_average']:.1f}")
            if estimator not in best or row["seconds_per_step"] < best[estimator]["seconds_per_step"]:
                best[estimator] = row
    rows = [best[e] for e in args.estimators]
    base = rows[0]
    for row in rows:
        for key in ("seconds_per_step", "peak_rss_gib", "peak_cuda_gib"):
            if key in row:
                row[f"{key}_ratio_to_{base['estimator']}"] = row[key] / base[key]
    print(
        f"{'estimator':<14}{'critic':>7}{'s/step':>9}{'gen':>8}{'score':>8}{'update':>8}{'peak GiB':>10}{'ratio t':>9}"
        f"{'ratio mem':>10}"
    )
    for r in rows:
        name = base["estimator"]
        print(
            f"{r['estimator']:<14}{str(r['critic']):>7}{r['seconds_per_step']:>9.2f}{r['time/generate']:>8.2f}"
            f"{r['time/score']:>8.2f}{r['time/update']:>8.2f}{r['peak_rss_gib']:>10.2f}"
            f"{r[f'seconds_per_step_ratio_to_{name}']:>9.2f}{r[f'peak_rss_gib_ratio_to_{name}']:>10.2f}"
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
