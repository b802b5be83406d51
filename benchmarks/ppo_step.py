"""Seconds per PPO step on the embedded SmolLM2-135M, split into generate / score / update.

    .venv/bin/python benchmarks/ppo_step.py [--rollout 16] [--new-tokens 64] [--micro 8] [--steps 2] [--threads 1]
    .venv/bin/python benchmarks/ppo_step.py --peer [--baseline] [--bf16]     # one side of issue 17's setting
    .venv/bin/python benchmarks/ppo_step.py --peer --compare [--bf16]        # both sides, the ratio

Policy = SmolLM2-135M-Instruct; the reward model and the critic are the same backbone with a fresh
scalar head (the critic is initialised from the reward model, as Ivison et al. do); prompts are
HH-RLHF dialogue histories (cut to 128 tokens unless --max-prompt-length 0); the reward is the learned
model's score. Every step is a full :func:`prefalign.trainers.ppo.trainer.ppo_step` (rollout, score,
KL rewards, GAE, one minibatch update of actor and critic, no EMA). One warm-up step is not timed.

``--peer`` is the setting of issue 17's comparison with TRL's PPOTrainer: 2 threads, temperature 0.7,
exactly 64 new tokens (no stop at EOS), prompts whole, the same 40 HH-RLHF prompts (data seed 0),
rollout 8, micro-batch 8, 4 measured steps after the warm-up (the 40 prompts once).
``--baseline`` does the peer's work in this harness: Hugging Face ``generate``, a separate policy
forward for the old log-probs, micro-batches of consecutive rows padded to their longest, every
position from the first response on projected onto the vocabulary (prefalign before issue 17).
``--bf16`` runs the whole step under bf16 autocast and reports the mean and max |log-prob difference|
of the policy's response tokens against fp32 on one rollout. ``--compare`` runs this script twice in
child processes, ours then the baseline (same flags otherwise), each with its own peak memory, and
prints the ratio of samples per second.

It also counts each model's backbone rows in each stage and checks the trainer computes nothing
twice: the policy's embedding runs once per distinct prompt (prefill) plus once per new token per
generate call (KV cache; no re-encoding of the prefix); scoring runs the reference, the critic and
the reward model over each row once, and the policy once per row only when the rollout has no log-probs
of its own (the baseline); the update runs the policy and the critic over each row once.
Peak memory is the process's resident set (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch

from prefalign.config import build_config
from prefalign.models import logprobs as logprobs_module
from prefalign.rollout import experience as experience_module
from prefalign.rollout.batching import contiguous_groups
from prefalign.rollout.experience import rollout_logprobs
from prefalign.rollout.generate import generate
from prefalign.trainers.common import make_accelerator
from prefalign.trainers.ppo import rollout_engine as rollout_engine_module
from prefalign.trainers.ppo import trainer as ppo_module
from prefalign.trainers.ppo import update as update_module
from prefalign.trainers.ppo.trainer import PRESETS, PPOConfig, build_context, ppo_step

PEER = {
    "threads": 2,
    "temperature": 0.7,
    "fixed_length": True,
    "new_tokens": 64,
    "max_prompt_length": 0,
    "num_prompts": 40,
    "rollout": 8,
    "micro": 8,
    "steps": 4,
}


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
            "data": {
                "source": "hh-rlhf",
                "num_prompts": args.num_prompts,
                "validation_prompts": 0,
                "max_prompt_length": args.max_prompt_length or 10**9,
            },
            "sampling": {
                "temperature": args.temperature,
                "top_k": 0,
                "max_new_tokens": args.new_tokens,
                "num_samples": 1,
                "stop_at_eos": not args.fixed_length,
            },
            "batch": {
                "rollout_batch_size": args.rollout,
                "num_minibatches": 1,
                "micro_batch_size": args.micro,
                "steps": args.steps + 1,
            },
            "run": {"output_dir": "runs/bench-ppo", "threads": args.threads, "tensorboard": False, "progress": False},
        },
    )


def use_baseline() -> None:
    """The peer's work: HF generate (so no sampler log-probs: a separate policy forward scores them),
    micro-batches of consecutive rows padded to their longest, the full-width vocabulary projection."""
    rollout_engine_module.generate = partial(generate, engine="hf")  # what stage_rollout's sample_rollout calls
    consecutive = lambda lengths, size, *_: contiguous_groups(len(lengths), size)  # noqa: E731
    experience_module.length_groups = update_module.length_groups = consecutive
    real = logprobs_module.token_logprobs
    full_width = lambda *a, **k: real(*a, **{**k, "response_only": False})  # noqa: E731
    experience_module.token_logprobs = update_module.token_logprobs = full_width


class ForwardCounter:
    """Counts backbone rows per (model, stage), and the policy's embedding calls per stage."""

    def __init__(self) -> None:
        self.stage = "setup"
        self.counts: Counter = Counter()

    def watch(self, name: str, model: torch.nn.Module) -> None:
        model.model.register_forward_hook(lambda _m, _a, out: self.counts.update({(name, self.stage): out[0].shape[0]}))
        if name == "policy":
            embed = model.get_input_embeddings()
            embed.register_forward_hook(lambda *_: self.counts.update([("policy-embedding", self.stage)]))

    def wrap(self, stage: str, fn):
        def wrapped(*args, **kwargs):
            self.stage = stage
            try:
                return fn(*args, **kwargs)
            finally:
                self.stage = "other"

        return wrapped


def expected_rows(cfg: PPOConfig, baseline: bool) -> dict:
    rows = cfg.batch.rollout_batch_size
    return {
        ("reference", "score"): rows,
        ("critic", "score"): rows,
        ("reward", "score"): rows,
        ("policy", "score"): rows if baseline else 0,
        ("policy", "update"): rows * cfg.ppo.ppo_epochs,
        ("critic", "update"): rows * cfg.ppo.ppo_epochs,
    }


