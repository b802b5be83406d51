"""Configuration of ``prefalign ppo``: one dataclass tree, with the papers' settings as presets.

Presets (``--preset NAME``):

- ``xu``: Xu et al. (2024), section 5 and appendix: actor lr 1e-5, critic lr 5e-6, temperature 1.0,
  top-k 200, reward clipping at 20, KL coefficient 0.1, gamma = lambda = 1, the three key factors
  on (advantage normalisation, a rollout batch of 512 split into 4 minibatches, reference EMA).
- ``ivison``: Ivison et al. (2024): temperature 0.7, KL coefficient 0.05, gamma 1, lambda 0.95,
  critic initialised from the reward model, a fixed reward of -10 for responses without EOS.
- ``table3-baseline``, ``table3-advnorm``, ``table3-largebatch``, ``table3-ema``: the cumulative rows
  of Xu et al. Table 3 (baseline = batch 64, no advantage normalisation, no reference EMA).
- ``tiny``: a tiny random Llama with a byte tokenizer, synthetic prompts and a programmatic reward
  (the fraction of lowercase letters in the response): a smoke run that finishes in seconds.

Values that the papers (as summarised in our brief) do not give are ours and say so in the field's
docstring: the EMA rate and interval, Ivison et al.'s learning rates and batch sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefalign.algorithms.kl import KL_ESTIMATORS
from prefalign.algorithms.masked import AGGREGATION_MODES
from prefalign.models.load import ModelConfig
from prefalign.rollout.generate import SamplingConfig
from prefalign.trainers.common import OptimConfig, RunConfig

REWARD_KINDS = ("model", "task", "sum")
PROMPT_SOURCES = ("hh-rlhf", "synthetic")


@dataclass
class PromptDataConfig:
    source: str = "hh-rlhf"
    """Where prompts come from: hh-rlhf (the dialogue histories of the harmless-base pairs), synthetic (short generated
    instructions, for smoke runs), task:NAME[:SPLIT] (an evaluation task's prompts with their metadata, e.g.
    task:gsm8k:train, task:mbpp:train; pair with reward.task eval:NAME), or a .jsonl/.json/.parquet file with a
    `prompt` column (a string or a list of messages)."""
    path: str | None = None
    """File for hh-rlhf (default: its sample in the data folder)."""
    num_prompts: int | None = None
    """Keep a deterministic subset of this many prompts (None: all)."""
    validation_prompts: int = 64
    """Held-out prompts for periodic validation (one response each)."""
    max_prompt_length: int = 256
    """Prompt tokens kept; a longer prompt loses its start (the turns nearest the response are kept)."""
    seed: int = 0
    """Seed of the subset and of the train/validation split."""

    def __post_init__(self) -> None:
        if self.validation_prompts < 0 or self.max_prompt_length < 1:
            raise ValueError("data.validation_prompts must be >= 0 and data.max_prompt_length >= 1")


@dataclass
class RewardConfig:
    kind: str = "model"
    """Reward source: model (a learned reward model), task (a programmatic reward, see `task`) or sum (model + task)."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path="runs/reward-model"))
    """The reward model (a folder written by `prefalign rm`): scalar head read at the last real token."""
    task: str = "char_fraction:abcdefghijklmnopqrstuvwxyz"
    """Programmatic reward as NAME[:ARGUMENT], resolved by prefalign.rewards.registry (e.g. char_fraction:abc,
    length_target:32, eval:gsm8k, eval:mbpp)."""
    model_weight: float = 1.0
    """Weight of the reward model's score in a sum."""
    task_weight: float = 1.0
    """Weight of the programmatic reward (Xu et al.'s code reward: 10 for passing the tests)."""
    truncated_reward: float | None = None
    """The EOS trick: a response cut off at max_new_tokens without EOS gets this reward instead of its score (Ivison et
    al.: -10; None: off)."""
    normalize: bool = False
    """Normalise scores by running mean and standard deviation (applied before clipping)."""
    clip: float | None = None
    """Clip scores to [-clip, clip] (Xu et al.: 20; None: no clipping)."""

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"reward.kind must be one of {REWARD_KINDS}, got {self.kind!r}")
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"reward.clip must be positive, got {self.clip}")


@dataclass
class KLConfig:
    coef: float = 0.05
    """KL penalty coefficient beta per token (Xu et al.: 0.1, Ivison et al.: 0.05); the initial value when adaptive."""
    adaptive: bool = False
    """Adapt beta with the proportional controller of Ziegler et al. (2019) toward `target`."""
    target: float = 6.0
    """Target KL per sequence (nats) of the adaptive controller."""
    horizon: float = 10000.0
    """Horizon (in samples) of the adaptive controller."""
    estimator: str = "k1"
    """Per-token KL estimator: k1 (log-ratio), k2, k3 or abs (see prefalign.algorithms.kl)."""

    def __post_init__(self) -> None:
        if self.estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl.estimator must be one of {KL_ESTIMATORS}, got {self.estimator!r}")
        if self.coef < 0:
            raise ValueError(f"kl.coef must be >= 0, got {self.coef}")


