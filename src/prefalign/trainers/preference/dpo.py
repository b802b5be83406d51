"""The offline preference trainer: DPO, RRHF and PRO (``--loss dpo | rrhf | pro``), one loop.

DPO (Rafailov et al. 2023; Xu et al. 2024, Eq. 7; Ivison et al. 2024, Eq. 3), per pair:

    L = -log sigmoid(beta [(log pi(y_c|x) - log pi_ref(y_c|x)) - (log pi(y_r|x) - log pi_ref(y_r|x))])

RRHF (Yuan et al. 2023) and PRO (Song et al. 2024), the other reward-free baselines of Xu et al.
(Table 4), train on rankings of K responses (a pair is a ranking of two); their losses are in
:mod:`prefalign.algorithms.preference`, their batching in :mod:`prefalign.trainers.preference.batches`.

Stages of a run:

0. (optional, ``sft_first.enabled``) SFT on the training pairs' chosen responses, or for
   PKU-SafeRLHF on their safe responses: the "SFT (Safe)" data fix of Xu et al. (Table 2). The SFT
   model becomes both the starting policy and the reference.
1. data: pairs (DPO) or rankings (RRHF, PRO) from ``data``; the dual-safe / dual-unsafe filters of
   Xu et al. (Tables 2, 13) for PKU-SafeRLHF; a record with an empty response is reported and
   skipped.
2. reference: with ``reference=cached`` (default) the reference log-probs of every training and
   held-out example are computed once, before training, by the initial policy itself (which *is*
   the reference), and kept in the checkpoint; no second model is held in memory. With
   ``reference=on_the_fly`` a frozen copy (or, with LoRA, the base model with adapters disabled)
   scores each micro-batch again. Both give the same loss.
3. loop: each optimizer step takes ``batch.global_batch_size`` examples, split over processes and
   into length-sorted micro-batches, every response of a micro-batch in one forward pass.
4. held-out evaluation (implicit-reward accuracy for every loss) and the final model.

Metrics: ``loss``, ``rewards/accuracy``, ``rewards/chosen``, ``rewards/rejected``,
``rewards/margin`` (DPO; implicit rewards beta (log pi - log pi_ref) of chosen and rejected),
``logps/chosen``, ``logps/rejected`` (summed response log-probs), ``rank_loss``, ``sft_loss``,
``rank/accuracy`` (RRHF, PRO), all means over the global batch; the same with ``eval/`` on held-out
data.

Departures: for a ranking of more than two responses, ``logps/chosen`` / ``logps/rejected`` and
the implicit rewards refer to the best and the worst response; DPO refuses rankings of more than two.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefalign.data.io import DropReport
from prefalign.models.load import (
    ModelConfig,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
)
from prefalign.trainers.common import (
    BatchPlan,
    accumulate_and_step,
    check_finite,
    shard,
)
from prefalign.trainers.early_stop import PlateauWatch, check_early_stop
from prefalign.trainers.gather import parameters_for_generation
from prefalign.trainers.preference.batches import EncodedRanking, collate_group, encode_rankings, length_sorted_groups
from prefalign.trainers.preference.data import (
    Records,
    data_with_filters,
    load_preference_records,
    sft_examples,
)
from prefalign.trainers.preference.dpo_config import PRESETS, DPOConfig, SFTFirstConfig
from prefalign.trainers.preference.logprobs import choose_layout, ranking_logps, to_device
from prefalign.trainers.preference.objectives import (
    NEEDS_REFERENCE,
    OBJECTIVES,
    ObjectiveSettings,
    implicit_reward_stats,
    metric_keys,
)
from prefalign.trainers.preference.reference import build_reference
from prefalign.trainers.session import TrainingSession

# ----------------------------------------------------------------------------- data


def load_training_records(config: DPOConfig) -> tuple[Records, Records, DropReport]:
    """Stage 1: the config's records (with the PKU-SafeRLHF filters), split into (train, held-out, report)."""
    return load_preference_records(
        data_with_filters(config.data, config.drop_dual_safe, config.drop_dual_unsafe), config.loss
    )


