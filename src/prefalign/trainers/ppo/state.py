"""What a PPO run carries between steps: the mutable state (step, KL controller, statistics; saved in checkpoints)
and the context (settings, models, optimizers, prompts) that every stage of :mod:`.trainer` reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from accelerate import Accelerator

from prefalign.algorithms.kl import AdaptiveKLController, FixedKLController
from prefalign.algorithms.normalize import ExponentialMeanStd, RunningMeanStd
from prefalign.data.schema import Prompt
from prefalign.trainers.common import BatchPlan
from prefalign.trainers.ppo.config import PPOConfig
from prefalign.trainers.ppo.setup import PPOParts
from prefalign.trainers.ppo.update import UpdateSettings


@dataclass
class PPOState:
    """Trainer state beyond models and optimizers; all of it goes into every checkpoint."""

    kl_controller: FixedKLController | AdaptiveKLController
    value_stats: RunningMeanStd | ExponentialMeanStd | None
    reward_stats: RunningMeanStd | None
    best_eval: float = -math.inf
    best_step: int = 0

    @classmethod
    def fresh(cls, config: PPOConfig) -> PPOState:
        kl = config.kl
        controller = AdaptiveKLController(kl.coef, kl.target, kl.horizon) if kl.adaptive else FixedKLController(kl.coef)
        value_stats = None
        if config.ppo.value_normalization:
            beta = config.ppo.value_normalization_beta
            value_stats = RunningMeanStd() if beta is None else ExponentialMeanStd(beta)
        return cls(
            controller,
            value_stats,
            RunningMeanStd() if config.reward.normalize else None,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "kl_controller": self.kl_controller.state_dict(),
            "best_eval": self.best_eval,
            "best_step": self.best_step,
            "value_stats": self.value_stats.state_dict() if self.value_stats else None,
            "reward_stats": self.reward_stats.state_dict() if self.reward_stats else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.best_eval, self.best_step = float(state["best_eval"]), int(state["best_step"])
        for name in ("value_stats", "reward_stats"):
            if getattr(self, name) is not None:
                getattr(self, name).load_state_dict(state[name])


@dataclass
class PPOContext:
    """Everything a step needs, built once by :func:`run_ppo`."""

    config: PPOConfig
    accelerator: Accelerator
    parts: PPOParts
    state: PPOState
    plan: BatchPlan
    train_prompts: list[Prompt]
    train_ids: list[list[int]]
    val_prompts: list[Prompt]
    val_ids: list[list[int]]
    settings: UpdateSettings
    engine: Any = None  # the vLLM engine (rollout.engine vllm), made at the first rollout
    engine_logprobs: Any = None  # (N, T) the engine's log-probs of this step's samples (vllm), else None
