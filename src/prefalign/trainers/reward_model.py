"""Reward-model training with the Bradley-Terry loss (Xu et al. 2024, Eq. 4).

    L = - E_{(x, y_w, y_l)} log sigmoid(r(x, y_w) - r(x, y_l))

``r`` is a backbone with a scalar head read at the last real token of prompt + response (see
:mod:`prefalign.models.heads`). Chosen and rejected go through the model in one (2B, T) forward
pass. Defaults follow Ivison et al. (2024, App. F): 1 epoch, learning rate 1e-5 with 3% linear
warm-up then linear decay to 1e-6, global batch 512 reached by gradient accumulation.

Reported on held-out pairs: accuracy (share of pairs with r(chosen) > r(rejected); ties count as
half) and mean margin r(chosen) - r(rejected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from prefalign.algorithms.preference import bradley_terry_loss
from prefalign.data.collate import collate_pairs
from prefalign.data.config import DataConfig, load_pairs
from prefalign.data.schema import PreferencePair
from prefalign.data.token_cache import encode_cached
from prefalign.data.tokenize import EncodedPair, TruncatedAway, encode_pair
from prefalign.models.heads import sequence_scores
from prefalign.models.load import ModelConfig, load_reward_model, load_tokenizer
from prefalign.trainers.common import (
    BatchConfig,
    BatchPlan,
    OptimConfig,
    RunConfig,
    accumulate_and_step,
    check_finite,
    global_sum,
    held_out_sums,
    micro_batches,
    shard,
)
from prefalign.trainers.session import TrainingSession


@dataclass
class RewardModelConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone of the reward model (usually the SFT model's folder)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_length=512))
    """Preference pairs."""
    batch: BatchConfig = field(
        default_factory=lambda: BatchConfig(global_batch_size=512, micro_batch_size=8, epochs=1.0)
    )
    """Batch sizes (pairs) and training length."""
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(learning_rate=1e-5, min_learning_rate=1e-6, warmup_ratio=0.03)
    )
    """Optimizer and schedule (Ivison et al. defaults)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/rm"))
    """Output folder, seed, checkpoints, logging."""
    ensemble_size: int = 1
    """Train this many reward models (seeds run.seed, run.seed + 1, ...: head initialisation and data order; Coste et
    al. 2024) into run.output_dir/member-i/, and write run.output_dir/ensemble.json: the output folder is then an
    ensemble, read by ppo, dpo-iter and eval-rm as reward.model with their `ensemble` setting (1: one model in
    run.output_dir/model)."""

    def __post_init__(self) -> None:
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {self.ensemble_size}")


PRESETS: dict[str, dict[str, Any]] = {
    "ivison": {
        "optim": {"learning_rate": 1e-5, "min_learning_rate": 1e-6, "warmup_ratio": 0.03},
        "batch": {"global_batch_size": 512, "epochs": 1.0},
    },
    # Ours: Xu et al. (2024) give no reward-model settings. The ivison rate without its floor, batch 64 pairs, 1 epoch
    # (sources per setting: docs/presets.md).
    "xu": {
        "optim": {"learning_rate": 1e-5, "min_learning_rate": 0.0},
        "batch": {"global_batch_size": 64, "epochs": 1.0},
    },
}


def encode_pairs(
    tokenizer, pairs: Sequence[PreferencePair], data: DataConfig
) -> tuple[list[EncodedPair], dict[str, int]]:
    """Tokenise pairs (through the tokenisation cache); a pair with an empty or truncated-away response is skipped
    and counted."""
    return encode_cached(
        tokenizer,
        pairs,
        "reward-model pairs",
        lambda: _encode_pairs(tokenizer, pairs, data),
        max_length=data.max_length,
        max_prompt_length=data.max_prompt_length,
    )


def _encode_pairs(
    tokenizer, pairs: Sequence[PreferencePair], data: DataConfig
) -> tuple[list[EncodedPair], dict[str, int]]:
    encoded, stats = [], {"skipped_empty": 0, "truncated": 0}
    for pair in pairs:
        try:
            enc = encode_pair(
                tokenizer, pair.prompt, pair.chosen, pair.rejected, data.max_length, data.max_prompt_length
            )
        except TruncatedAway:
            stats["skipped_empty"] += 1
            continue
        stats["truncated"] += int(enc.truncated)
        encoded.append(enc)
    return encoded, stats


