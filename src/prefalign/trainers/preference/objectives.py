"""The per-example objectives of the offline methods (DPO, RRHF, PRO) over sequence log-probs.

Each takes (B, K) summed log-probs of a micro-batch's rankings (best first; a pair is a ranking of
two), the reference's (or None), the responses' scores and lengths, and the trainer's
:class:`ObjectiveSettings`, and returns the per-example losses and a dict of metric **sums** over
the micro-batch; the trainer adds the sums over micro-batches and processes and divides by the
global count.

- ``dpo``: :func:`prefalign.algorithms.preference.dpo_loss` (Xu et al. 2024, Eq. 7; Ivison et al.
  2024, Eq. 3) on responses 0 (chosen) and K-1 (rejected); it needs K = 2 (a ranking of more
  responses is refused rather than silently reduced to its ends).
- ``rrhf``: :func:`~prefalign.algorithms.preference.rrhf_loss` (Yuan et al. 2023).
- ``pro``: :func:`~prefalign.algorithms.preference.pro_loss` (Song et al. 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from prefalign.algorithms.preference import dpo_loss, pro_loss, rrhf_loss


@dataclass
class RRHFConfig:
    length_normalized: bool = True
    """Rank by the length-normalised log-prob (Yuan et al. Eq. 1); False: by the summed log-prob."""
    sft_weight: float = 1.0
    """Weight of the fine-tuning term on the best response (Eq. 4: 1)."""


@dataclass
class PROConfig:
    sft_weight: float = 0.05
    """Weight of the SFT term on the best response (the authors' scripts: 0.05)."""
    temperature_from_scores: bool = True
    """Dynamic temperature from the reward-score gaps (Song et al.); False: every T = 1."""
    scale_sft_by_ranking_length: bool = False
    """Multiply the SFT term by (K - 1)^2, as the authors' code does."""


@dataclass
class ObjectiveSettings:
    """What the objectives read from the trainer's config."""

    beta: float
    label_smoothing: float
    rrhf: RRHFConfig
    pro: PROConfig


def _common_stats(logps: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"logps/chosen": logps[:, 0].detach().sum(), "logps/rejected": logps[:, -1].detach().sum()}


def implicit_reward_stats(logps: torch.Tensor, ref: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """Sums over the batch of the DPO implicit rewards beta (log pi - log pi_ref) of best and worst, their margin and
    accuracy."""
    chosen = beta * (logps[:, 0] - ref[:, 0]).detach()
    rejected = beta * (logps[:, -1] - ref[:, -1]).detach()
    return {
        "rewards/chosen": chosen.sum(),
        "rewards/rejected": rejected.sum(),
        "rewards/margin": (chosen - rejected).sum(),
        "rewards/accuracy": (chosen > rejected).float().sum(),
    }


def dpo_objective(logps, ref, scores, lengths, s: ObjectiveSettings):
    """DPO on (chosen, rejected) = responses (0, 1)."""
    if logps.shape[1] != 2:
        raise ValueError(f"DPO takes pairs; got rankings of {logps.shape[1]} responses (use --loss rrhf or pro)")
    if ref is None:
        raise ValueError("DPO needs reference log-probs")
    losses, _, _ = dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], s.beta, s.label_smoothing)
    return losses, {**_common_stats(logps), **implicit_reward_stats(logps, ref, s.beta)}


def _ranking_stats(logps, lengths, stats, n):
    normalised = logps / lengths.clamp(min=1)
    out = {key: value * n for key, value in stats.items()}  # the library returns batch means
    out["rank/accuracy"] = (normalised[:, 0] > normalised[:, -1]).float().sum()
    return out


def rrhf_objective(logps, ref, scores, lengths, s: ObjectiveSettings):
    """RRHF over the ranking (ranking hinge + fine-tuning on the best response)."""
    losses, stats = rrhf_loss(
        logps, scores, length_normalized=s.rrhf.length_normalized, sft_weight=s.rrhf.sft_weight, lengths=lengths
    )
    return losses, {**_common_stats(logps), **_ranking_stats(logps, lengths, stats, logps.shape[0])}


def pro_objective(logps, ref, scores, lengths, s: ObjectiveSettings):
    """PRO over the ranking (list-wise softmax with dynamic temperature + SFT on the best response)."""
    losses, stats = pro_loss(
        logps,
        scores,
        lengths,
        sft_weight=s.pro.sft_weight,
        temperature_from_scores=s.pro.temperature_from_scores,
        scale_sft_by_ranking_length=s.pro.scale_sft_by_ranking_length,
    )
    return losses, {**_common_stats(logps), **_ranking_stats(logps, lengths, stats, logps.shape[0])}


Objective = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
OBJECTIVES: dict[str, Objective] = {"dpo": dpo_objective, "rrhf": rrhf_objective, "pro": pro_objective}
NEEDS_REFERENCE = {"dpo"}


REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy")


def metric_keys(loss: str, with_rewards: bool) -> list[str]:
    """The metric sums an objective reports (the same on every process, so they can be reduced together)."""
    keys = ["loss", "logps/chosen", "logps/rejected"]
    if loss != "dpo":
        keys += ["rank_loss", "sft_loss", "rank/accuracy"]
    if with_rewards or loss in NEEDS_REFERENCE:
        keys += list(REWARD_KEYS)
    return keys
