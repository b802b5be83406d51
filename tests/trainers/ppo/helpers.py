"""Shared set-up of the PPO tests: tiny configs and reading runs back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from prefalign.config import build_config, merge
from prefalign.rollout.experience import Experience
from prefalign.trainers.checkpoint import checkpoint_model_files
from prefalign.trainers.ppo.trainer import (
    PRESETS,
    PPOConfig,
    build_experience,
    stage_rollout,
    stage_score,
)

METRIC_NAMES = (
    "reward/mean",
    "reward/std",
    "reward/kl_penalized_mean",
    "kl/mean",
    "entropy",
    "clipfrac",
    "approx_kl",
    "value_loss",
    "explained_variance",
    "response_length",
    "truncated_fraction",
    "time/generate",
    "time/score",
    "time/update",
)


def tiny_config(output_dir: Path, overrides: dict[str, Any] | None = None) -> PPOConfig:
    base = {"run": {"output_dir": str(output_dir), "threads": 1, "tensorboard": False, "progress": False}}
    return build_config(PPOConfig, presets=PRESETS, preset="tiny", overrides=merge(base, overrides or {}))


def checkpoint_tensors(output_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The latest checkpoint's policy, critic and reference weights."""
    root = Path(output_dir) / "checkpoints"
    path = root / (root / "latest").read_text().strip()
    files = checkpoint_model_files(path)
    return {name: load_file(str(files[name])) for name in ("policy", "critic", "reference")}


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def sgd_update_parts(ctx, lr: float = 1.0):
    """The context's models with plain SGD and no scheduler: an update linear in the gradient, so a
    wrongly scaled loss shows (Adam's first steps are invariant to the gradient's scale)."""
    from prefalign.trainers.ppo.update import UpdateParts

    return UpdateParts(
        ctx.parts.policy,
        ctx.parts.critic,
        torch.optim.SGD(ctx.parts.policy.parameters(), lr=lr),
        torch.optim.SGD(ctx.parts.critic.parameters(), lr=lr),
        None,
        None,
    )


def experience_at(ctx, step: int = 0) -> Experience:
    """Stages 1-4 of a PPO step (rollout, score, KL-penalised rewards, advantages) as one Experience."""
    rollout, prompts = stage_rollout(ctx, step)
    return build_experience(ctx, rollout, stage_score(ctx, rollout, prompts, step))[0]
