"""The named settings of ``prefalign ppo`` (``--preset NAME``) and, for each setting, where it comes from.

``PRESETS[name]`` is a partial config (a nested mapping laid over the defaults of
:class:`~prefalign.trainers.ppo.config.PPOConfig`); ``SOURCES[name]`` maps every dotted field a preset
sets to its source: the paper with its section or table, or "ours" with the reason. ``NOTES[name]``
says what a preset leaves at the defaults on purpose. ``docs/presets.md`` is generated from these
(:mod:`prefalign.trainers.presets_doc`) and a test checks both that the file is current and that every
setting a preset changes has a source, so the table cannot drift from the code.

Citations: Xu et al. (2024), "Is DPO Superior to PPO for LLM Alignment?" (App. A.2 lists the PPO
settings; section 5 and Table 3 the three key factors); Ivison et al. (2024), "Unpacking DPO and PPO"
(Table 9 and App. F the PPO settings, App. G the per-minibatch recomputation). The critic-free presets
(``grpo``, ``rloo``, ``reinforce_pp``, ``remax``) cite their estimators' papers: Shao et al. (2024),
"DeepSeekMath" (GRPO); Ahmadian et al. (2024), "Back to Basics" (RLOO); Hu (2025), "REINFORCE++";
Li et al. (2023), "ReMax". They change the estimator and what it needs; the rest stays at the defaults.
"""

from __future__ import annotations

from typing import Any

from prefalign.config import merge

_XU: dict[str, Any] = {
    "sampling": {"temperature": 1.0, "top_k": 200},
    "reward": {"clip": 20.0},
    "kl": {"coef": 0.1},
    "ppo": {
        "lam": 1.0,
        "advantage_normalization": True,
        "value_normalization": True,
        "value_normalization_beta": 0.99995,
        "logprobs_top_k": True,
        "reference_ema": True,
    },
    "batch": {"rollout_batch_size": 512, "num_minibatches": 4},
    "actor_optim": {"learning_rate": 1e-5},
    "critic_optim": {"learning_rate": 5e-6},
}
_XU_SOURCES = {
    "sampling.temperature": "Xu et al. App. A.2 (sampling temperature 1.0)",
    "sampling.top_k": "Xu et al. App. A.2 (top-k 200)",
    "reward.clip": "Xu et al. App. A.2 (reward clipping at 20)",
    "kl.coef": "Xu et al. App. A.2 (KL coefficient 0.1)",
    "ppo.lam": "Xu et al. App. A.2 (gamma = lambda = 1)",
    "ppo.advantage_normalization": "Xu et al. section 5, key factor 1; App. A.2",
    "ppo.value_normalization": "Xu et al. App. A.2 ('we additionally adopt advantage normalization and value "
    "normalization')",
    "ppo.value_normalization_beta": "ours: the paper gives no rate; 0.99995 is ReaLHF's (the public framework of Xu "
    "et al.'s group), whose MAPPO-style normaliser keeps an exponential average",
    "ppo.logprobs_top_k": "ours: the paper is silent; ReaLHF applies the sampler's top-k mask to the training "
    "log-probs, so the ratio is taken under the distribution that sampled",
    "ppo.reference_ema": "Xu et al. section 5, key factor 3 (rate and interval ours: see --help)",
    "batch.rollout_batch_size": "Xu et al. section 5, key factor 2 (batch 512; Table 3)",
    "batch.num_minibatches": "Xu et al. App. A.2 (a rollout batch of 512 in 4 minibatch updates)",
    "actor_optim.learning_rate": "Xu et al. App. A.2 (actor 1e-5)",
    "critic_optim.learning_rate": "Xu et al. App. A.2 (critic 5e-6)",
}

_IVISON_OPTIM: dict[str, Any] = {
    "learning_rate": 1e-6,
    "warmup_ratio": 0.1,
    "adam_beta2": 0.95,
    "adam_epsilon": 1e-5,
}
_IVISON: dict[str, Any] = {
    "critic_init": "reward",
    "data": {"max_prompt_length": 1024},
    "sampling": {"temperature": 0.7, "max_new_tokens": 1024},
    "reward": {"truncated_reward": -10.0},
    "kl": {"coef": 0.05},
    "ppo": {"lam": 0.95, "value_loss_coef": 0.1},
    "actor_optim": dict(_IVISON_OPTIM),
    "critic_optim": dict(_IVISON_OPTIM),
}
_IVISON_SOURCES = {
    "critic_init": "Ivison et al. App. F (value model initialised from the reward model)",
    "data.max_prompt_length": "Ivison et al. Table 9 (1,024 prompt tokens)",
    "sampling.temperature": "Ivison et al. Table 9 (temperature 0.7)",
    "sampling.max_new_tokens": "Ivison et al. Table 9 (1,024 response tokens)",
    "reward.truncated_reward": "Ivison et al. App. F (the EOS trick: -10 for a response without EOS)",
    "kl.coef": "Ivison et al. Table 9 (KL coefficient 0.05)",
    "ppo.lam": "Ivison et al. Table 9 (gamma 1, lambda 0.95)",
    "ppo.value_loss_coef": "Ivison et al. Table 9 (value-loss coefficient 0.1; applied as a critic learning-rate "
    "scale, see --help)",
    "actor_optim.learning_rate": "Ivison et al. Table 9 (1e-6)",
    "actor_optim.warmup_ratio": "Ivison et al. Table 9 (10% linear warm-up)",
    "actor_optim.adam_beta2": "Ivison et al. App. F (AdamW betas 0.9, 0.95)",
    "actor_optim.adam_epsilon": "Ivison et al. App. F (AdamW epsilon 1e-5)",
    "critic_optim.learning_rate": "Ivison et al. Table 9 (one learning rate, 1e-6, for policy and value model)",
    "critic_optim.warmup_ratio": "Ivison et al. Table 9 (10% linear warm-up)",
    "critic_optim.adam_beta2": "Ivison et al. App. F (AdamW betas 0.9, 0.95)",
    "critic_optim.adam_epsilon": "Ivison et al. App. F (AdamW epsilon 1e-5)",
}

