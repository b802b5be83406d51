"""Building what a PPO run trains and reads: models, optimizers, reward source and prompts.

- Policy: ``config.policy`` (usually an SFT model). Reference: a frozen copy of it; for a LoRA policy
  (``ppo.reference_from_adapters``, :func:`use_adapters_off`) the policy's own base with its adapters
  disabled, no second model, or else a frozen copy with the starting adapters merged. Critic: a value
  model (per-token scalar head) initialised from the reward model (Ivison et al.), from the policy, or from a folder.
  Dropout is off in every model (RL needs the same log-probs in the rollout and the update).
- Reward source: a :class:`~prefalign.rollout.experience.RolloutScorer` over a learned reward
  model (or an ensemble of them, :mod:`prefalign.rewards.ensemble`; the critic then starts from the
  first member), a programmatic reward from :mod:`prefalign.rewards.registry`, or their weighted sum.
- Prompts: HH-RLHF dialogue histories, synthetic instructions, or a file of prompts; a held-out
  part for validation.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase

from prefalign.data.collate import collate_encoded
from prefalign.data.sampling import downsample, train_test_split
from prefalign.data.schema import Prompt, user_prompt
from prefalign.data.tokenize import Encoded, TruncatedAway, encode_example, encode_prompt
from prefalign.models.heads import _is_encoder
from prefalign.models.load import (
    ModelConfig,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    load_value_model,
)
from prefalign.models.reference import AdaptersOffReference, ReferenceModel, adapters_off_obstacle
from prefalign.rewards.ensemble import ensemble_members, is_ensemble_folder, load_learned_reward
from prefalign.rewards.learned import same_tokenizer
from prefalign.rewards.registry import task_reward
from prefalign.rollout.experience import RolloutScorer
from prefalign.trainers.checkpoint import save_hf_model
from prefalign.trainers.common import OptimConfig, build_optimizer, build_scheduler
from prefalign.trainers.engines import engine_accelerators, is_deepspeed, prepare_engine, select_engine
from prefalign.trainers.logging import console
from prefalign.trainers.ppo.config import PPOConfig, PromptDataConfig
from prefalign.trainers.ppo.update import UpdateParts

_TOPICS = (
    "the sea",
    "a cat",
    "bread",
    "rain",
    "a library",
    "mountains",
    "the moon",
    "trains",
    "a garden",
    "music",
    "winter",
    "a river",
    "coffee",
    "bees",
    "a lighthouse",
    "clocks",
)
_TEMPLATES = (
    "Write a sentence about {}.",
    "Describe {} briefly.",
    "Say something kind about {}.",
    "Tell me a fact about {}.",
)


@dataclass
class PPOParts:
    tokenizer: PreTrainedTokenizerBase
    policy: torch.nn.Module  # prepared by accelerate (DDP-wrapped when distributed)
    critic: torch.nn.Module | None  # prepared by accelerate; None for a critic-free advantage estimator
    reference: ReferenceModel
    scorer: RolloutScorer
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer | None
    actor_scheduler: Any
    critic_scheduler: Any
    sft_examples: list[Encoded]
    critic_accelerator: Accelerator | None = None  # under DeepSpeed: the critic's own engine's Accelerator

    def update_parts(self) -> UpdateParts:
        return UpdateParts(
            self.policy,
            self.critic,
            self.actor_optimizer,
            self.critic_optimizer,
            self.actor_scheduler,
            self.critic_scheduler,
            self.critic_accelerator,
        )

    def companion_accelerators(self) -> dict[str, Accelerator]:
        """Accelerators beside the run's that prepared a model (the critic's under DeepSpeed), for checkpoints."""
        return {} if self.critic_accelerator is None else {"critic": self.critic_accelerator}

    def checkpoint_models(self) -> dict[str, torch.nn.Module]:
        """The models a checkpoint holds: policy, critic (none when critic-free), reference (none when it is the
        policy's base with adapters off: its weights are the policy's)."""
        models = {"policy": self.policy, "critic": self.critic}
        if not self.reference.shares_policy:
            models["reference"] = self.reference.model
        return {name: model for name, model in models.items() if model is not None}

    def save_policy(self, acc: Accelerator, path: Path) -> None:
        """The policy as an ordinary HF folder (atomic; gathered first under ZeRO-3 / FSDP); all processes call it."""
        save_hf_model(acc, self.policy, self.tokenizer, path)


def synthetic_prompts(count: int) -> list[Prompt]:
    """Short one-turn instructions, deterministic: for smoke runs and the tiny task."""
    texts = [t.format(topic) for topic in _TOPICS for t in _TEMPLATES]
    return [
        Prompt(
            user_prompt(texts[i % len(texts)] + ("" if i < len(texts) else f" ({i // len(texts)})")),
            {"source": "synthetic"},
        )
        for i in range(count)
    ]


def _unique_prompts(prompts: list[Prompt]) -> list[Prompt]:
    seen, out = set(), []
    for p in prompts:
        key = tuple((m.role, m.content) for m in p.messages)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def load_prompt_sets(cfg: PromptDataConfig) -> tuple[list[Prompt], list[Prompt]]:
    """(training prompts, validation prompts)."""
    if cfg.source == "hh-rlhf":
        from prefalign.data.sources.hh_rlhf import load_hh_rlhf

        prompts = _unique_prompts([Prompt(list(p.prompt), {"source": "hh-rlhf"}) for p in load_hh_rlhf(cfg.path)])
    elif cfg.source == "synthetic":
        prompts = synthetic_prompts(cfg.num_prompts or 256)
    elif cfg.source.startswith("task:"):
        from prefalign.evaluation.registry import build_task

        name, _, split = cfg.source[len("task:") :].partition(":")
        prompts = build_task(name, **({"split": split} if split else {})).prompts()
    else:
        from prefalign.data.sources.jsonl import load_prompts

        if not Path(cfg.source).exists():
            raise FileNotFoundError(f"data.source {cfg.source!r} is neither hh-rlhf, synthetic nor an existing file")
        prompts = _unique_prompts(load_prompts(cfg.source))
    if cfg.num_prompts is not None and cfg.num_prompts < len(prompts):
        prompts = downsample(prompts, cfg.num_prompts, cfg.seed)
    if cfg.validation_prompts == 0:
        return prompts, []
    if cfg.validation_prompts >= len(prompts):
        raise ValueError(
            f"data.validation_prompts={cfg.validation_prompts} leaves no training prompt of {len(prompts)}"
        )
    return train_test_split(prompts, cfg.validation_prompts, seed=cfg.seed)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt], max_prompt_length: int
) -> list[list[int]]:
    """Chat-template token ids of each prompt; a longer prompt keeps its last ``max_prompt_length`` tokens."""
    return [encode_prompt(tokenizer, p.messages)[-max_prompt_length:] for p in prompts]


def _critic_source(config: PPOConfig) -> ModelConfig:
    if config.critic_init == "reward":  # an ensemble's critic starts from its first member
        if is_ensemble_folder(config.reward.model.name_or_path):
            first = ensemble_members(config.reward.model.name_or_path)[0]
            return dataclasses.replace(config.reward.model, name_or_path=str(first))
        return config.reward.model
    if config.critic_init == "policy":
        return dataclasses.replace(config.policy, lora=False)
    if not Path(config.critic_init).exists():
        raise FileNotFoundError(f"critic_init {config.critic_init!r} is neither reward, policy nor an existing folder")
    return dataclasses.replace(config.policy, name_or_path=config.critic_init, lora=False, tokenizer=None)


def build_scorer(config: PPOConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> RolloutScorer:
    parts = []
    rc = config.reward
    if rc.kind in ("model", "sum"):  # one reward model, or an ensemble folder combined by reward.ensemble
        learned = load_learned_reward(
            rc.model,
            device,
            config.batch.micro_batch_size,
            rule=rc.ensemble,
            uwo_lambda=rc.uwo_lambda,
            seed=config.run.seed,
        )
        token_path = learned.tokenizer is not None and same_tokenizer(learned.tokenizer, tokenizer)
        parts.append((rc.model_weight, learned, token_path))
    if rc.kind in ("task", "sum"):
        parts.append((rc.task_weight, task_reward(rc.task), False))
    return RolloutScorer(parts)


def _load_sft_examples(config: PPOConfig, tokenizer: PreTrainedTokenizerBase) -> list[Encoded]:
    if config.ppo.sft_coef <= 0:
        return []
    from prefalign.data.sources.jsonl import load_sft_examples

    max_length = config.data.max_prompt_length + config.sampling.max_new_tokens
    out = []
    for ex in load_sft_examples(config.ppo.sft_data):
        try:
            out.append(encode_example(tokenizer, ex.prompt, ex.response, max_length, config.data.max_prompt_length))
        except TruncatedAway:
            continue
    if len(out) < config.ppo.sft_batch_size:
        raise ValueError(f"ppo.sft_data has {len(out)} usable examples, fewer than ppo.sft_batch_size")
    return out


def critic_optim_config(config: PPOConfig) -> OptimConfig:
    """The critic's optimizer settings with the value-loss coefficient applied to its learning rate.

    Ivison et al.'s loss is policy_loss + alpha * value_loss. Our critic is a separate model with its own
    AdamW, whose step m / sqrt(v) does not change when the loss is multiplied by a constant, so scaling
    the loss would be a no-op. An alpha-weighted loss moves the critic alpha times as far under SGD; the
    AdamW step that does the same is the one with alpha times the learning rate (peak and floor).
    """
    alpha = config.ppo.value_loss_coef
    opt = config.critic_optim
    return dataclasses.replace(
        opt, learning_rate=opt.learning_rate * alpha, min_learning_rate=opt.min_learning_rate * alpha
    )


def build_parts(config: PPOConfig, acc: Accelerator) -> PPOParts:
    tokenizer = load_tokenizer(config.policy)
    # under DeepSpeed one engine (and Accelerator) per trained model: policy, and critic where there is one
    names = ("policy", "critic") if config.ppo.uses_critic else ("policy",)
    if config.critic_deepspeed_config is not None and not is_deepspeed(acc):
        raise ValueError("critic_deepspeed_config is set, but this run is not launched under DeepSpeed")
    if config.critic_deepspeed_config is not None and not Path(config.critic_deepspeed_config).is_file():
        raise FileNotFoundError(f"critic_deepspeed_config {config.critic_deepspeed_config!r} is not a file")
    engines = engine_accelerators(acc, names, {"critic": config.critic_deepspeed_config})
    policy = load_causal_lm(config.policy, seed=config.run.seed)
    disable_dropout(policy)
    adapters_off = use_adapters_off(config, policy, acc.is_main_process)
    reference = None if adapters_off else _reference_copy(policy)
    if reference is not None:
        reference.model.to(acc.device)
    critic = _load_critic(config) if config.ppo.uses_critic else None  # critic-free: none built, trained or saved
    scorer = build_scorer(config, tokenizer, acc.device)
    actor_opt = build_optimizer(policy.parameters(), config.actor_optim)
    steps = config.optimizer_steps
    critic_opt = critic_scheduler = None
    mb = config.batch.micro_batch_size
    # one model per prepare call: accelerate's FSDP2 shards only one model per call (same result under DDP)
    policy, actor_opt = prepare_engine(acc, "policy", mb, config.actor_optim.max_grad_norm, policy, actor_opt)
    if critic is not None:
        critic_cfg = critic_optim_config(config)
        critic_opt = build_optimizer(critic.parameters(), critic_cfg)
        critic, critic_opt = prepare_engine(
            engines["critic"], "critic", mb, critic_cfg.max_grad_norm, critic, critic_opt
        )
        critic_scheduler = build_scheduler(critic_opt, critic_cfg, steps)
        select_engine(acc, "policy")  # the launcher's plugin active again for the rest of the run
    if adapters_off:  # the prepared policy's own module (DDP / DeepSpeed wrappers unwrapped)
        reference = AdaptersOffReference(acc.unwrap_model(policy), checked=True)  # checked before prepare
    return PPOParts(
        tokenizer,
        policy,
        critic,
        reference,
        scorer,
        actor_opt,
        critic_opt,
        build_scheduler(actor_opt, config.actor_optim, steps),
        critic_scheduler,
        _load_sft_examples(config, tokenizer),
        engines["critic"] if critic is not None and engines["critic"] is not acc else None,
    )


def use_adapters_off(config: PPOConfig, policy: torch.nn.Module, verbose: bool = False) -> bool:
    """Whether the reference is the LoRA ``policy``'s base with adapters off (``ppo.reference_from_adapters``).

    auto: where valid (:func:`~prefalign.models.reference.adapters_off_obstacle`: adapters starting at zero on a
    frozen base; the EMA is refused with LoRA by the config); on: the same, refused with the reason where not
    valid; off: never. Outside LoRA, never.
    """
    setting = config.ppo.reference_from_adapters
    if setting == "off" or not config.policy.lora:
        return False
    obstacle = adapters_off_obstacle(policy)
    if obstacle is None:
        return True
    if setting == "on":
        raise ValueError(
            f"ppo.reference_from_adapters=on: {obstacle}, so the base with adapters off is not the starting policy; "
            "use auto or off (a separate frozen copy of the starting policy)"
        )
    if verbose:
        console.print(f"[yellow]reference: a separate copy of the starting policy ({obstacle})")
    return False


def _reference_copy(policy: torch.nn.Module) -> ReferenceModel:
    """A separate frozen copy of the starting policy; a LoRA policy's copy has its adapters merged (for adapters
    at zero: exactly the base model's weights)."""
    if hasattr(policy, "merge_and_unload"):
        return ReferenceModel(copy.deepcopy(policy).merge_and_unload())
    return ReferenceModel.copy_of(policy)