def run_sft_first(config: DPOConfig, train: Records, held_out: Records) -> ModelConfig:
    """Stage 0: SFT on the preference data (all weights, even when DPO uses LoRA); returns the model to start DPO
    from."""
    from prefalign.trainers.sft import SFTConfig, run_sft

    out = Path(config.run.output_dir) / "sft"
    model = dataclasses.replace(config.model, lora=False)
    results = out / "results.json"
    if not (config.run.resume and results.exists() and (out / "model" / "config.json").exists()):
        run = dataclasses.replace(config.run, output_dir=str(out))
        sft = SFTConfig(
            model=model, data=config.data, batch=config.sft_first.batch, optim=config.sft_first.optim, run=run
        )
        run_sft(sft, examples=(sft_examples(train), sft_examples(held_out)))
    return dataclasses.replace(config.model, name_or_path=str(out / "model"), tokenizer=None)


# ----------------------------------------------------------------------------- the loop


@dataclass
class PreferenceLoop:
    """Everything one run of the loop reads; built by :func:`run_dpo`."""

    session: TrainingSession
    config: DPOConfig
    policy: torch.nn.Module
    optimizer: Any
    scheduler: Any
    plan: BatchPlan
    train: list[EncodedRanking]
    held_out: list[EncodedRanking]
    pad_id: int
    layout: str  # batch layout: batches.PACKED, SHARED_PROMPT or ROW_PER_RESPONSE
    tables: dict[str, torch.Tensor] = field(
        default_factory=dict
    )  # cached reference log-probs: "train", "held_out" (N, K)
    reference: Callable[[dict], torch.Tensor] | None = None  # on-the-fly reference: batch -> (B, K)

    @property
    def settings(self) -> ObjectiveSettings:
        c = self.config
        return ObjectiveSettings(beta=c.beta, label_smoothing=c.label_smoothing, rrhf=c.rrhf, pro=c.pro)

    def reference_logps(self, split: str, group: Sequence[int], batch: dict) -> torch.Tensor | None:
        if split in self.tables:
            return self.tables[split][list(group)].to(batch["scores"].device)
        if self.reference is not None:
            return self.reference(batch)
        return None


def _reduce(accelerator, sums: dict[str, float], keys: Sequence[str]) -> dict[str, float]:
    values = torch.tensor([sums.get(k, 0.0) for k in keys], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values, reduction="sum")
    return dict(zip(keys, values.tolist()))


