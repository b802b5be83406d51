"""Settings of ``prefalign dpo-iter`` (:mod:`prefalign.trainers.preference.iterative`) and its presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefalign.data.config import DataConfig
from prefalign.models.load import (
    ModelConfig,
)
from prefalign.rewards.ensemble import check_ensemble_settings
from prefalign.rollout.generate import SamplingConfig
from prefalign.trainers.common import (
    BatchConfig,
    OptimConfig,
    RunConfig,
)
from prefalign.trainers.early_stop import EarlyStopConfig
from prefalign.trainers.preference.dpo_config import DPOConfig


def round_dir(output_dir: str | Path, round_index: int) -> Path:
    """The folder of round ``round_index`` (its samples, pairs and DPO run)."""
    return Path(output_dir) / f"round-{round_index:02d}"


REWARD_KINDS = ("model", "task", "code", "sum")
PAIRING_RULES = ("best_worst", "best_vs_rest")


@dataclass
class IterRewardConfig:
    kind: str = "task"
    """Reward source: model (a learned reward model), task (a programmatic reward by name), code (the prompt's unit
    tests), or sum (model + task)."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path="runs/reward-model"))
    """The reward model folder (written by `prefalign rm`), for kind model or sum; a folder written by `prefalign rm
    --ensemble_size K` (with ensemble.json) is an ensemble, combined by `ensemble`."""
    ensemble: str = "mean"
    """How a reward-model ensemble's member scores combine (Coste et al. 2024): mean, wco (worst case: the minimum over
    members) or uwo (uncertainty-weighted: mean - uwo_lambda * variance over members). Ignored for a single model."""
    uwo_lambda: float = 0.5
    """Lambda of the uwo combination (ours: Coste et al. tune it per setting; the variance is over members, divided by
    K)."""
    task: str = "char_fraction:abcdefghijklmnopqrstuvwxyz"
    """Programmatic reward NAME[:ARGUMENT] from prefalign.rewards.registry, for kind task or sum."""
    model_weight: float = 1.0
    """Weight of the reward model's score in a sum."""
    task_weight: float = 1.0
    """Weight of the programmatic reward in a sum."""
    code_pass_reward: float = 10.0
    """Kind code: the reward of a program that passes every test (Xu et al.: 10); a failing one gets 0."""
    micro_batch_size: int = 8
    """Sequences per reward-model forward pass."""

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"reward.kind must be one of {REWARD_KINDS}, got {self.kind!r}")
        check_ensemble_settings("reward.", self.ensemble, self.uwo_lambda)


