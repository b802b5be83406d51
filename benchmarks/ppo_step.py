"""Seconds per PPO step on the embedded SmolLM2-135M, split into generate / score / update.

    .venv/bin/python benchmarks/ppo_step.py [--rollout 16] [--new-tokens 64] [--micro 8] [--steps 2] [--threads 1]

Policy = SmolLM2-135M-Instruct; the reward model and the critic are the same backbone with a fresh
scalar head (the critic is initialised from the reward model, as Ivison et al. do); prompts are
HH-RLHF dialogue histories (cut to 128 tokens); the reward is the learned model's score. Every step
is a full :func:`prefalign.trainers.ppo.trainer.ppo_step` (rollout, score, KL rewards, GAE, one minibatch
update of actor and critic, no EMA). One warm-up step is not timed.

It also counts the backbone forward passes of each model in each stage and checks the trainer
computes nothing twice: generation calls the policy once per new token per generate call (KV cache,
batched; no re-encoding of the prefix), scoring calls the policy, the reference, the critic and
the reward model once per micro-batch each, and the update calls the policy and the critic once per
micro-batch. Peak memory is the process's resident set (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from collections import Counter
from pathlib import Path

import torch

from prefalign.config import build_config
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.ppo import trainer as ppo_module
from prefalign.trainers.ppo.trainer import PRESETS, PPOConfig, build_context, ppo_step


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def benchmark_config(args: argparse.Namespace) -> PPOConfig:
    return build_config(
        PPOConfig,
        presets=PRESETS,
        overrides={
            "policy": {"name_or_path": "smollm2-135m-instruct"},
            "critic_init": "reward",
            "reward": {"kind": "model", "model": {"name_or_path": "smollm2-135m-instruct"}},
            "data": {"source": "hh-rlhf", "num_prompts": 256, "validation_prompts": 0, "max_prompt_length": 128},
            "sampling": {"temperature": 1.0, "top_k": 0, "max_new_tokens": args.new_tokens, "num_samples": 1},
            "batch": {
                "rollout_batch_size": args.rollout,
                "num_minibatches": 1,
                "micro_batch_size": args.micro,
                "steps": args.steps + 1,
            },
            "run": {"output_dir": "runs/bench-ppo", "threads": args.threads, "tensorboard": False, "progress": False},
        },
    )


class ForwardCounter:
    """Counts backbone forward calls per (model, stage)."""

    def __init__(self) -> None:
        self.stage = "setup"
        self.counts: Counter = Counter()

    def watch(self, name: str, model: torch.nn.Module) -> None:
        backbone = model.model
        backbone.register_forward_hook(lambda *_: self.counts.update([(name, self.stage)]))

    def wrap(self, stage: str, fn):
        def wrapped(*args, **kwargs):
            self.stage = stage
            try:
                return fn(*args, **kwargs)
            finally:
                self.stage = "other"

        return wrapped


def expected_counts(cfg: PPOConfig, generate_calls: int) -> dict:
    micro = math.ceil(cfg.batch.rollout_batch_size / cfg.batch.micro_batch_size)
    return {
        ("reference", "score"): micro,
        ("critic", "score"): micro,
        ("reward", "score"): micro,
        ("policy", "score"): micro,
        ("policy", "update"): micro,
        ("critic", "update"): micro,
        ("policy", "generate"): generate_calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollout", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)  # 2 threads on 2 shared cores ran 4x slower here
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    cfg = benchmark_config(args)
    acc = make_accelerator(cfg.run)
    ctx = build_context(cfg, acc)
    rss_loaded = peak_rss_gib()
    counter = ForwardCounter()
    for name, model in (
        ("policy", ctx.parts.policy),
        ("critic", ctx.parts.critic),
        ("reference", ctx.parts.reference.model),
        ("reward", ctx.parts.scorer.parts[0][1].model),
    ):
        counter.watch(name, acc.unwrap_model(model))
    ppo_module.stage_rollout = counter.wrap("generate", ppo_module.stage_rollout)
    ppo_module.stage_score = counter.wrap("score", ppo_module.stage_score)
    ppo_module.ppo_update = counter.wrap("update", ppo_module.ppo_update)
    ppo_step(ctx, 0)  # warm-up
    rows, checks = [], []
    for step in range(1, args.steps + 1):
        counter.counts.clear()
        start = time.perf_counter()
        metrics = ppo_step(ctx, step)
        total = time.perf_counter() - start
        new_tokens = metrics["response_length"] * cfg.batch.rollout_batch_size
        generate_calls = int(counter.counts[("policy", "generate")])
        longest = (
            int(math.ceil(cfg.batch.rollout_batch_size / cfg.batch.micro_batch_size)) * cfg.sampling.max_new_tokens
        )
        checks.append(
            generate_calls <= longest
            and all(counter.counts[k] == v for k, v in expected_counts(cfg, generate_calls).items())
        )
        rows.append(
            {
                "step_s": total,
                "generate_s": metrics["time/generate"],
                "score_s": metrics["time/score"],
                "update_s": metrics["time/update"],
                "samples_per_s": cfg.batch.rollout_batch_size / total,
                "generated_tokens": new_tokens,
                "forward_calls": {f"{m}/{s}": c for (m, s), c in sorted(counter.counts.items())},
            }
        )
    mean = {
        k: sum(r[k] for r in rows) / len(rows) for k in ("step_s", "generate_s", "score_s", "update_s", "samples_per_s")
    }
    report = {
        "config": {
            "rollout_batch_size": args.rollout,
            "max_new_tokens": args.new_tokens,
            "micro_batch_size": args.micro,
            "threads": torch.get_num_threads(),
            "measured_steps": args.steps,
        },
        "mean": mean,
        "steps": rows,
        "no_duplicate_forward_passes": all(checks),
        "peak_rss_gib_after_loading": rss_loaded,
        "peak_rss_gib": peak_rss_gib(),
    }
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    if not all(checks):
        raise SystemExit("a model was run more often than the trainer's design allows (see forward_calls)")


if __name__ == "__main__":
    main()
