"""The reference policy of a DPO run: a frozen copy (or the base model with LoRA adapters off) scoring on the fly,
or the initial policy's log-probabilities computed once and cached as tables (stage 2 of :mod:`.dpo`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from prefalign.models.reference import ReferenceModel
from prefalign.trainers.preference.batches import EncodedRanking
from prefalign.trainers.preference.dpo_config import DPOConfig
from prefalign.trainers.preference.logprobs import distributed_logps_table, ranking_logps
from prefalign.trainers.preference.objectives import (
    NEEDS_REFERENCE,
)
from prefalign.trainers.session import TrainingSession


def frozen_reference(policy: torch.nn.Module, accelerator) -> Callable[[dict], torch.Tensor]:
    """The on-the-fly reference: a frozen copy of the initial policy, or its base model with LoRA adapters off."""
    if hasattr(policy, "disable_adapter"):

        def score(batch):
            with torch.no_grad(), accelerator.unwrap_model(policy).disable_adapter(), accelerator.autocast():
                return ranking_logps(accelerator.unwrap_model(policy), batch).float()

        return score
    reference = ReferenceModel.copy_of(policy)

    def score(batch):
        with torch.no_grad(), accelerator.autocast():
            return ranking_logps(reference.model, batch).float()

    return score


def reference_tables(
    config: DPOConfig,
    policy: torch.nn.Module,
    session: TrainingSession,
    train: list[EncodedRanking],
    held_out: list[EncodedRanking],
    pad_id: int,
    layout: str,
) -> dict[str, torch.Tensor]:
    """Stage 2 (cached): reference log-probs (N, K) of the training (DPO only) and held-out examples, by the initial
    policy."""
    acc, tables = session.accelerator, {}
    size, tokens = config.eval_micro_batch_size, config.max_tokens_per_micro_batch
    show = config.run.progress and session.is_main
    if config.loss in NEEDS_REFERENCE:
        tables["train"] = distributed_logps_table(
            acc, policy, train, pad_id, size, tokens, layout, "reference log-probs (train)" if show else None
        )
    if held_out:
        tables["held_out"] = distributed_logps_table(
            acc, policy, held_out, pad_id, size, tokens, layout, "reference log-probs (held out)" if show else None
        )
    return tables


def build_reference(
    config: DPOConfig, policy: torch.nn.Module, session: TrainingSession, train, held_out, pad_id: int, layout: str
) -> tuple[Callable[[dict], torch.Tensor] | None, dict[str, torch.Tensor], float]:
    """(frozen reference for on-the-fly log-probs or None, cached log-prob tables, seconds the tables took).

    A resumed run gets its tables from the checkpoint, so nothing is computed here then.
    """
    if config.reference == "on_the_fly":
        return frozen_reference(policy, session.accelerator), {}, 0.0
    if config.run.resume and session.checkpointer.latest() is not None:
        return None, {}, 0.0
    started = time.perf_counter()
    tables = reference_tables(config, policy, session, train, held_out, pad_id, layout)
    return None, tables, time.perf_counter() - started