#: Xu et al. Table 3, cumulative rows: each adds one key factor to the previous one (on top of ``xu``).
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
_TABLE3_SOURCE = "Xu et al. Table 3, row {row} (cumulative key factors; the rest as the xu preset)"

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
_TINY_SOURCE = "ours: a smoke run on a tiny random model that finishes in seconds"


_GRPO: dict[str, Any] = {
    "sampling": {"num_samples": 64},
    "kl": {"coef": 0.04},
    "ppo": {"advantage_estimator": "grpo"},
    "batch": {"rollout_batch_size": 1024},
    "actor_optim": {"learning_rate": 1e-6},
}
_DEEPSEEKMATH = "Shao et al. (2024) DeepSeekMath, section 4.2 (GRPO training of DeepSeekMath-RL)"
_GRPO_SOURCES = {
    "ppo.advantage_estimator": "Shao et al. (2024) DeepSeekMath, section 4.1.2 (outcome supervision: group-normalised "
    "rewards as the advantage of every token)",
    "sampling.num_samples": _DEEPSEEKMATH + ": 64 outputs sampled per question",
    "kl.coef": _DEEPSEEKMATH + ": KL coefficient 0.04 (theirs a loss term, ours in the reward: see "
    "prefalign.algorithms.critic_free)",
    "batch.rollout_batch_size": _DEEPSEEKMATH + ": training batch 1,024",
    "actor_optim.learning_rate": _DEEPSEEKMATH + ": policy learning rate 1e-6",
}
_RLOO: dict[str, Any] = {
    "sampling": {"num_samples": 4},
    "ppo": {"advantage_estimator": "rloo", "advantage_normalization": False},
}
_RLOO_SOURCES = {
    "ppo.advantage_estimator": "Ahmadian et al. (2024) section 3.2 (REINFORCE with the leave-one-out baseline)",
    "sampling.num_samples": "Ahmadian et al. (2024) section 5 (RLOO with k = 4, the larger of the two k they compare)",
    "ppo.advantage_normalization": "Ahmadian et al. (2024) section 3.2 (the baseline alone, no whitening)",
}
_REINFORCE_PP: dict[str, Any] = {"ppo": {"advantage_estimator": "reinforce_pp"}}
_REINFORCE_PP_SOURCES = {
    "ppo.advantage_estimator": "Hu (2025) REINFORCE++, section 3 (token-level KL penalty in the rewards, returns "
    "normalised over the global batch, PPO's clipped loss)",
}
_REMAX: dict[str, Any] = {"ppo": {"advantage_estimator": "remax", "advantage_normalization": False}}
_REMAX_SOURCES = {
    "ppo.advantage_estimator": "Li et al. (2023) ReMax, Algorithm 1 (one sampled and one greedy response per prompt; "
    "the greedy response's reward is the baseline)",
    "ppo.advantage_normalization": "Li et al. (2023) ReMax, Eq. 5 (the reward difference itself, no whitening)",
}
CRITIC_FREE = {"grpo": _GRPO, "rloo": _RLOO, "reinforce_pp": _REINFORCE_PP, "remax": _REMAX}
_CRITIC_FREE_NOTE = (
    "Left at the defaults (ours, not the paper's): the policy, reward and prompts, the sampling temperature, the "
    "clip range 0.2 and one minibatch per rollout batch (one update per rollout, so the clipped loss is "
    "REINFORCE's). No critic is built: critic_init and critic_optim are unused."
)


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


PRESETS: dict[str, dict[str, Any]] = {
    "xu": _XU,
    "ivison": _IVISON,
    "tiny": _TINY,
    **{name: merge(_XU, row) for name, row in TABLE3_ROWS.items()},
    **CRITIC_FREE,
}

SOURCES: dict[str, dict[str, str]] = {
    "xu": _XU_SOURCES,
    "ivison": _IVISON_SOURCES,
    "tiny": dict.fromkeys(_leaves(_TINY), _TINY_SOURCE),
    **{
        name: {**_XU_SOURCES, **dict.fromkeys(_leaves(row), _TABLE3_SOURCE.format(row=name.removeprefix("table3-")))}
        for name, row in TABLE3_ROWS.items()
    },
    "grpo": _GRPO_SOURCES,
    "rloo": _RLOO_SOURCES,
    "reinforce_pp": _REINFORCE_PP_SOURCES,
    "remax": _REMAX_SOURCES,
}

NOTES: dict[str, str] = {
    "xu": "Left at the defaults: gamma 1, clip range 0.2, rollout temperature and top-p 1 (Xu et al. App. A.2 give "
    "the same). The reference EMA rate (0.1) and interval (every step) are ours: the paper gives none.",
    "ivison": "Left at the defaults: gamma 1, clip range 0.2, AdamW beta1 0.9, no top-k / top-p (Ivison et al. give "
    "the same). Ours, as the paper gives none: the rollout batch (64) and one minibatch per step, and a constant "
    "learning rate after the warm-up (the paper gives only the warm-up). The critic's effective learning rate is "
    "1e-6 x 0.1 (see ppo.value_loss_coef).",
    "tiny": "Everything ours: a smoke run.",
    **dict.fromkeys(CRITIC_FREE, _CRITIC_FREE_NOTE),
}