def logprob_error_bf16(ctx, cfg: PPOConfig) -> dict[str, float]:
    """Mean and max |log-prob(bf16 autocast) - log-prob(fp32)| of the policy on one fp32 rollout's responses."""
    policy = ctx.accelerator.unwrap_model(ctx.parts.policy)
    ids = ctx.train_ids[: cfg.batch.rollout_batch_size]
    rollout = generate(policy, ctx.parts.tokenizer, ids, cfg.sampling, cfg.batch.micro_batch_size, generator_seed=0)
    fp32 = rollout_logprobs(policy, rollout, cfg.batch.micro_batch_size, cfg.sampling.temperature)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = rollout_logprobs(policy, rollout, cfg.batch.micro_batch_size, cfg.sampling.temperature)
    diff = (bf16 - fp32).abs()[rollout.response_mask.bool()]
    return {"mean_abs_logprob_diff": float(diff.mean()), "max_abs_logprob_diff": float(diff.max())}


def run(args: argparse.Namespace) -> dict:
    if args.baseline:
        use_baseline()
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
    autocast = partial(torch.autocast, "cpu", dtype=torch.bfloat16) if args.bf16 else nullcontext
    with autocast():
        ppo_step(ctx, 0)  # warm-up
    rows, checks = [], []
    for step in range(1, args.steps + 1):
        counter.counts.clear()
        start = time.perf_counter()
        with autocast():
            metrics = ppo_step(ctx, step)
        total = time.perf_counter() - start
        chunks = math.ceil(
            cfg.batch.rollout_batch_size / (cfg.batch.generation_batch_size or cfg.batch.micro_batch_size)
        )
        embeds = counter.counts[("policy-embedding", "generate")]
        checks.append(
            embeds <= cfg.batch.rollout_batch_size + chunks * cfg.sampling.max_new_tokens
            and all(counter.counts[k] == v for k, v in expected_rows(cfg, args.baseline).items())
        )
        rows.append(
            {
                "step_s": total,
                "generate_s": metrics["time/generate"],
                "score_s": metrics["time/score"],
                "update_s": metrics["time/update"],
                "samples_per_s": cfg.batch.rollout_batch_size / total,
                "generated_tokens": metrics["response_length"] * cfg.batch.rollout_batch_size,
                "forward_rows": {f"{m}/{s}": c for (m, s), c in sorted(counter.counts.items())},
            }
        )
    mean = {
        k: sum(r[k] for r in rows) / len(rows) for k in ("step_s", "generate_s", "score_s", "update_s", "samples_per_s")
    }
    report = {
        "mode": ("baseline" if args.baseline else "prefalign") + (" bf16" if args.bf16 else " fp32"),
        "config": {
            "rollout_batch_size": cfg.batch.rollout_batch_size,
            "max_new_tokens": cfg.sampling.max_new_tokens,
            "stop_at_eos": cfg.sampling.stop_at_eos,
            "temperature": cfg.sampling.temperature,
            "max_prompt_length": cfg.data.max_prompt_length,
            "num_prompts": cfg.data.num_prompts,
            "micro_batch_size": cfg.batch.micro_batch_size,
            "threads": torch.get_num_threads(),
            "measured_steps": args.steps,
        },
        "mean": mean,
        "steps": rows,
        "no_duplicate_forward_passes": all(checks),
        "peak_rss_gib_after_loading": rss_loaded,
        "peak_rss_gib": peak_rss_gib(),
    }
    if args.bf16:
        report["bf16_vs_fp32"] = logprob_error_bf16(ctx, cfg)
    return report


def compare(argv: list[str]) -> dict:
    """This script as two child processes (ours, then the baseline); their reports and the ratios."""
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("prefalign", []), ("baseline", ["--baseline"])):
            out = Path(tmp) / f"{name}.json"
            subprocess.run([sys.executable, __file__, *argv, *extra, "--output", str(out)], check=True)
            reports[name] = json.loads(out.read_text())
    ours, base = reports["prefalign"]["mean"], reports["baseline"]["mean"]
    return {
        "ratio_samples_per_s": ours["samples_per_s"] / base["samples_per_s"],
        "stage_speedup": {k: base[k] / ours[k] for k in ("generate_s", "score_s", "update_s")},
        "peak_rss_gib": {k: r["peak_rss_gib"] for k, r in reports.items()},
        "reports": reports,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollout", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)  # 2 threads on 2 shared cores ran 4x slower here
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--fixed-length", action="store_true", help="exactly --new-tokens tokens (no stop at EOS)")
    parser.add_argument("--max-prompt-length", type=int, default=128, help="0: prompts whole")
    parser.add_argument("--num-prompts", type=int, default=256)
    parser.add_argument("--peer", action="store_true", help="issue 17's setting (overrides the flags above)")
    parser.add_argument("--baseline", action="store_true", help="the peer's work (HF generate, padded, 4 forwards)")
    parser.add_argument("--bf16", action="store_true", help="the whole step under bf16 autocast")
    parser.add_argument("--compare", action="store_true", help="ours and the baseline in child processes")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.compare:
        argv = [a for a in sys.argv[1:] if a not in ("--compare", "--baseline")]
        if "--output" in argv:
            del argv[argv.index("--output") : argv.index("--output") + 2]
        report = compare(argv)
    else:
        if args.peer:
            vars(args).update(PEER)
        report = run(args)
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    if not args.compare and not report["no_duplicate_forward_passes"]:
        raise SystemExit("a model was run more often than the trainer's design allows (see forward_rows)")


if __name__ == "__main__":
    main()