def _add_stats(sums: dict[str, float], losses: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
    sums["loss"] = sums.get("loss", 0.0) + float(losses.detach().sum())
    for key, value in stats.items():
        sums[key] = sums.get(key, 0.0) + float(value)


def train_step(loop: PreferenceLoop, step: int) -> dict[str, float]:
    """One optimizer step over the global batch ``step``; returns its metrics (means over the global batch)."""
    acc, cfg = loop.session.accelerator, loop.config
    started, cpu_started = time.perf_counter(), time.process_time()
    indices = loop.plan.step_indices(step)
    local = shard(indices, acc.process_index, acc.num_processes)
    groups = length_sorted_groups(
        loop.train, local, cfg.batch.micro_batch_size, cfg.max_tokens_per_micro_batch, loop.layout
    )
    objective, settings, sums = (
        OBJECTIVES[cfg.loss],
        loop.settings,
        {"tokens": 0.0, "padded_tokens": 0.0, "sequence_tokens": 0.0},
    )

    def loss_fn(group):
        batch = to_device(collate_group(loop.layout, loop.train, group, loop.pad_id), acc.device)
        logps = ranking_logps(loop.policy, batch).float()  # (B, K)
        ref = loop.reference_logps("train", group, batch) if cfg.loss in NEEDS_REFERENCE else None
        losses, stats = objective(logps, ref, batch["scores"], batch["lengths"], settings)  # (B,)
        _add_stats(sums, losses, stats)
        sums["tokens"] += float(batch["token_mask"].sum())
        sums["padded_tokens"] += float(batch["token_mask"].numel())
        sums["sequence_tokens"] += float(sum(len(s.input_ids) for i in group for s in loop.train[i].sequences))
        return losses.sum() / len(indices)

    grad_norm = accumulate_and_step(
        acc, loop.policy, loop.optimizer, loop.scheduler, groups, loss_fn, cfg.optim.max_grad_norm
    )

    counts = ["tokens", "padded_tokens", "sequence_tokens"]
    totals = _reduce(acc, sums, metric_keys(cfg.loss, False) + counts)
    check_finite("loss", totals["loss"], step + 1)
    seconds = time.perf_counter() - started
    metrics = {k: v / len(indices) for k, v in totals.items() if k not in counts}
    metrics.update(
        {
            "lr": loop.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "epoch": loop.plan.epoch_of(step + 1),
            "perf/step_seconds": seconds,
            "perf/step_cpu_seconds": time.process_time() - cpu_started,
            "perf/examples_per_second": len(indices) / seconds,
            "perf/tokens_per_second": totals["tokens"] / seconds,  # tokens computed (a shared prompt counts once)
            "perf/sequence_tokens_per_second": totals["sequence_tokens"] / seconds,  # prompt + response, per response
            "perf/padding": 1.0 - totals["tokens"] / max(totals["padded_tokens"], 1.0),
        }
    )
    return metrics


@torch.no_grad()
def evaluate(loop: PreferenceLoop) -> dict[str, float]:
    """Held-out loss, implicit-reward accuracy and margin, log-probs (means over all held-out examples)."""
    if not loop.held_out:
        return {}
    acc, cfg = loop.session.accelerator, loop.config

    with_rewards = "held_out" in loop.tables or loop.reference is not None
    keys = metric_keys(cfg.loss, with_rewards)
    mine = list(range(acc.process_index, len(loop.held_out), acc.num_processes))
    sums: dict[str, float] = {}
    with parameters_for_generation(acc, loop.policy) as model:  # ZeRO-3 / FSDP: uneven shares need no collective
        model.eval()
        for group in length_sorted_groups(
            loop.held_out, mine, cfg.eval_micro_batch_size, cfg.max_tokens_per_micro_batch, loop.layout
        ):
            batch = to_device(collate_group(loop.layout, loop.held_out, group, loop.pad_id), acc.device)
            with acc.autocast():
                logps = ranking_logps(model, batch).float()
            ref = loop.reference_logps("held_out", group, batch)
            losses, stats = OBJECTIVES[cfg.loss](logps, ref, batch["scores"], batch["lengths"], loop.settings)
            if cfg.loss not in NEEDS_REFERENCE and ref is not None:
                stats = {**stats, **implicit_reward_stats(logps, ref, cfg.beta)}
            _add_stats(sums, losses, stats)
        model.train()
    totals = _reduce(acc, sums, keys)
    return {f"eval/{k}": v / len(loop.held_out) for k, v in totals.items()}


# ----------------------------------------------------------------------------- the run


def save_final_model(session: TrainingSession, policy: torch.nn.Module, tokenizer) -> Path:
    """The trained policy as a plain HF folder (``save_model`` merges LoRA adapters into the weights)."""
    path = session.output_dir / "model"
    session.save_model(policy, tokenizer, path)
    return path


def run_dpo(config: DPOConfig, records: tuple[Records, Records] | None = None) -> dict[str, Any]:
    """Train; ``records`` = (train, held-out) overrides loading from ``config.data`` (iterative DPO uses it).

    Returns the results (also written to ``<output_dir>/results.json``): ``completed`` (False when
    ``stop_after_steps`` ended the run early), ``steps``, example counts, ``skipped`` (records left
    out, by reason), the held-out metrics ``eval/...`` and ``model_dir``.
    """
    session = TrainingSession(config.run, config)
    acc = session.accelerator
    # 1. data (and 0. SFT on it)
    if records is None:
        train_records, held_records, report = load_training_records(config)
        session.record_data(report)
    else:
        train_records, held_records = records
    model_cfg = run_sft_first(config, train_records, held_records) if config.sft_first.enabled else config.model
    tokenizer = load_tokenizer(model_cfg)
    train, skipped = encode_rankings(tokenizer, train_records, config.data.max_length, config.data.max_prompt_length)
    held_out, held_skipped = encode_rankings(
        tokenizer, held_records, config.data.max_length, config.data.max_prompt_length
    )
    session.print(
        f"{config.loss}: training {skipped.summary(len(train))}; held out {held_skipped.summary(len(held_out))}"
    )
    plan = BatchPlan(
        len(train), config.batch.global_batch_size, config.run.seed, config.batch.epochs, config.batch.max_steps
    )
    # 2. policy and reference
    policy = load_causal_lm(model_cfg, seed=config.run.seed).to(acc.device)
    disable_dropout(policy)
    policy.train()
    layout = choose_layout(policy, config.share_prompt, config.pack_examples)
    reference, tables, reference_seconds = build_reference(
        config, policy, session, train, held_out, tokenizer.pad_token_id, layout
    )
    policy, optimizer, scheduler, restored = session.prepare_training(
        "policy", policy, config.optim, plan.total_steps, config.batch
    )
    tables = restored.get("reference_logps", tables)
    loop = PreferenceLoop(
        session,
        config,
        policy,
        optimizer,
        scheduler,
        plan,
        train,
        held_out,
        tokenizer.pad_token_id,
        layout,
        tables,
        reference,
    )
    trainer_state = {"reference_logps": tables}
    # 3. loop
    logger = session.start_logging(plan.total_steps, config.loss)
    total = steps_run = plan.total_steps
    check_early_stop(config.run.early_stop, config.run.eval_every, bool(held_out), "no held-out pairs")
    watch = PlateauWatch(config.run.early_stop, "eval/loss", higher_is_better=False)
    watch.restore(Path(config.run.output_dir) / "metrics.jsonl", session.start_step)
    final: dict[str, float] = {}
    for step in range(session.start_step, total):
        metrics = train_step(loop, step)
        if session.due(step + 1, config.run.eval_every, total):
            metrics.update(evaluate(loop))
        if (step + 1) % config.run.log_every == 0 or step + 1 == total:
            logger.log(step + 1, metrics, show=("loss", "rewards/accuracy", "eval/rewards/accuracy"))
        if watch.update_from(metrics, step + 1) and step + 1 < total:
            steps_run, final = step + 1, {k: v for k, v in metrics.items() if k.startswith("eval/")}
            session.print(f"eval/loss plateaued (run.early_stop): stopping after step {steps_run} of {total}")
            break
        if config.stop_after_steps == step + 1 and step + 1 < total:
            session.save(step + 1, trainer_state=trainer_state)
            session.print(f"stopped after step {step + 1} of {total}; resume with --run.resume True")
            return session.finish({"completed": False, "stopped_at_step": step + 1, "steps": total})
        if session.due(step + 1, config.run.save_every, total):
            session.save(step + 1, trainer_state=trainer_state)
    # 4. held-out evaluation and the final model
    final = final or evaluate(loop)
    session.save(steps_run, trainer_state=trainer_state)
    model_dir = save_final_model(session, policy, tokenizer)
    if "eval/rewards/accuracy" in final:
        session.print(
            f"{config.loss} done: held-out implicit-reward accuracy {final['eval/rewards/accuracy']:.3f}, "
            f"margin {final['eval/rewards/margin']:.4f}"
        )
    results = {
        "completed": True,
        "loss": config.loss,
        "steps": steps_run,
        "planned_steps": total,
        "early_stop": watch.summary(steps_run < total),
        "train_examples": len(train),
        "eval_examples": len(held_out),
        "skipped": skipped.to_dict(),
        "held_out_skipped": held_skipped.to_dict(),
        **final,
        "reference_seconds": round(reference_seconds, 3),
        "model_dir": str(model_dir),
    }
    return session.finish(results)


__all__ = ["PRESETS", "DPOConfig", "SFTFirstConfig", "run_dpo"]