@dataclass
class IterativeDPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The starting policy M_0 (usually an SFT model), also round 1's reference."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_length=512, eval_size=0.0))
    """Prompts: a code set (humaneval, mbpp with options.split, apps, code-contests: tests and canonical solutions), a
    preference set's distinct prompts, or a file with a prompt column. eval_size: share of each round's pairs held
    out for DPO's evaluation."""
    reward: IterRewardConfig = field(default_factory=IterRewardConfig)
    """The reward source that labels the samples."""
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=1.0, num_samples=4, max_new_tokens=128)
    )
    """Sampling of each round; num_samples is k, the responses per prompt."""
    rounds: int = 3
    """Number of sample-label-train rounds."""
    pairing: str = "best_worst"
    """Pairs per prompt: best_worst (highest vs lowest reward) or best_vs_rest (highest vs each lower-rewarded sample).
    """
    pass_threshold: float | None = None
    """Code: a sample passes when its reward is at least this; if none of a prompt's samples passes, its canonical
    solution is the chosen response (None: never)."""
    canonical_keys: list[str] = field(default_factory=lambda: ["canonical_solution", "reference_solution"])
    """Prompt.metadata keys searched, in order, for the data set's correct solution."""
    generation_micro_batch_size: int = 16
    """Sequences per generate call (a chunk of prompts times k)."""
    beta: float = 0.1
    """DPO beta of every round."""
    label_smoothing: float = 0.0
    """Conservative DPO label smoothing of every round."""
    reference: str = "cached"
    """Reference log-probs of each round: cached (computed once by M_{r-1}) or on_the_fly."""
    share_prompt: bool = True
    """Compute each prompt once for both responses of a pair (see prefalign dpo --help)."""
    pack_examples: bool = True
    """Several short pairs to a row of the shared-prompt layout (see prefalign dpo --help)."""
    max_tokens_per_micro_batch: int | None = None
    """Also cap a training micro-batch at this many padded tokens."""
    batch: BatchConfig = field(
        default_factory=lambda: BatchConfig(global_batch_size=64, micro_batch_size=4, epochs=1.0)
    )
    """Batch sizes (pairs) and length of each round's DPO training."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-6, warmup_ratio=0.1))
    """Optimizer and schedule of each round (a fresh optimizer per round)."""
    validation_prompts: int = 0
    """Hold out the last N prompts: never sampled for pairs; before round 1 and after each round one response per
    validation prompt is sampled from the current model and scored by the reward, with its KL to the starting model:
    eval/reward, eval/kl and eval/objective = reward - beta x KL (round.json, rounds.jsonl), the series run.early_stop
    watches (0: no validation)."""
    final_reward: bool = True
    """After the last round, sample once more from the final model and report its mean reward."""
    stop_after_steps: int | None = None
    """Save and exit after this many DPO steps, counted over all rounds (a pre-empted job); continue with --run.resume
    True."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/dpo-iter"))
    """Output folder, seed, checkpoints, logging (each round's DPO run lives in round-XX/)."""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.pairing not in PAIRING_RULES:
            raise ValueError(f"pairing must be one of {PAIRING_RULES}, got {self.pairing!r}")
        if self.sampling.num_samples < 2 and self.pass_threshold is None:
            raise ValueError("sampling.num_samples (k) must be at least 2 to form pairs")
        if self.sampling.temperature == 0 and self.sampling.num_samples > 1:
            raise ValueError("greedy sampling (temperature 0) gives k identical responses; use temperature > 0")
        if self.validation_prompts < 0:
            raise ValueError(f"validation_prompts must be >= 0, got {self.validation_prompts}")
        if self.run.early_stop.enabled and not self.validation_prompts:
            raise ValueError(
                "run.early_stop.patience > 0 needs validation_prompts > 0: DPO-Iter stops on the validation objective "
                "after each round"
            )

    def round_dpo_config(self, round_index: int, model: ModelConfig, stop_after: int | None) -> DPOConfig:
        run = dataclasses.replace(
            self.run,
            output_dir=str(round_dir(self.run.output_dir, round_index)),
            early_stop=EarlyStopConfig(),  # the rounds stop early (on the validation objective), not a round's DPO
        )
        return DPOConfig(
            model=model,
            data=self.data,
            loss="dpo",
            beta=self.beta,
            label_smoothing=self.label_smoothing,
            reference=self.reference,
            share_prompt=self.share_prompt,
            pack_examples=self.pack_examples,
            max_tokens_per_micro_batch=self.max_tokens_per_micro_batch,
            batch=self.batch,
            optim=self.optim,
            run=run,
            stop_after_steps=stop_after,
        )


PRESETS: dict[str, dict[str, Any]] = {
    # Xu et al. (2024): DPO lr 1e-6 and beta 0.1 each round; sampling temperature 1.0 (top-k 200 as in their PPO).
    "xu": {
        "beta": 0.1,
        "optim": {"learning_rate": 1e-6},
        "sampling": {"temperature": 1.0, "top_k": 200},
        "pairing": "best_worst",
    },
    # Xu et al. section 6 (code): 5 samples per prompt, unit-test reward 10 for a passing program; a prompt without a
    # passing sample is paired with its canonical solution. Sources per setting: docs/presets.md.
    "xu-code": {
        "beta": 0.1,
        "optim": {"learning_rate": 1e-6},
        "sampling": {"temperature": 1.0, "top_k": 200, "num_samples": 5},
        "data": {"source": "mbpp", "options": {"split": "train"}, "max_length": 1024},
        "reward": {"kind": "code", "code_pass_reward": 10.0},
        "pass_threshold": 10.0,
        "pairing": "best_worst",
    },
    # A smoke run on the tiny random model with a programmatic reward (seconds); as recipes/dpo_iter_tiny.yaml.
    "tiny": {
        "model": {"name_or_path": "tiny-random"},
        "data": {"num_examples": 16, "max_length": 256, "max_prompt_length": 192},
        "reward": {"kind": "task", "task": "char_fraction:abcdefghijklmnopqrstuvwxyz"},
        "sampling": {"temperature": 1.0, "num_samples": 4, "max_new_tokens": 12},
        "rounds": 2,
        "batch": {"global_batch_size": 8, "micro_batch_size": 8, "epochs": 4.0},
        "optim": {"learning_rate": 1e-2, "warmup_ratio": 0.0},
        "run": {"output_dir": "runs/dpo_iter_tiny", "tensorboard": False, "progress": False, "threads": 1},
    },
}
