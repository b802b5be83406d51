"""PPO under ``accelerate launch`` with 2 CPU processes (gloo).

With accelerate 1.15 on a machine without GPUs, ``accelerate launch --cpu --num_processes 2`` starts a
single process (its CPU launcher expects mpirun for more); ``accelerate launch --multi_gpu
--num_processes 2`` goes through ``torch.distributed.run`` and the Accelerator comes up as MULTI_CPU
over gloo (``tests/distributed.py``). ``python -m torch.distributed.run --nproc_per_node 2 -m
prefalign.cli ppo ...`` works as well.

Run as a script (by the test, under accelerate), this file is the worker: it runs ``prefalign ppo``
through the CLI, then applies one PPO update to a fixed experience split over the two processes and
writes the resulting weights, which the test compares with the same update in one process.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

TINY_FLAGS = [
    "--preset",
    "tiny",
    "--run.threads",
    "1",
    "--batch.steps",
    "3",
    "--run.save_every",
    "1",
    "--run.eval_every",
    "1",
    # The Xu-style settings whose statistics cross processes: top-k log-probs, EMA value statistics, and the
    # per-minibatch refresh (advantages whitened over the minibatch's rows on both processes).
    "--sampling.top_k",
    "20",
    "--ppo.logprobs_top_k",
    "True",
    "--ppo.value_normalization",
    "True",
    "--ppo.value_normalization_beta",
    "0.99",
    "--ppo.recompute_old",
    "True",
]
UPDATE_OVERRIDES = {"batch": {"num_minibatches": 1, "micro_batch_size": 3}, "ppo": {"ppo_epochs": 1}}


def fixed_experience(ctx):
    """The same 16-row experience on every process (no cross-process statistics involved)."""
    from prefalign.algorithms.advantages import compute_gae
    from prefalign.algorithms.kl import kl_penalized_rewards
    from prefalign.algorithms.masked import masked_whiten
    from prefalign.rollout.experience import Experience, rollout_logprobs, rollout_values
    from prefalign.rollout.generate import generate

    cfg, parts = ctx.config, ctx.parts
    policy = ctx.accelerator.unwrap_model(parts.policy)
    rollout = generate(policy, parts.tokenizer, ctx.train_ids[:8], cfg.sampling, 16, generator_seed=123)
    old = rollout_logprobs(policy, rollout, 16, cfg.sampling.temperature)
    ref = rollout_logprobs(parts.reference.model, rollout, 16, cfg.sampling.temperature)
    values = rollout_values(ctx.accelerator.unwrap_model(parts.critic), rollout, 16)
    scores = parts.scorer(rollout, ctx.train_prompts[:8])
    mask = rollout.response_mask
    token_rewards, kl = kl_penalized_rewards(scores, old, ref, mask, 0.01)
    advantages, returns = compute_gae(token_rewards, values, mask, 1.0, 0.95)
    return Experience(
        rollout.sequences,
        rollout.attention_mask,
        mask,
        old,
        ref,
        values,
        scores,
        scores,
        rollout.ended_with_eos,
        kl,
        token_rewards,
        masked_whiten(advantages, mask),
        returns,
    )


def updated_weights(ctx, rank: int, world: int) -> dict[str, torch.Tensor]:
    """One PPO update on this process's rows of the fixed experience; the policy and critic weights after it."""
    import dataclasses

    from prefalign.trainers.ppo.update import ppo_update
    from tests.trainers.ppo.helpers import sgd_update_parts

    exp = fixed_experience(ctx)
    settings = dataclasses.replace(ctx.settings, actor_max_grad_norm=None, critic_max_grad_norm=None)
    ppo_update(
        ctx.accelerator, sgd_update_parts(ctx, lr=0.1), settings, exp.select(range(rank, len(exp), world)), step=0
    )
    acc = ctx.accelerator
    weights = {
        f"policy.{k}": v.detach().cpu().clone() for k, v in acc.unwrap_model(ctx.parts.policy).state_dict().items()
    }
    weights.update(
        {f"critic.{k}": v.detach().cpu().clone() for k, v in acc.unwrap_model(ctx.parts.critic).state_dict().items()}
    )
    return weights


def update_context(out: Path):
    from prefalign.trainers.common import make_accelerator
    from prefalign.trainers.ppo.trainer import build_context
    from tests.trainers.ppo.helpers import tiny_config

    config = tiny_config(out, UPDATE_OVERRIDES)
    return build_context(config, make_accelerator(config.run))


def worker(out: Path) -> None:
    from prefalign.cli import main

    code = main(["ppo", *TINY_FLAGS, "--run.output_dir", str(out / "run")])
    if code != 0:
        raise SystemExit(code)
    ctx = update_context(out / "update")
    acc = ctx.accelerator
    weights = updated_weights(ctx, acc.process_index, acc.num_processes)
    checksum = sum(float(v.double().sum()) for v in weights.values())
    (out / f"checksum-{acc.process_index}.json").write_text(
        json.dumps({"checksum": checksum, "world": acc.num_processes})
    )
    if acc.is_main_process:
        torch.save(weights, out / "weights-2proc.pt")
    acc.wait_for_everyone()


@pytest.mark.distributed
def test_two_processes_run_and_update_like_one(tmp_path):
    from prefalign.trainers.logging import read_metrics
    from tests.distributed import run_accelerate

    run_accelerate(2, str(Path(__file__).resolve()), str(tmp_path), timeout=400)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["finished"] and results["steps"] == 3
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r[k]) for r in rows for k in ("reward/mean", "kl/mean", "value_loss", "eval/reward"))
    latest = tmp_path / "run" / "checkpoints" / (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
    assert (latest / "accelerate" / "random_states_0.pkl").exists() and (
        latest / "accelerate" / "random_states_1.pkl"
    ).exists()
    sums = [json.loads((tmp_path / f"checksum-{r}.json").read_text()) for r in (0, 1)]
    assert sums[0]["world"] == 2 and sums[0]["checksum"] == sums[1]["checksum"], "the processes' weights diverged"
    two = torch.load(tmp_path / "weights-2proc.pt")
    one = updated_weights(update_context(tmp_path / "single"), 0, 1)
    start = update_context(tmp_path / "fresh").parts.policy.state_dict()
    assert max(float((one[f"policy.{k}"] - v).abs().max()) for k, v in start.items()) > 1e-3, (
        "the update should move the policy"
    )
    for name, tensor in one.items():  # SGD: a wrongly scaled loss on two processes would show here
        torch.testing.assert_close(two[name], tensor, atol=1e-6, rtol=1e-5, msg=name)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    worker(Path(sys.argv[1]))
