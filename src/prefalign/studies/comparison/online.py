"""The on-policy methods of ``prefalign study`` (PPO's Table 3 rows and DPO-Iter) in each testbed.

A **testbed** says where the on-policy methods get their reward (the offline methods train on the
static pairs in both):

==============  =======================================================================================
testbed         reward of PPO and labels of DPO-Iter
==============  =======================================================================================
``preference``  the seed's learned reward model (the HH-RLHF / PKU-SafeRLHF setting); PPO's critic
                starts from it
``verifiable``  the gold test cases: 10 for a response that passes every one, else 0 (Xu et al.
                section 6, APPS / CodeContests); PPO's critic starts from the policy
==============  =======================================================================================

The programmatic rewards are registered here as task rewards (``tiny_world_gold``,
``tiny_world_verifiable``), so the PPO trainer builds them by name like any other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefalign.data.schema import Prompt
from prefalign.models.load import ModelConfig
from prefalign.rewards.registry import register_task_reward
from prefalign.rollout.generate import SamplingConfig
from prefalign.studies.comparison.methods import (
    PPO_ROWS,
    IterativeStage,
    OfflineStage,
    PPOStage,
    _data,
    _run,
    every,
)
from prefalign.studies.comparison.tiny_world.prepare import TinyWorld
from prefalign.studies.comparison.tiny_world.task import GoldReward, VerifiableReward
from prefalign.trainers.common import BatchConfig, OptimConfig
from prefalign.trainers.early_stop import EarlyStopConfig

TESTBEDS = ("preference", "verifiable")
#: the verifiable testbed's reward by name (prefalign.rewards.registry)
VERIFIABLE_TASK = "tiny_world_verifiable"

register_task_reward("tiny_world_gold", lambda argument: GoldReward())
register_task_reward(VERIFIABLE_TASK, lambda argument: VerifiableReward(float(argument) if argument else 10.0))


def check_testbed(testbed: str) -> str:
    if testbed not in TESTBEDS:
        raise ValueError(f"unknown testbed {testbed!r}; choose from {list(TESTBEDS)}")
    return testbed


def testbed_reward(testbed: str, reward_model_dir: str | None):
    """The reward function of a testbed: the learned reward model, or the verifiable test-case reward."""
    if check_testbed(testbed) == "verifiable":
        return VerifiableReward()
    from prefalign.studies.comparison.tiny_world.evaluate import load_learned_reward

    if reward_model_dir is None:
        raise ValueError("the preference testbed needs the seed's reward model")
    return load_learned_reward(reward_model_dir)


def train_iterative(
    world: TinyWorld,
    stage: IterativeStage,
    offline: OfflineStage,
    testbed: str,
    reward_model_dir: str | None,
    prompts: list[Prompt],
    output: Path,
    seed: int,
    progress: bool,
    threads: int | None,
    max_new_tokens: int,
    early_stop: EarlyStopConfig | None = None,
) -> tuple[str, dict[str, Any]]:
    """DPO-Iter on the policy prompts, each round's samples labelled by the testbed's reward; the next
    ``stage.validation_prompts`` prompts give the validation objective after each round, on which the rounds stop
    with ``early_stop`` (``stage.rounds`` is then a cap)."""
    from prefalign.trainers.preference.iterative import IterativeDPOConfig, IterRewardConfig, run_iterative_dpo

    config = IterativeDPOConfig(
        model=world.model_config("sft"),
        data=_data(world),
        reward=IterRewardConfig(kind="task", task=VERIFIABLE_TASK)
        if testbed == "verifiable"
        else IterRewardConfig(kind="model", model=ModelConfig(name_or_path=str(reward_model_dir))),
        sampling=SamplingConfig(
            temperature=stage.temperature, num_samples=stage.samples_per_prompt, max_new_tokens=max_new_tokens
        ),
        rounds=stage.rounds,
        generation_micro_batch_size=256,
        beta=stage.beta,
        batch=BatchConfig(
            global_batch_size=offline.batch_size, micro_batch_size=offline.batch_size, epochs=stage.epochs
        ),
        optim=OptimConfig(learning_rate=stage.learning_rate, warmup_ratio=0.1),
        final_reward=True,
        validation_prompts=stage.validation_prompts,
        run=_run(output, seed, progress, threads, early_stop=early_stop or EarlyStopConfig()),
    )
    if stage.prompts:
        prompts = prompts[: stage.prompts + stage.validation_prompts]
    if len(prompts) <= stage.validation_prompts:
        raise ValueError(
            f"iterative.validation_prompts={stage.validation_prompts} leaves no training prompt of {len(prompts)}"
        )
    results = run_iterative_dpo(config, prompts=prompts, reward_fn=testbed_reward(testbed, reward_model_dir))
    rounds = [
        {
            "round": r["round"],
            "pairs": r["pairs"],
            "reward/mean": r["reward/mean"],
            "dpo_steps": r["dpo"].get("steps"),
            "eval/reward": r.get("eval/reward"),
        }
        for r in results["rounds"]
    ]
    summary = {
        "rounds": rounds,
        "planned_rounds": results["planned_rounds"],
        "stopped_early": bool(results["early_stop"]["stopped_early"]),
        "reward/final_mean": results.get("reward/final_mean"),
    }
    return results["model_dir"], summary


def ppo_row_config(
    world: TinyWorld,
    stage: PPOStage,
    testbed: str,
    reward_model_dir: str | None,
    prompt_file: Path,
    output: Path,
    row: str,
    seed: int,
    progress: bool,
    threads: int | None,
    max_new_tokens: int,
    early_stop: EarlyStopConfig | None = None,
):
    """The PPO config of one Table 3 row in one testbed (the row's factors set by ppo_ablation.row_config). With
    ``early_stop`` the run stops once its validation objective has plateaued (``stage.steps`` is then a cap), and a
    checkpoint is kept at every evaluation for the over-optimisation curve; else every ``steps / curve_points``."""
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
    verifiable = check_testbed(testbed) == "verifiable"
    reward = (
        RewardConfig(kind="task", task=VERIFIABLE_TASK)
        if verifiable
        else RewardConfig(kind="model", model=ModelConfig(name_or_path=str(reward_model_dir)))
    )
    early_stop = early_stop or EarlyStopConfig()
    interval = every(stage.steps, stage.evaluations)
    save_interval = interval if early_stop.enabled else every(stage.steps, stage.curve_points)
    base = PPOConfig(
        policy=world.model_config("sft"),
        critic_init="policy" if verifiable else "reward",
        reward=reward,
        data=PromptDataConfig(
            source=str(prompt_file),
            validation_prompts=stage.validation_prompts,
            max_prompt_length=world.config.model.max_positions // 2,
            seed=0,
        ),
        sampling=SamplingConfig(temperature=stage.temperature, max_new_tokens=max_new_tokens, num_samples=1),
        kl=KLConfig(coef=stage.kl_coef),
        ppo=PPOAlgoConfig(
            gamma=1.0,
            lam=1.0,
            ema_rate=stage.ema_rate,
            value_normalization=stage.value_normalization,
            value_normalization_beta=stage.value_normalization_beta,
        ),
        batch=PPOBatchConfig(
            rollout_batch_size=stage.small_batch_size,
            num_minibatches=stage.num_minibatches,
            micro_batch_size=stage.large_batch_size,
            generation_batch_size=stage.large_batch_size,
            steps=stage.steps,
        ),
        actor_optim=constant(stage.actor_learning_rate),
        critic_optim=constant(stage.critic_learning_rate),
        run=_run(
            output,
            seed,
            progress,
            threads,
            eval_every=interval,
            save_every=save_interval,
            keep_checkpoints=stage.steps // save_interval + 1,
            early_stop=early_stop,
        ),
    )
    ablation = PPOAblationConfig(
        base=base,
        small_batch_size=stage.small_batch_size,
        large_batch_size=stage.large_batch_size,
        output_dir=str(output),
    )
    config = row_config(ablation, row)
    return dataclasses.replace(config, run=dataclasses.replace(config.run, tensorboard=False))


def train_ppo(
    method: str,
    world: TinyWorld,
    stage: PPOStage,
    testbed: str,
    reward_model_dir: str | None,
    prompt_file: Path,
    output: Path,
    seed: int,
    progress: bool,
    threads: int | None,
    max_new_tokens: int,
    early_stop: EarlyStopConfig | None = None,
) -> tuple[str, dict[str, Any]]:
    from prefalign.studies.comparison.beyond import adapt_ppo_config
    from prefalign.trainers.ppo.trainer import run_ppo

    config = ppo_row_config(
        world,
        stage.for_row(method),
        testbed,
        reward_model_dir,
        prompt_file,
        output,
        PPO_ROWS[method],
        seed,
        progress,
        threads,
        max_new_tokens,
        early_stop,
    )
    config = adapt_ppo_config(method, config, stage, reward_model_dir)  # the rows beyond the papers
    results = run_ppo(config)
    final = results.get("final", {})
    summary = {
        "steps": results["steps"],
        "planned_steps": results["planned_steps"],
        "stopped_early": bool(results["early_stop"]["stopped_early"]),
        "samples": results["steps"] * config.batch.rollout_batch_size,
        "best_eval_reward": results.get("best_eval_reward"),
        "rollout_batch_size": config.batch.rollout_batch_size,
        "actor_learning_rate": config.actor_optim.learning_rate,
        "kl_coef": config.kl.coef,
        "advantage_normalization": config.ppo.advantage_normalization,
        "reference_ema": config.ppo.reference_ema,
        "advantage_estimator": config.ppo.advantage_estimator,
        "value_normalization": config.ppo.value_normalization,
        **{
            k: final[k]
            for k in ("reward/mean", "kl/mean", "eval/reward", "eval/objective")
            if isinstance(final.get(k), (int, float))
        },
    }
    return str(Path(config.run.output_dir) / "model"), summary
