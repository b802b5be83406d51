"""How ``prefalign study`` runs each method: through the same trainers a user runs on real models.

Every function here builds an ordinary trainer config (``RewardModelConfig``, ``DPOConfig``,
``IterativeDPOConfig``, ``PPOConfig``) from the study's settings, runs the trainer on the tiny
world's data in memory, and returns the trained model's folder and a few of the trainer's own
results. Nothing here re-implements a loss or a loop.

=================  ======================================================================
method             trainer and data
=================  ======================================================================
dpo                ``run_dpo`` (loss dpo) on the preference pairs, from the SFT model
dpo_sft_first      ``run_dpo`` with ``sft_first`` on: SFT on the pairs' safe responses
                   (the "SFT (Safe)" fix of Xu et al. Table 2), then DPO from that model
dpo_iter           ``run_iterative_dpo`` on the policy prompts, samples labelled by the
                   learned reward model
rrhf, pro          ``run_dpo`` with loss rrhf / pro on the pairs (rankings of two)
ppo_*              ``run_ppo`` from the learned reward model (critic initialised from it),
                   one run per row of Xu et al. Table 3, each row's settings from
                   :func:`prefalign.trainers.ppo.ablation.row_config`
=================  ======================================================================
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefalign.data.config import DataConfig
from prefalign.models.load import ModelConfig
from prefalign.rollout.generate import SamplingConfig
from prefalign.studies.comparison.tiny_world.prepare import TinyWorld
from prefalign.trainers.common import BatchConfig, OptimConfig, RunConfig

#: method -> (trainer module it needs, label in the tables)
METHODS: dict[str, tuple[str, str]] = {
    "rrhf": ("prefalign.trainers.preference.dpo", "RRHF"),
    "pro": ("prefalign.trainers.preference.dpo", "PRO"),
    "dpo": ("prefalign.trainers.preference.dpo", "DPO"),
    "dpo_sft_first": ("prefalign.trainers.preference.dpo", "DPO + SFT (Safe) first"),
    "dpo_iter": ("prefalign.trainers.preference.iterative", "DPO-Iter"),
    "ppo_baseline": ("prefalign.trainers.ppo.ablation", "PPO baseline"),
    "ppo_advnorm": ("prefalign.trainers.ppo.ablation", "PPO + adv. norm."),
    "ppo_large_batch": ("prefalign.trainers.ppo.ablation", "PPO + large batch"),
    "ppo_ema": ("prefalign.trainers.ppo.ablation", "PPO + ref. EMA"),
}
#: row labels of the report and the plots, the SFT start included
LABELS = {"sft": "SFT (start)", **{m: label for m, (_, label) in METHODS.items()}}
#: study method -> row of prefalign.trainers.ppo.ablation.ROWS
PPO_ROWS = {
    "ppo_baseline": "baseline",
    "ppo_advnorm": "+advantage-normalization",
    "ppo_large_batch": "+large-batch",
    "ppo_ema": "+reference-ema",
}


@dataclass
class RewardModelStage:
    learning_rate: float = 3e-4
    """Peak learning rate of the reward model (linear decay to a tenth)."""
    epochs: float = 3.0
    """Passes over the preference pairs."""
    batch_size: int = 64
    """Pairs per step."""


@dataclass
class OfflineStage:
    beta: float = 0.1
    """DPO's beta (also scales the implicit rewards of RRHF / PRO in their logs)."""
    learning_rate: float = 2e-5
    """Peak learning rate of DPO (and of DPO-Iter's rounds)."""
    rank_learning_rate: float = 2e-5
    """Peak learning rate of RRHF and PRO."""
    epochs: float = 2.0
    """Passes over the preference pairs (DPO, RRHF, PRO)."""
    batch_size: int = 64
    """Pairs per step."""
    sft_first_learning_rate: float = 1e-3
    """Learning rate of the SFT stage of dpo_sft_first (that of the tiny world's own SFT)."""
    sft_first_epochs: float = 2.0
    """Passes of that SFT stage over the pairs' safe responses."""


@dataclass
class IterativeStage:
    rounds: int = 2
    """Sample-label-train rounds."""
    samples_per_prompt: int = 4
    """k responses sampled per prompt each round (pairs: best vs worst by the reward model)."""
    temperature: float = 1.0
    """Sampling temperature of each round."""
    epochs: float = 2.0
    """DPO passes over each round's pairs."""