@dataclass
class PPOAlgoConfig:
    gamma: float = 1.0
    """Discount of GAE (both papers: 1)."""
    lam: float = 0.95
    """GAE lambda (Xu et al.: 1, Ivison et al.: 0.95)."""
    clip_range: float = 0.2
    """Policy ratio clip epsilon."""
    clip_range_value: float | None = 0.2
    """Value clip epsilon around the rollout values (None: unclipped value loss)."""
    value_loss_coef: float = 1.0
    """Multiplier of the value loss (the critic has its own optimizer, so this acts like a critic learning-rate scale).
    """
    loss_aggregation: str = "token-mean"
    """Reduction of per-token losses: token-mean, seq-mean-token-sum or seq-mean-token-mean."""
    advantage_normalization: bool = True
    """Key factor 1 of Xu et al.: whiten advantages over the whole rollout batch (all processes)."""
    value_normalization: bool = False
    """Critic predicts returns normalised by running statistics (mean/std of all returns seen)."""
    reference_ema: bool = False
    """Key factor 3 of Xu et al.: after policy updates move the reference toward the policy, ref <- (1-rate) ref + rate
    policy."""
    ema_rate: float = 0.1
    """Rate of the reference EMA (our choice; the brief gives no value)."""
    ema_interval: int = 1
    """Apply the reference EMA every this many PPO steps (our choice: every step)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch (inner epochs)."""
    recompute_old: bool = False
    """Recompute old log-probs and values of each minibatch just before its update (Ivison et al., appendix G)."""
    sft_coef: float = 0.0
    """Weight of an auxiliary SFT (pretraining, PPO-ptx) loss on `sft_data` (0: off)."""
    sft_data: str | None = None
    """JSONL/JSON/Parquet file of SFT examples (prompt, response) for the auxiliary loss."""
    sft_batch_size: int = 4
    """SFT examples per minibatch update (per process) for the auxiliary loss."""

    def __post_init__(self) -> None:
        if self.loss_aggregation not in AGGREGATION_MODES:
            raise ValueError(f"ppo.loss_aggregation must be one of {AGGREGATION_MODES}")
        if not 0.0 <= self.ema_rate <= 1.0 or self.ema_interval < 1 or self.ppo_epochs < 1:
            raise ValueError("ppo: need 0 <= ema_rate <= 1, ema_interval >= 1 and ppo_epochs >= 1")
        if self.sft_coef > 0 and not self.sft_data:
            raise ValueError("ppo.sft_coef > 0 needs ppo.sft_data (a file of SFT examples)")


@dataclass
class PPOBatchConfig:
    rollout_batch_size: int = 64
    """Key factor 2 of Xu et al.: responses sampled per PPO step, over all processes (Xu et al.: 512)."""
    num_minibatches: int = 1
    """Optimizer steps per pass over the rollout batch (Xu et al.: 4)."""
    micro_batch_size: int = 8
    """Rows per forward pass on one process (what fits in memory); gradients accumulate over them."""
    generation_batch_size: int | None = None
    """Rows per `generate` call on one process (None: micro_batch_size)."""
    steps: int = 100
    """PPO steps (rollout + update iterations) in the whole run."""

    def __post_init__(self) -> None:
        if min(self.rollout_batch_size, self.num_minibatches, self.micro_batch_size, self.steps) < 1:
            raise ValueError("batch sizes, num_minibatches and steps must be positive")
        if self.rollout_batch_size % self.num_minibatches:
            raise ValueError("batch.rollout_batch_size must be divisible by batch.num_minibatches")