def pair_scores(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) chosen and (B,) rejected scores from one (2B, T) forward pass."""
    scores = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
    half = scores.shape[0] // 2
    return scores[:half], scores[half:]


@torch.no_grad()
def evaluate_pairs(
    session: TrainingSession, model, pairs: Sequence[EncodedPair], pad_id: int, micro: int
) -> dict[str, float]:
    """Held-out accuracy (ties count half), mean margin and loss, over all processes."""
    if not pairs:
        return {}

    def sums(inner, batch):
        chosen, rejected = pair_scores(inner, batch)
        diff = chosen - rejected
        return {
            "accuracy": (diff > 0).float().sum() + 0.5 * (diff == 0).float().sum(),
            "margin": diff.sum(),
            "loss": bradley_terry_loss(chosen, rejected).sum(),
        }

    keys = ("accuracy", "margin", "loss")
    totals = held_out_sums(
        session.accelerator, model, pairs, micro, lambda chunk: collate_pairs(chunk, pad_id), sums, keys
    )
    return {f"eval/{key}": totals[key] / totals["count"] for key in keys}


def run_reward_model(
    config: RewardModelConfig, pairs: tuple[list[PreferencePair], list[PreferencePair]] | None = None
) -> dict[str, Any]:
    """Train; ``pairs`` = (train, held-out) overrides loading from ``config.data``. With ``ensemble_size`` > 1, trains
    the members of an ensemble (:mod:`prefalign.trainers.reward_ensemble`)."""
    if config.ensemble_size > 1:
        from prefalign.trainers.reward_ensemble import run_reward_ensemble

        return run_reward_ensemble(config, run_reward_model, pairs)
    session = TrainingSession(config.run, config)
    acc = session.accelerator
    # 1. data
    if pairs is None:
        train_pairs, eval_pairs, report = load_pairs(config.data)
        session.record_data(report)
    else:
        train_pairs, eval_pairs = pairs
    tokenizer = load_tokenizer(config.model)
    train, stats = encode_pairs(tokenizer, train_pairs, config.data)
    held_out, _ = encode_pairs(tokenizer, eval_pairs, config.data)
    session.print(
        f"reward model: {len(train)} training pairs ({stats['truncated']} truncated, "
        f"{stats['skipped_empty']} skipped as empty), {len(held_out)} held out"
    )
    plan = BatchPlan(
        len(train), config.batch.global_batch_size, config.run.seed, config.batch.epochs, config.batch.max_steps
    )
    # 2. model and optimizer
    model = load_reward_model(config.model, seed=config.run.seed)
    model, optimizer, scheduler, _ = session.prepare_training(
        "reward_model", model, config.optim, plan.total_steps, config.batch
    )
    logger = session.start_logging(plan.total_steps, "reward model")
    model.train()
    pad_id = tokenizer.pad_token_id
    micro = config.batch.micro_batch_size
    initial = evaluate_pairs(session, model, held_out, pad_id, micro) if session.start_step == 0 else {}
    # 3. loop
    for step in range(session.start_step, plan.total_steps):
        indices = plan.step_indices(step)
        local = [train[i] for i in shard(indices, acc.process_index, acc.num_processes)]
        batches = [
            {k: v.to(acc.device) for k, v in collate_pairs(mb, pad_id).items()} for mb in micro_batches(local, micro)
        ]
        sums = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}

        def loss_fn(batch):
            chosen, rejected = pair_scores(model, batch)
            losses = bradley_terry_loss(chosen, rejected)
            diff = (chosen - rejected).detach()
            sums["loss"] += float(losses.detach().sum())
            sums["accuracy"] += float((diff > 0).float().sum())
            sums["margin"] += float(diff.sum())
            return losses.sum() / len(indices)

        grad_norm = accumulate_and_step(acc, model, optimizer, scheduler, batches, loss_fn, config.optim.max_grad_norm)
        metrics = {k: global_sum(v, acc) / len(indices) for k, v in sums.items()}
        check_finite("loss", metrics["loss"], step + 1)
        metrics.update(lr=scheduler.get_last_lr()[0], grad_norm=grad_norm, epoch=plan.epoch_of(step + 1))
        if session.due(step + 1, config.run.eval_every, plan.total_steps):
            metrics.update(evaluate_pairs(session, model, held_out, pad_id, micro))
        logger.log(step + 1, metrics, show=("loss", "accuracy", "eval/accuracy"))
        if session.due(step + 1, config.run.save_every, plan.total_steps):
            session.save(step + 1)
    # 4. final evaluation and model
    final = evaluate_pairs(session, model, held_out, pad_id, micro)
    session.save(plan.total_steps)
    session.save_model(model, tokenizer, session.output_dir / "model")
    results = {
        "steps": plan.total_steps,
        "train_pairs": len(train),
        "eval_pairs": len(held_out),
        "truncated": stats["truncated"],
        **{f"initial_{k}": v for k, v in initial.items()},
        **final,
        "model_dir": str(session.output_dir / "model"),
    }
    if final:
        session.print(
            f"reward model done: held-out accuracy {final['eval/accuracy']:.3f}, margin {final['eval/margin']:.3f}"
        )
    return session.finish(results)