@dataclass
class PPOStage:
    steps: int = 20
    """PPO steps (rollout + update) of every row."""
    small_batch_size: int = 32
    """Rollout batch of the first two rows of Table 3 (Xu et al.: 64)."""
    large_batch_size: int = 128
    """Rollout batch of the large-batch rows (Xu et al.: 512)."""
    num_minibatches: int = 4
    """Optimizer steps per pass over a rollout batch (Xu et al.: 4)."""
    actor_learning_rate: float = 2e-5
    """Policy learning rate (constant)."""
    critic_learning_rate: float = 5e-4
    """Critic learning rate (constant)."""
    kl_coef: float = 0.1
    """KL penalty coefficient (Xu et al.: 0.1)."""
    ema_rate: float = 0.1
    """Reference EMA rate of the last row."""
    temperature: float = 1.0
    """Rollout sampling temperature (Xu et al.: 1.0)."""
    validation_prompts: int = 32
    """Policy prompts held out for the trainer's own validation (learned-reward score)."""


def available(method: str) -> str | None:
    """None when the method's trainer can be imported, else the reason it cannot."""
    module = METHODS[method][0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"trainer {module} is not available ({exc})"
    return None


def _run(output: Path, seed: int, progress: bool, threads: int | None) -> RunConfig:
    # the study re-trains its runs each time it is run: a folder left by an earlier study is replaced
    return RunConfig(
        output_dir=str(output), seed=seed, tensorboard=False, progress=progress, threads=threads, overwrite=True
    )


def _data(world: TinyWorld) -> DataConfig:
    length = world.config.model.max_positions
    return DataConfig(max_length=length, max_prompt_length=length // 2, eval_size=0.0, seed=0)


def _keep(results: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: results[k] for k in keys if isinstance(results.get(k), (int, float, bool))}


def train_reward_model(
    world: TinyWorld, stage: RewardModelStage, output: Path, seed: int, progress: bool, threads: int | None
) -> tuple[str, dict[str, Any]]:
    from prefalign.trainers.reward_model import RewardModelConfig, run_reward_model

    config = RewardModelConfig(
        model=world.model_config("sft"),
        data=_data(world),
        batch=BatchConfig(global_batch_size=stage.batch_size, micro_batch_size=stage.batch_size, epochs=stage.epochs),
        optim=OptimConfig(
            learning_rate=stage.learning_rate, min_learning_rate=stage.learning_rate / 10, warmup_ratio=0.05
        ),
        run=_run(output, seed, progress, threads),
    )
    results = run_reward_model(config, pairs=(world.data.pairs_train, world.data.pairs_held_out))
    return str(output / "model"), _keep(
        results, ("steps", "eval/accuracy", "eval/margin", "eval/loss", "initial_eval/accuracy")
    )


def train_offline(
    method: str, world: TinyWorld, stage: OfflineStage, output: Path, seed: int, progress: bool, threads: int | None
) -> tuple[str, dict[str, Any]]:
    """DPO, DPO with SFT first, RRHF or PRO on the preference pairs."""
    from prefalign.trainers.preference.dpo import run_dpo
    from prefalign.trainers.preference.dpo_config import DPOConfig, SFTFirstConfig

    loss = {"dpo": "dpo", "dpo_sft_first": "dpo", "rrhf": "rrhf", "pro": "pro"}[method]
    lr = stage.rank_learning_rate if loss in ("rrhf", "pro") else stage.learning_rate
    batch = BatchConfig(global_batch_size=stage.batch_size, micro_batch_size=stage.batch_size, epochs=stage.epochs)
    sft_first = SFTFirstConfig(
        enabled=method == "dpo_sft_first",
        optim=OptimConfig(learning_rate=stage.sft_first_learning_rate, warmup_ratio=0.05),
        batch=BatchConfig(
            global_batch_size=stage.batch_size, micro_batch_size=stage.batch_size, epochs=stage.sft_first_epochs
        ),
    )
    config = DPOConfig(
        model=world.model_config("sft"),
        data=_data(world),
        loss=loss,
        beta=stage.beta,
        sft_first=sft_first,
        eval_micro_batch_size=64,
        batch=batch,
        optim=OptimConfig(learning_rate=lr, warmup_ratio=0.1),
        run=_run(output, seed, progress, threads),
    )
    results = run_dpo(config, records=(world.data.pairs_train, world.data.pairs_held_out))
    return str(output / "model"), _keep(results, ("steps", "eval/rewards/accuracy", "eval/rewards/margin", "eval/loss"))


def train_iterative(
    world: TinyWorld,
    stage: IterativeStage,
    offline: OfflineStage,
    reward_model_dir: str,
    output: Path,
    seed: int,
    progress: bool,
    threads: int | None,
    max_new_tokens: int,
) -> tuple[str, dict[str, Any]]:
    """DPO-Iter on the policy prompts, each round's samples labelled by the learned reward model."""
    from prefalign.studies.comparison.tiny_world.evaluate import load_learned_reward
    from prefalign.trainers.preference.iterative import IterativeDPOConfig, IterRewardConfig, run_iterative_dpo

    config = IterativeDPOConfig(
        model=world.model_config("sft"),
        data=_data(world),
        reward=IterRewardConfig(kind="model", model=ModelConfig(name_or_path=reward_model_dir)),
        sampling=SamplingConfig(
            temperature=stage.temperature, num_samples=stage.samples_per_prompt, max_new_tokens=max_new_tokens
        ),
        rounds=stage.rounds,
        generation_micro_batch_size=128,
        beta=offline.beta,
        batch=BatchConfig(
            global_batch_size=offline.batch_size, micro_batch_size=offline.batch_size, epochs=stage.epochs
        ),
        optim=OptimConfig(learning_rate=offline.learning_rate, warmup_ratio=0.1),
        final_reward=False,
        run=_run(output, seed, progress, threads),
    )
    results = run_iterative_dpo(
        config, prompts=world.data.policy_prompts, reward_fn=load_learned_reward(reward_model_dir)
    )
    rounds = [
        {
            "round": r["round"],
            "pairs": r["pairs"],
            "reward/mean": r["reward/mean"],
            "eval_accuracy": r["dpo"].get("eval/rewards/accuracy"),
        }
        for r in results["rounds"]
    ]
    return results["model_dir"], {"rounds": rounds}


def write_prompt_file(world: TinyWorld, path: Path) -> Path:
    """The policy prompts as a JSONL prompt file (the PPO trainer's file source)."""
    from prefalign.atomic import write_text_atomic

    rows = [json.dumps({"prompt": p.messages[-1].content}) for p in world.data.policy_prompts]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(rows) + "\n")
    return path


def ppo_row_config(
    world: TinyWorld,
    stage: PPOStage,
    reward_model_dir: str,
    prompt_file: Path,
    output: Path,
    row: str,
    seed: int,
    progress: bool,
    threads: int | None,
    max_new_tokens: int,
):
    """The PPO config of one Table 3 row (the row's factors set by ppo_ablation.row_config)."""
    from prefalign.trainers.ppo.ablation import PPOAblationConfig, row_config
    from prefalign.trainers.ppo.config import (
        KLConfig,
        PPOAlgoConfig,
        PPOBatchConfig,
        PPOConfig,
        PromptDataConfig,
        RewardConfig,
    )

    constant = lambda lr: OptimConfig(learning_rate=lr, warmup_ratio=0.0, schedule="constant")  # noqa: E731
    base = PPOConfig(
        policy=world.model_config("sft"),
        critic_init="reward",
        reward=RewardConfig(kind="model", model=ModelConfig(name_or_path=reward_model_dir)),
        data=PromptDataConfig(
            source=str(prompt_file),
            validation_prompts=stage.validation_prompts,
            max_prompt_length=world.config.model.max_positions // 2,
            seed=0,
        ),
        sampling=SamplingConfig(temperature=stage.temperature, max_new_tokens=max_new_tokens, num_samples=1),
        kl=KLConfig(coef=stage.kl_coef),
        ppo=PPOAlgoConfig(gamma=1.0, lam=1.0, ema_rate=stage.ema_rate),
        batch=PPOBatchConfig(
            rollout_batch_size=stage.small_batch_size,
            num_minibatches=stage.num_minibatches,
            micro_batch_size=stage.large_batch_size,
            generation_batch_size=stage.large_batch_size,
            steps=stage.steps,
        ),
        actor_optim=constant(stage.actor_learning_rate),
        critic_optim=constant(stage.critic_learning_rate),
        run=_run(output, seed, progress, threads),
    )
    ablation = PPOAblationConfig(
        base=base,
        small_batch_size=stage.small_batch_size,
        large_batch_size=stage.large_batch_size,
        output_dir=str(output),
    )
    return row_config(ablation, row)


def train_ppo(
    method: str,
    world: TinyWorld,
    stage: PPOStage,
    reward_model_dir: str,
    prompt_file: Path,
    output: Path,
    seed: int,
    progress: bool,
    threads: int | None,
    max_new_tokens: int,
) -> tuple[str, dict[str, Any]]:
    from prefalign.trainers.ppo.trainer import run_ppo

    config = ppo_row_config(
        world, stage, reward_model_dir, prompt_file, output, PPO_ROWS[method], seed, progress, threads, max_new_tokens
    )
    results = run_ppo(config)
    summary = {
        "steps": results["steps"],
        "best_eval_reward": results.get("best_eval_reward"),
        "rollout_batch_size": config.batch.rollout_batch_size,
        "advantage_normalization": config.ppo.advantage_normalization,
        "reference_ema": config.ppo.reference_ema,
        **_keep(results.get("final", {}), ("reward/mean", "kl/mean", "eval/reward")),
    }
    return str(Path(config.run.output_dir) / "model"), summary