@dataclass
class PPOConfig:
    policy: ModelConfig = field(default_factory=ModelConfig)
    """The policy (actor), usually an SFT model; the reference starts as a copy of it."""
    critic_init: str = "reward"
    """Initialise the critic from the reward model (reward, Ivison et al.), from the policy (policy), or from a folder
    path."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward source and shaping."""
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    """Training and validation prompts."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Rollout sampling (also used, with a fixed seed, for validation)."""
    kl: KLConfig = field(default_factory=KLConfig)
    """KL penalty against the reference model."""
    ppo: PPOAlgoConfig = field(default_factory=PPOAlgoConfig)
    """PPO losses, advantages and the key factors."""
    batch: PPOBatchConfig = field(default_factory=PPOBatchConfig)
    """Rollout, minibatch and micro-batch sizes."""
    actor_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(learning_rate=1e-5, warmup_ratio=0.0, schedule="constant")
    )
    """Optimizer of the policy."""
    critic_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(learning_rate=5e-6, warmup_ratio=0.0, schedule="constant")
    )
    """Optimizer of the critic."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/ppo"))
    """Output folder, seed, checkpointing, logging."""
    stop_after: int | None = None
    """Stop (with a checkpoint) after this many steps of this invocation; continue later with --run.resume True (job
    time limits)."""

    def __post_init__(self) -> None:
        if self.sampling.temperature == 0:
            raise ValueError("sampling.temperature must be > 0 for PPO (greedy rollouts give no policy gradient)")
        if self.batch.rollout_batch_size % self.sampling.num_samples:
            raise ValueError("batch.rollout_batch_size must be a multiple of sampling.num_samples")
        if self.critic_init == "reward" and self.reward.kind == "task":
            raise ValueError(
                "critic_init=reward needs a reward model (reward.kind model or sum); use critic_init=policy"
            )
        if self.ppo.reference_ema and self.policy.lora:
            raise ValueError("the reference EMA needs a fully trained policy (policy.lora=False)")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError("stop_after must be positive")

    @property
    def prompts_per_step(self) -> int:
        return self.batch.rollout_batch_size // self.sampling.num_samples

    @property
    def optimizer_steps(self) -> int:
        """Optimizer steps of each of the actor and the critic over the whole run."""
        return self.batch.steps * self.ppo.ppo_epochs * self.batch.num_minibatches


_XU: dict[str, Any] = {
    "sampling": {"temperature": 1.0, "top_k": 200, "top_p": 1.0},
    "reward": {"clip": 20.0},
    "kl": {"coef": 0.1},
    "ppo": {"gamma": 1.0, "lam": 1.0, "clip_range": 0.2, "advantage_normalization": True, "reference_ema": True},
    "batch": {"rollout_batch_size": 512, "num_minibatches": 4},
    "actor_optim": {"learning_rate": 1e-5},
    "critic_optim": {"learning_rate": 5e-6},
}

_IVISON: dict[str, Any] = {
    "critic_init": "reward",
    "sampling": {"temperature": 0.7, "top_k": 0, "top_p": 1.0},
    "reward": {"truncated_reward": -10.0},
    "kl": {"coef": 0.05},
    "ppo": {"gamma": 1.0, "lam": 0.95, "clip_range": 0.2, "advantage_normalization": True, "reference_ema": False},
    "batch": {"rollout_batch_size": 64, "num_minibatches": 1},
}

#: Xu et al. Table 3, cumulative rows: each adds one key factor to the previous one.
TABLE3_ROWS: dict[str, dict[str, Any]] = {
    "table3-baseline": {
        "ppo": {"advantage_normalization": False, "reference_ema": False},
        "batch": {"rollout_batch_size": 64},
    },
    "table3-advnorm": {
        "ppo": {"advantage_normalization": True, "reference_ema": False},
        "batch": {"rollout_batch_size": 64},
    },
    "table3-largebatch": {
        "ppo": {"advantage_normalization": True, "reference_ema": False},
        "batch": {"rollout_batch_size": 512},
    },
    "table3-ema": {
        "ppo": {"advantage_normalization": True, "reference_ema": True},
        "batch": {"rollout_batch_size": 512},
    },
}

_TINY: dict[str, Any] = {
    "policy": {"name_or_path": "tiny-random"},
    "critic_init": "policy",
    "reward": {"kind": "task", "task": "char_fraction:abcdefghijklmnopqrstuvwxyz"},
    "data": {"source": "synthetic", "num_prompts": 64, "validation_prompts": 8},
    "sampling": {"temperature": 1.0, "max_new_tokens": 12, "num_samples": 2},
    "kl": {"coef": 0.01},
    "batch": {"rollout_batch_size": 16, "num_minibatches": 2, "micro_batch_size": 8, "steps": 4},
    "actor_optim": {"learning_rate": 3e-3, "warmup_ratio": 0.0, "schedule": "constant"},
    "critic_optim": {"learning_rate": 3e-3, "warmup_ratio": 0.0, "schedule": "constant"},
    "run": {"output_dir": "runs/ppo-tiny", "tensorboard": False, "progress": False},
}


def _with(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    from prefalign.config import merge

    return merge(base, override)


PRESETS: dict[str, dict[str, Any]] = {
    "xu": _XU,
    "ivison": _IVISON,
    "tiny": _TINY,
    **{name: _with(_XU, row) for name, row in TABLE3_ROWS.items()},
}
