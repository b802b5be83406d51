"""Supervised fine-tuning: maximise the log-likelihood of the response tokens only.

Loss (per optimizer step, over the global batch G of examples):

    L = - sum_{i in G} sum_{t in response_i} log pi(y_t | x, y_<t) / sum_{i in G} |response_i|

i.e. the mean over all response tokens of the global batch ("token-mean"), normalised by the global
token count so that micro-batching and the number of processes do not change the gradient. Prompt
tokens carry no loss. Each response ends with the tokenizer's EOS, which is trained too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from prefalign.data.collate import collate_encoded
from prefalign.data.config import DataConfig, load_sft
from prefalign.data.schema import SFTExample
from prefalign.data.token_cache import encode_cached
from prefalign.data.tokenize import Encoded, TruncatedAway, encode_example
from prefalign.models.load import ModelConfig, load_causal_lm, load_tokenizer
from prefalign.models.logprobs import token_logprobs
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
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to fine-tune."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_length=512))
    """Training data: an SFT source, or a preference source whose chosen responses are used."""
    batch: BatchConfig = field(
        default_factory=lambda: BatchConfig(global_batch_size=32, micro_batch_size=8, epochs=1.0)
    )
    """Batch sizes and training length."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-5, warmup_ratio=0.03))
    """Optimizer and learning-rate schedule."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/sft"))
    """Output folder, seed, checkpoints, logging."""


PRESETS: dict[str, dict[str, Any]] = {
    # Tulu 2 SFT recipe used by Ivison et al. (2024): lr 2e-5, 2 epochs, 3% warm-up, batch 128.
    "ivison": {
        "optim": {"learning_rate": 2e-5, "warmup_ratio": 0.03},
        "batch": {"global_batch_size": 128, "epochs": 2.0},
        "data": {"max_length": 2048},
    },
    # SFT on the preference data's chosen responses before DPO (Xu et al. 2024, Table 2).
    "xu-sft-on-preferences": {"optim": {"learning_rate": 1e-5}, "batch": {"global_batch_size": 64, "epochs": 1.0}},
}


def encode_examples(
    tokenizer, examples: Sequence[SFTExample], data: DataConfig
) -> tuple[list[Encoded], dict[str, int]]:
    """Tokenise (through the tokenisation cache); empty or truncated-away responses are skipped and counted,
    truncations counted."""
    return encode_cached(
        tokenizer,
        examples,
        "sft",
        lambda: _encode_examples(tokenizer, examples, data),
        max_length=data.max_length,
        max_prompt_length=data.max_prompt_length,
    )


def _encode_examples(
    tokenizer, examples: Sequence[SFTExample], data: DataConfig
) -> tuple[list[Encoded], dict[str, int]]:
    encoded, stats = [], {"skipped_empty": 0, "truncated": 0}
    for ex in examples:
        try:
            enc = encode_example(tokenizer, ex.prompt, ex.response, data.max_length, data.max_prompt_length)
        except TruncatedAway:
            stats["skipped_empty"] += 1
            continue
        stats["truncated"] += int(enc.truncated)
        encoded.append(enc)
    return encoded, stats


def response_nll_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over the batch of the response tokens' negative log-likelihood (a 0-dim tensor)."""
    logps = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    return -(logps * batch["response_mask"]).sum()


@torch.no_grad()
def evaluate_nll(
    session: TrainingSession, model, encoded: Sequence[Encoded], pad_id: int, micro: int
) -> dict[str, float]:
    """Held-out mean response-token NLL, computed over all processes."""
    if not encoded:
        return {}
    totals = held_out_sums(
        session.accelerator,
        model,
        encoded,
        micro,
        lambda chunk: collate_encoded(chunk, pad_id),
        lambda inner, batch: {"nll": response_nll_sum(inner, batch), "tokens": batch["response_mask"].sum()},
        keys=("nll", "tokens"),
    )
    nll = totals["nll"] / max(totals["tokens"], 1.0)
    return {"eval/loss": nll, "eval/perplexity": float(torch.exp(torch.tensor(nll)))}


def run_sft(config: SFTConfig, examples: tuple[list[SFTExample], list[SFTExample]] | None = None) -> dict[str, Any]:
    """Train; ``examples`` = (train, held-out) overrides loading from ``config.data``."""
    session = TrainingSession(config.run, config)
    acc = session.accelerator
    # 1. data
    if examples is None:
        train_ex, eval_ex, report = load_sft(config.data)
        session.record_data(report)
    else:
        train_ex, eval_ex = examples
    tokenizer = load_tokenizer(config.model)
    train, train_stats = encode_examples(tokenizer, train_ex, config.data)
    held_out, _ = encode_examples(tokenizer, eval_ex, config.data)
    session.print(
        f"SFT: {len(train)} training examples ({train_stats['truncated']} truncated, "
        f"{train_stats['skipped_empty']} skipped as empty), {len(held_out)} held out"
        + (" (tokens from the cache)" if train_stats["from_cache"] else "")
    )
    plan = BatchPlan(
        len(train), config.batch.global_batch_size, config.run.seed, config.batch.epochs, config.batch.max_steps
    )
    # 2. model and optimizer
    model = load_causal_lm(config.model, seed=config.run.seed)
    model, optimizer, scheduler, _ = session.prepare_training(
        "policy", model, config.optim, plan.total_steps, config.batch
    )
    logger = session.start_logging(plan.total_steps, "sft")
    model.train()
    pad_id = tokenizer.pad_token_id
    # 3. loop
    for step in range(session.start_step, plan.total_steps):
        indices = plan.step_indices(step)
        global_tokens = sum(train[i].response_length for i in indices)
        local = [train[i] for i in shard(indices, acc.process_index, acc.num_processes)]
        batches = [
            {k: v.to(acc.device) for k, v in collate_encoded(mb, pad_id).items()}
            for mb in micro_batches(local, config.batch.micro_batch_size)
        ]
        losses: list[float] = []

        def loss_fn(batch):
            loss = response_nll_sum(model, batch) / global_tokens
            losses.append(float(loss.detach()))
            return loss

        grad_norm = accumulate_and_step(acc, model, optimizer, scheduler, batches, loss_fn, config.optim.max_grad_norm)
        loss_value = global_sum(sum(losses), acc)
        check_finite("loss", loss_value, step + 1)
        metrics = {
            "loss": loss_value,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "tokens": global_tokens,
            "epoch": plan.epoch_of(step + 1),
        }
        if session.due(step + 1, config.run.eval_every, plan.total_steps):
            metrics.update(evaluate_nll(session, model, held_out, pad_id, config.batch.micro_batch_size))
        logger.log(step + 1, metrics, show=("loss", "eval/loss"))
        if session.due(step + 1, config.run.save_every, plan.total_steps):
            session.save(step + 1)
    # 4. final evaluation and model
    final = evaluate_nll(session, model, held_out, pad_id, config.batch.micro_batch_size)
    session.save(plan.total_steps)
    session.save_model(model, tokenizer, session.output_dir / "model")
    results = {
        "steps": plan.total_steps,
        "train_examples": len(train),
        "eval_examples": len(held_out),
        "truncated": train_stats["truncated"],
        "tokenized_from_cache": bool(train_stats["from_cache"]),
        **final,
        "model_dir": str(session.output_dir / "model"),
    }
    if final:
        session.print(f"SFT done: held-out loss {final['eval/loss']:.4f} (perplexity {final['eval/perplexity']:.2f})")
    return session.finish(results)