def _load_critic(config: PPOConfig) -> torch.nn.Module:
    critic = load_value_model(_critic_source(config), seed=config.run.seed)
    if _is_encoder(critic):
        raise ValueError(
            f"the critic must be a causal (decoder) model; critic_init={config.critic_init!r} gives a "
            f"{critic.config.model_type} encoder, whose value at a token would see later tokens: use critic_init=policy"
        )
    disable_dropout(critic)
    return critic


def sft_batches(ctx: Any, step: int) -> list[dict] | None:
    """One collated SFT batch per minibatch update of ``step`` (None when the auxiliary loss is off).

    Examples are drawn with a generator seeded by (run seed, step, process), so resuming is exact.
    """
    cfg, parts, acc = ctx.config, ctx.parts, ctx.accelerator
    if cfg.ppo.sft_coef <= 0:
        return None
    generator = torch.Generator().manual_seed(cfg.run.seed * 7_919 + step * 104_729 + acc.process_index + 3)
    count = cfg.ppo.ppo_epochs * cfg.batch.num_minibatches
    pad = parts.tokenizer.pad_token_id
    batches = []
    for _ in range(count):
        index = torch.randint(len(parts.sft_examples), (cfg.ppo.sft_batch_size,), generator=generator).tolist()
        batches.append(collate_encoded([parts.sft_examples[i] for i in index], pad))
    return batches
