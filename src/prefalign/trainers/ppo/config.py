"""Configuration of ``prefalign ppo``: one dataclass tree, with the papers' settings as presets.

Presets (``--preset NAME``), defined with the source of every setting in :mod:`.presets` and listed in
``docs/presets.md`` (``prefalign ppo --preset NAME --print-config`` prints the resolved settings):

- ``xu``: Xu et al. (2024), App. A.2 and section 5: actor lr 1e-5, critic lr 5e-6, temperature 1.0,
  top-k 200 (also applied to the training log-probs), reward clipping at 20, KL coefficient 0.1,
  gamma = lambda = 1, advantage and value normalisation, a rollout batch of 512 in 4 minibatches,
  reference EMA.
- ``ivison``: Ivison et al. (2024), Table 9 and App. F: lr 1e-6 with 10% linear warm-up, AdamW
  (0.9, 0.95) eps 1e-5, value-loss coefficient 0.1, temperature 0.7, KL coefficient 0.05, gamma 1,
  lambda 0.95, 1,024 prompt and 1,024 response tokens, critic initialised from the reward model,
  reward -10 for a response without EOS.
- ``table3-baseline``, ``table3-advnorm``, ``table3-largebatch``, ``table3-ema``: the cumulative rows
  of Xu et al. Table 3 (baseline = batch 64, no advantage normalisation, no reference EMA).
- ``grpo``, ``rloo``, ``reinforce_pp``, ``remax``: the critic-free estimators with the settings their papers give
  for them (DeepSeekMath's 64 samples per prompt, KL 0.04 and lr 1e-6; RLOO's k = 4; REINFORCE++; ReMax's greedy
  baseline); no critic is built.
- ``tiny``: a tiny random Llama with a byte tokenizer, synthetic prompts and a programmatic reward
  (the fraction of lowercase letters in the response): a smoke run that finishes in seconds.

Where a paper is silent, the value is ours and the field's docstring says so and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefalign.algorithms.critic_free import ADVANTAGE_ESTIMATORS, GROUP_ESTIMATORS
from prefalign.algorithms.kl import KL_ESTIMATORS
from prefalign.algorithms.masked import AGGREGATION_MODES
from prefalign.models.load import ModelConfig
from prefalign.rewards.ensemble import check_ensemble_settings
from prefalign.rollout.generate import SamplingConfig
from prefalign.rollout.vllm_engine import RolloutEngineConfig
from prefalign.trainers.common import OptimConfig, RunConfig
from prefalign.trainers.ppo.presets import PRESETS, TABLE3_ROWS

__all__ = ["PRESETS", "TABLE3_ROWS", "PPOConfig"]

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
    """The reward model (a folder written by `prefalign rm`): scalar head read at the last real token. A folder written
    by `prefalign rm --ensemble_size K` (with ensemble.json) is an ensemble, combined by `ensemble`."""
    ensemble: str = "mean"
    """How a reward-model ensemble's member scores combine (Coste et al. 2024): mean, wco (worst case: the minimum over
    members) or uwo (uncertainty-weighted: mean - uwo_lambda * variance over members). Ignored for a single model."""
    uwo_lambda: float = 0.5
    """Lambda of the uwo combination (ours: Coste et al. tune it per setting; the variance is over members, divided by
    K)."""
    task: str = "char_fraction:abcdefghijklmnopqrstuvwxyz"
    """Programmatic reward as NAME[:ARGUMENT], resolved by prefalign.rewards.registry (e.g. char_fraction:abc,
    length_target:32, eval:gsm8k, eval:mbpp)."""
    model_weight: float = 1.0
    """Weight of the reward model's score in a sum."""
    task_weight: float = 1.0
    """Weight of the programmatic reward. The eval:TASK code rewards already give Xu et al.'s 10 for passing the tests
    (0 otherwise), so keep 1 to get their reward."""
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
        check_ensemble_settings("reward.", self.ensemble, self.uwo_lambda)


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
    advantage_estimator: str = "gae"
    """Advantage estimator: gae (GAE over a learned critic; Schulman et al. 2016) or a critic-free one, for which no
    critic is built, trained or saved: grpo (group-normalised rewards of the samples of a prompt, (r - mean) / (std +
    1e-6); Shao et al. 2024), rloo (leave-one-out baseline, the mean reward of the prompt's other samples; Ahmadian et
    al. 2024), reinforce_pp (discounted returns of the KL-penalised token rewards whitened over the batch; Hu 2025),
    remax (reward minus the reward of the prompt's greedy response, generated each step; Li et al. 2023). grpo and rloo
    need sampling.num_samples >= 2. grpo, rloo and remax use the sequence reward with its KL penalty, score - kl.coef *
    sum of per-token KL, as the same advantage at every token (see prefalign.algorithms.critic_free)."""
    gamma: float = 1.0
    """Discount of GAE and of REINFORCE++'s returns (both papers: 1)."""
    lam: float = 0.95
    """GAE lambda (Xu et al.: 1, Ivison et al.: 0.95)."""
    clip_range: float = 0.2
    """Policy ratio clip epsilon."""
    clip_range_value: float | None = 0.2
    """Value clip epsilon around the rollout values (None: unclipped value loss)."""
    value_loss_coef: float = 1.0
    """Value-loss coefficient alpha of loss = policy_loss + alpha * value_loss (Ivison et al. Table 9: 0.1). The critic
    is a separate model with its own AdamW, which ignores a constant loss scale, so alpha is applied where it acts: the
    critic's learning rate (and its schedule's floor) is multiplied by alpha, the step SGD would take on alpha *
    value_loss."""
    loss_aggregation: str = "token-mean"
    """Reduction of per-token losses: token-mean, seq-mean-token-sum or seq-mean-token-mean."""
    advantage_normalization: bool = True
    """Key factor 1 of Xu et al.: whiten advantages over the whole rollout batch (all processes). Applies to gae, rloo
    and remax; grpo (per prompt) and reinforce_pp (over the batch) normalise by definition, whatever this says."""
    value_normalization: bool = False
    """Critic predicts returns normalised by running statistics of the returns (Xu et al. A.2: on)."""
    value_normalization_beta: float | None = None
    """Statistics of value normalisation: None, the exact mean/std of all returns seen (cumulative); a beta in (0, 1),
    an exponential average with bias correction, one update per PPO step (MAPPO's ValueNorm; Xu preset: 0.99995, the
    value of ReaLHF, the public framework of Xu et al.'s group, since the paper gives none)."""
    reference_ema: bool = False
    """Key factor 3 of Xu et al.: after policy updates move the reference toward the policy, ref <- (1-rate) ref + rate
    policy."""
    ema_rate: float = 0.1
    """Rate of the reference EMA per application. Our choice: Xu et al. give no rate; 0.1 per step lets the reference
    trail the policy by about 10 PPO steps, so the KL penalty still anchors each step yet moves with the policy."""
    ema_interval: int = 1
    """Apply the reference EMA every this many PPO steps. Our choice (every step): Xu et al. give no interval."""
    reference_from_adapters: str = "auto"
    """With a LoRA policy, the reference as the policy's own base with its adapters disabled (peft's disable_adapter()),
    so no second copy of the model is built, held or checkpointed: on, off (a separate frozen copy of the starting
    policy) or auto (on where valid: policy.lora, and the adapters start at zero with the base frozen, so base with
    adapters off is the starting policy; otherwise the separate copy). on refuses where it is not valid. The reference
    EMA is refused with LoRA either way."""
    ppo_epochs: int = 1
    """Passes over each rollout batch (inner epochs)."""
    recompute_old: bool = False
    """Before each minibatch update, recompute its old log-probs and values with the current models and from them its
    KL-penalised rewards, GAE advantages (whitened over the minibatch when advantage_normalization is on) and value
    targets (Ivison et al., appendix G: advantages from the current models)."""
    logprobs_top_k: bool = False
    """Compute every log-prob (old, reference, current) under the sampler's top-k mask: the tokens outside the k most
    likely ones of the rollout policy at that position get probability 0, so log pi_old is the sampler's distribution
    (ReaLHF's logits mask; Xu et al. sample with top-k 200). Needs sampling.top_k > 0. Off: full-softmax log-probs."""
    sft_coef: float = 0.0
    """Weight of an auxiliary SFT (pretraining, PPO-ptx) loss on `sft_data` (0: off)."""
    sft_data: str | None = None
    """JSONL/JSON/Parquet file of SFT examples (prompt, response) for the auxiliary loss."""
    sft_batch_size: int = 4
    """SFT examples per minibatch update (per process) for the auxiliary loss."""

    @property
    def uses_critic(self) -> bool:
        """Whether the estimator needs a learned value model (only GAE does)."""
        return self.advantage_estimator == "gae"

    def __post_init__(self) -> None:
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"ppo.advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {self.advantage_estimator!r}"
            )
        if self.reference_from_adapters not in ("auto", "on", "off"):
            raise ValueError(
                f"ppo.reference_from_adapters must be auto, on or off, got {self.reference_from_adapters!r}"
            )
        if not self.uses_critic:
            for name in ("value_normalization", "recompute_old"):
                if getattr(self, name):
                    raise ValueError(
                        f"ppo.{name} needs a critic, and ppo.advantage_estimator={self.advantage_estimator} has none: "
                        f"set ppo.{name} False or use gae"
                    )
        if self.loss_aggregation not in AGGREGATION_MODES:
            raise ValueError(f"ppo.loss_aggregation must be one of {AGGREGATION_MODES}")
        if not 0.0 <= self.ema_rate <= 1.0 or self.ema_interval < 1 or self.ppo_epochs < 1:
            raise ValueError("ppo: need 0 <= ema_rate <= 1, ema_interval >= 1 and ppo_epochs >= 1")
        if self.value_loss_coef <= 0:
            raise ValueError(f"ppo.value_loss_coef must be positive, got {self.value_loss_coef}")
        if self.value_normalization_beta is not None and not 0.0 < self.value_normalization_beta < 1.0:
            raise ValueError(
                f"ppo.value_normalization_beta must be in (0, 1) or None, got {self.value_normalization_beta}"
            )
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
    path. Unused with a critic-free ppo.advantage_estimator."""
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
    """Optimizer of the critic (unused with a critic-free ppo.advantage_estimator)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/ppo"))
    """Output folder, seed, checkpointing, logging."""
    critic_deepspeed_config: str | None = None
    """Under DeepSpeed (accelerate launch with a DeepSpeed config), a DeepSpeed JSON config for the critic's own engine,
    e.g. another ZeRO stage or offload; default: a copy of the launcher's config (the policy's). The launcher's auto
    fields are filled the same way in both."""
    rollout: RolloutEngineConfig = field(default_factory=RolloutEngineConfig)
    """Who samples the rollouts (builtin or vllm) and the correction for a separate engine's samples."""
    stop_after: int | None = None
    """Stop (with a checkpoint) after this many steps of this invocation; continue later with --run.resume True (job
    time limits)."""

    def __post_init__(self) -> None:
        if self.sampling.temperature == 0:
            raise ValueError("sampling.temperature must be > 0 for PPO (greedy rollouts give no policy gradient)")
        if self.batch.rollout_batch_size % self.sampling.num_samples:
            raise ValueError("batch.rollout_batch_size must be a multiple of sampling.num_samples")
        estimator = self.ppo.advantage_estimator
        if estimator in GROUP_ESTIMATORS and self.sampling.num_samples < 2:
            raise ValueError(
                f"ppo.advantage_estimator={estimator} compares the responses to one prompt: it needs "
                f"sampling.num_samples >= 2, got {self.sampling.num_samples}"
            )
        if self.ppo.uses_critic and self.critic_init == "reward" and self.reward.kind == "task":
            raise ValueError(
                "critic_init=reward needs a reward model (reward.kind model or sum); use critic_init=policy"
            )
        if self.ppo.reference_ema and self.policy.lora:
            raise ValueError("the reference EMA needs a fully trained policy (policy.lora=False)")
        if self.critic_deepspeed_config is not None and not self.ppo.uses_critic:
            raise ValueError(
                f"critic_deepspeed_config is set, but ppo.advantage_estimator={self.ppo.advantage_estimator} trains no "
                "critic"
            )
        if self.ppo.reference_from_adapters == "on" and not self.policy.lora:
            raise ValueError(
                "ppo.reference_from_adapters=on needs a LoRA policy (policy.lora=True): a fully trained policy has no "
                "adapters to switch off; use auto or off"
            )
        if self.ppo.logprobs_top_k and self.sampling.top_k == 0:
            raise ValueError("ppo.logprobs_top_k needs sampling.top_k > 0 (the mask is the sampler's top-k)")
        if self.rollout.importance_sampling_cap is not None and self.ppo.recompute_old:
            raise ValueError(
                "rollout.importance_sampling_cap weights the rollout's advantages, which ppo.recompute_old recomputes "
                "per minibatch: use one or the other"
            )
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError("stop_after must be positive")

    @property
    def prompts_per_step(self) -> int:
        return self.batch.rollout_batch_size // self.sampling.num_samples

    @property
    def optimizer_steps(self) -> int:
        """Optimizer steps of each of the actor and the critic over the whole run."""
        return self.batch.steps * self.ppo.ppo_epochs * self.batch.num_minibatches
