"""Fair tuning: each method's learning rate (and beta / KL coefficient) from a small grid, scored on a validation
split of the policy prompts (never on the evaluation prompts).

``prefalign study --tuning.run True`` trains every grid point of every method once (seed
``tuning.seed``, which is not one of the study's seeds) in the ``preference`` testbed, scores the final
model's greedy gold reward on the last ``tuning.validation_prompts`` policy prompts (which no method
trains on), and writes ``tuning.json`` and a table; the winners are the values the presets carry
(``offline.learning_rate``, ``offline.beta``, ``iterative.learning_rate``, ``ppo.actor_learning_rate``,
``ppo.kl_coef``). The grid is the same for every method whatever the papers found.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TuningConfig:
    validation_prompts: int = 64
    """Policy prompts held out as the tuning split (the last ones); no method trains on them."""
    run: bool = False
    """Run the grid search (and write tuning.json) instead of the study."""
    seed: int = 1000
    """Seed of the tuning runs (not one of the study's seeds)."""
    dpo_learning_rates: list[float] = field(default_factory=lambda: [1e-5, 3e-5, 1e-4, 3e-4])
    """Grid of DPO's (and DPO-Iter's) peak learning rate."""
    dpo_betas: list[float] = field(default_factory=lambda: [0.1, 0.3])
    """Grid of DPO's (and DPO-Iter's) beta."""
    ppo_learning_rates: list[float] = field(default_factory=lambda: [1e-6, 3e-6, 1e-5, 3e-5, 1e-4])
    """Grid of PPO's actor learning rate."""
    ppo_kl_coefs: list[float] = field(default_factory=lambda: [0.05, 0.2])
    """Grid of PPO's KL coefficient."""
    chosen_from: str = (
        "`prefalign study --tuning.run True --methods dpo dpo_iter ppo_baseline ppo_ema --output_dir "
        "runs/study-tuning` (seed 1000, preference testbed, 64 validation prompts, the grid above, every run stopping "
        "at the plateau of its own objective as in the study: offline.epochs 6, iterative.rounds 10, ppo.steps 80 "
        "are caps; the PPO grid was widened down to 1e-6 after the first pass put PPO + ref. EMA's winner at 3e-6, "
        "its lowest point): DPO lr 1e-4 / beta 0.3 (validation gold 0.779; 3e-5 0.750-0.766, 1e-5 0.684, 3e-4 "
        "0.30-0.69), DPO-Iter lr 3e-5 / beta 0.3 (0.694, tied with beta 0.1, KL 0.194 against 0.198; 1e-5 0.628, "
        "1e-4 0.58-0.59 at KL 3.5-4.2, 3e-4 0.26-0.39 at KL 9-19; DPO-Iter stops on reward - beta x KL to the SFT "
        "model), PPO baseline lr "
        "1e-5 / KL 0.2 (0.751; 1e-5 / 0.05 0.738, 1e-6 0.643, 3e-6 0.686, 3e-5 0.667-0.720, 1e-4 0.603-0.738), PPO "
        "with all three factors lr 3e-6 / KL 0.2 (0.742, tied with KL 0.05, KL to SFT 0.243 against 0.301; 1e-6 0.660, "
        "1e-5 0.717-0.727, 3e-5 "
        "0.281, 1e-4 0.06-0.30). Ties go to the point closer to the SFT model. Every winner is inside the grid; "
        "neighbours are within the validation noise (about "
        "0.04). The full preset's other PPO rows (+ adv. norm., + large batch, and the rows beyond the papers) and "
        "RRHF / PRO / the DPO variants were not given a grid of their own: they use the shared values (lr 1e-5, KL "
        "0.2; DPO's)"
    )
    """Where the presets' values come from (the tuning command and what it found), shown in the report."""
