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
dpo_drop_dual_*    ``run_dpo`` without the dual-unsafe (or dual-safe) pairs (Xu et al. Table 2)
dpo_iter           ``run_iterative_dpo`` on the policy prompts, samples labelled by the
                   testbed's reward (:mod:`prefalign.studies.comparison.online`)
rrhf, pro          ``run_dpo`` with loss rrhf / pro on the pairs (rankings of two)
ppo_*              ``run_ppo`` from the testbed's reward, one run per row of Xu et al.
                   Table 3, each row's settings from
                   :func:`prefalign.trainers.ppo.ablation.row_config` (``online``)
=================  ======================================================================

The offline methods see only the static pairs, so one run serves both testbeds.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefalign.data.config import DataConfig
from prefalign.studies.comparison.tiny_world.prepare import TinyWorld
from prefalign.trainers.common import BatchConfig, OptimConfig, RunConfig
from prefalign.trainers.early_stop import EarlyStopConfig

#: method -> (trainer module it needs, label in the tables)
METHODS: dict[str, tuple[str, str]] = {
    "rrhf": ("prefalign.trainers.preference.dpo", "RRHF"),
    "pro": ("prefalign.trainers.preference.dpo", "PRO"),
    "dpo": ("prefalign.trainers.preference.dpo", "DPO"),
    "dpo_sft_first": ("prefalign.trainers.preference.dpo", "DPO + SFT (Safe) first"),
    "dpo_drop_dual_unsafe": ("prefalign.trainers.preference.dpo", "DPO, dual-unsafe pairs filtered"),
    "dpo_drop_dual_safe": ("prefalign.trainers.preference.dpo", "DPO, dual-safe pairs filtered"),
    "dpo_iter": ("prefalign.trainers.preference.iterative", "DPO-Iter"),
    "ppo_baseline": ("prefalign.trainers.ppo.ablation", "PPO baseline"),
    "ppo_advnorm": ("prefalign.trainers.ppo.ablation", "PPO + adv. norm."),
    "ppo_large_batch": ("prefalign.trainers.ppo.ablation", "PPO + large batch"),
    "ppo_ema": ("prefalign.trainers.ppo.ablation", "PPO + ref. EMA"),
    # beyond the two papers (prefalign.studies.comparison.beyond): full preset only
    "ppo_grpo": ("prefalign.trainers.ppo.ablation", "GRPO (no critic)"),
    "ppo_rloo": ("prefalign.trainers.ppo.ablation", "RLOO (no critic)"),
    "ppo_uwo": ("prefalign.trainers.ppo.ablation", "PPO, UWO ensemble reward"),
    "ppo_wco": ("prefalign.trainers.ppo.ablation", "PPO, WCO ensemble reward"),
}
#: row labels of the report and the plots, the SFT start included
LABELS = {"sft": "SFT (start)", **{m: label for m, (_, label) in METHODS.items()}}
#: methods trained on the static pairs only (one run per seed serves every testbed)
OFFLINE = ("rrhf", "pro", "dpo", "dpo_sft_first", "dpo_drop_dual_unsafe", "dpo_drop_dual_safe")
#: Xu et al. Table 2's data filters: method -> the PKU-SafeRLHF pair category it leaves out
FILTERED = {"dpo_drop_dual_unsafe": "dual_unsafe", "dpo_drop_dual_safe": "dual_safe"}
#: study method -> row of prefalign.trainers.ppo.ablation.ROWS
PPO_ROWS = {
    "ppo_baseline": "baseline",
    "ppo_advnorm": "+advantage-normalization",
    "ppo_large_batch": "+large-batch",
    "ppo_ema": "+reference-ema",
    # the rows beyond the papers start from the row with all three factors (prefalign.studies.comparison.beyond)
    "ppo_grpo": "+reference-ema",
    "ppo_rloo": "+reference-ema",
    "ppo_uwo": "+reference-ema",
    "ppo_wco": "+reference-ema",
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
    beta: float = 0.3
    """DPO's beta (also scales the implicit rewards of RRHF / PRO in their logs)."""
    learning_rate: float = 1e-4
    """Peak learning rate of DPO (and of the SFT-first and filtered variants)."""
    rank_learning_rate: float = 2e-5
    """Peak learning rate of RRHF and PRO."""
    epochs: float = 6.0
    """Passes over the preference pairs (DPO, RRHF, PRO): the cap when runs stop at their plateau."""
    batch_size: int = 64
    """Pairs per step."""
    sft_first_learning_rate: float = 1e-3
    """Learning rate of the SFT stage of dpo_sft_first (that of the tiny world's own SFT)."""
    sft_first_epochs: float = 2.0
    """Passes of that SFT stage over the pairs' safe responses."""
    evaluations: int = 24
    """Held-out evaluations spread over the run's cap (the convergence criterion's series)."""


@dataclass
class IterativeStage:
    rounds: int = 10
    """Sample-label-train rounds, the cap when runs stop at their plateau (each round's model is a point of the
    over-optimisation curve)."""
    samples_per_prompt: int = 4
    """k responses sampled per prompt each round (pairs: best vs worst by the reward model)."""
    temperature: float = 1.0
    """Sampling temperature of each round."""
    epochs: float = 2.0
    """DPO passes over each round's pairs."""
    prompts: int | None = 256
    """Training policy prompts sampled each round (the first ones; None: all)."""
    validation_prompts: int = 64
    """The policy prompts after those, held out: the validation objective (reward - beta x KL to the SFT model)
    after each round (the convergence series)."""
    learning_rate: float = 3e-5
    """Peak learning rate of each round's DPO."""
    beta: float = 0.3
    """DPO's beta in each round."""


@dataclass
class PPOStage:
    steps: int = 80
    """PPO steps (rollout + update) of every row: the cap when runs stop at their plateau, the length of the
    sweeps."""
    small_batch_size: int = 32
    """Rollout batch of the first two rows of Table 3 (Xu et al.: 64)."""
    large_batch_size: int = 128
    """Rollout batch of the large-batch rows (Xu et al.: 512)."""
    num_minibatches: int = 4
    """Optimizer steps per pass over a rollout batch (Xu et al.: 4)."""
    actor_learning_rate: float = 1e-5
    """Policy learning rate (constant) of every row without its own in row_learning_rates."""
    critic_learning_rate: float = 5e-4
    """Critic learning rate (constant)."""
    kl_coef: float = 0.2
    """KL penalty coefficient of every row without its own in row_kl_coefs (Xu et al.: 0.1)."""
    ema_rate: float = 0.1
    """Reference EMA rate of the last row."""
    temperature: float = 1.0
    """Rollout sampling temperature (Xu et al.: 1.0)."""
    validation_prompts: int = 64
    """Policy prompts held out for the trainer's own validation (the testbed's reward; the convergence series)."""
    evaluations: int = 20
    """Validation evaluations spread over the run's cap (the convergence series)."""
    curve_points: int = 5
    """Checkpoints spread over the run, each scored on held-out prompts for the over-optimisation curve."""
    group_size: int = 4
    """Responses per prompt of the critic-free rows ppo_grpo and ppo_rloo (the group GRPO normalises over and RLOO
    leaves one out of; the rollout batch is unchanged, so a step has fewer prompts). Ours."""
    ensemble_members: int = 3
    """Reward models in the ensemble of ppo_uwo and ppo_wco: the seed's own and ensemble_members - 1 more trained alike
    from other seeds (ours: Coste et al. use five; three bound the study's time)."""
    uwo_lambda: float = 0.5
    """Lambda of ppo_uwo's combination, mean - lambda * variance over members (ours: Coste et al. tune it)."""
    value_normalization: bool = False
    """Critic on returns normalised by running statistics, in every row (Xu et al. App. A.2 and the xu preset: on in
    every Table 3 row; the full preset turns it on)."""
    value_normalization_beta: float | None = None
    """Rate of those statistics (None: exact cumulative mean / std; the xu preset: 0.99995, ReaLHF's)."""
    row_learning_rates: dict[str, float] = field(default_factory=lambda: {"ppo_ema": 3e-6})
    """Actor learning rate of single rows, by study method (e.g. ppo_ema: 1e-5); a row not named here uses
    actor_learning_rate."""
    row_kl_coefs: dict[str, float] = field(default_factory=dict)
    """KL coefficient of single rows, by study method; a row not named here uses kl_coef."""

    def __post_init__(self) -> None:
        for name, table in (("row_learning_rates", self.row_learning_rates), ("row_kl_coefs", self.row_kl_coefs)):
            unknown = sorted(set(table) - set(PPO_ROWS))
            if unknown:
                raise ValueError(f"ppo.{name}: {unknown} are not PPO rows; choose from {sorted(PPO_ROWS)}")

    def learning_rate(self, method: str) -> float:
        """The actor learning rate of a row (its own, else the shared one)."""
        return float(self.row_learning_rates.get(method, self.actor_learning_rate))

    def kl(self, method: str) -> float:
        """The KL coefficient of a row (its own, else the shared one)."""
        return float(self.row_kl_coefs.get(method, self.kl_coef))

    def for_row(self, method: str) -> PPOStage:
        """These settings with the row's own learning rate and KL coefficient as the shared ones."""
        return dataclasses.replace(
            self,
            actor_learning_rate=self.learning_rate(method),
            kl_coef=self.kl(method),
            row_learning_rates={},
            row_kl_coefs={},
        )


def available(method: str) -> str | None:
    """None when the method's trainer can be imported, else the reason it cannot."""
    module = METHODS[method][0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"trainer {module} is not available ({exc})"
    return None


def _run(output: Path, seed: int, progress: bool, threads: int | None, **more) -> RunConfig:
    # the study re-trains its runs each time it is run: a folder left by an earlier study is replaced
    more.setdefault("overwrite", not more.get("resume", False))
    return RunConfig(output_dir=str(output), seed=seed, tensorboard=False, progress=progress, threads=threads, **more)


def every(total_steps: int, evaluations: int) -> int:
    """Steps between evaluations so that about ``evaluations`` of them fall in ``total_steps``."""
    return max(1, total_steps // max(evaluations, 1))


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
    method: str,
    world: TinyWorld,
    stage: OfflineStage,
    output: Path,
    seed: int,
    progress: bool,
    threads: int | None,
    early_stop: EarlyStopConfig | None = None,
) -> tuple[str, dict[str, Any]]:
    """DPO, DPO with SFT first, RRHF or PRO on the preference pairs (stopping at a plateau of the held-out loss with
    ``early_stop``; its epochs are then a cap)."""
    from prefalign.trainers.common import BatchPlan
    from prefalign.trainers.preference.dpo import run_dpo
    from prefalign.trainers.preference.dpo_config import DPOConfig, SFTFirstConfig

    loss = {"rrhf": "rrhf", "pro": "pro"}.get(method, "dpo")
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
        run=_run(output, seed, progress, threads, early_stop=early_stop or EarlyStopConfig()),
    )
    pairs = world.data.pairs_train
    if method in FILTERED:
        pairs = [p for p in pairs if p.metadata.get("category") != FILTERED[method]]
    steps = BatchPlan(len(pairs), stage.batch_size, seed, stage.epochs).total_steps
    config.run.eval_every = every(steps, stage.evaluations)
    results = run_dpo(config, records=(pairs, world.data.pairs_held_out))
    summary = _keep(results, ("steps", "planned_steps", "eval/rewards/accuracy", "eval/rewards/margin", "eval/loss"))
    summary["stopped_early"] = bool(results["early_stop"]["stopped_early"])
    return str(output / "model"), {**summary, "pairs": len(pairs)}
