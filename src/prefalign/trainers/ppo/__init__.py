"""PPO for language models: the trainer and everything only it uses.

- :mod:`~prefalign.trainers.ppo.config`: the ``prefalign ppo`` settings tree;
- :mod:`~prefalign.trainers.ppo.presets`: its presets (Xu et al., Ivison et al., the rows of Xu et al.
  Table 3) with the source of every setting (``docs/presets.md`` is generated from them);
- :mod:`~prefalign.trainers.ppo.setup`: models (policy, critic, reference, reward), prompt sets,
  optimizers;
- :mod:`~prefalign.trainers.ppo.trainer`: the step in six numbered stages and the run loop;
- :mod:`~prefalign.trainers.ppo.targets`: KL-penalised rewards, advantages and value targets (stages
  3-4), and their per-minibatch recomputation (``ppo.recompute_old``);
- :mod:`~prefalign.trainers.ppo.update`: the clipped policy / value update over minibatches;
- :mod:`~prefalign.trainers.ppo.ablation`: ``prefalign ppo-ablation``, the four rows of Xu et al. Table 3.

The math (GAE, clipping, KL estimators, whitening) lives in :mod:`prefalign.algorithms`.
"""

from prefalign.trainers.ppo.config import PRESETS, PPOConfig
from prefalign.trainers.ppo.trainer import build_context, ppo_step, run_ppo

__all__ = ["PRESETS", "PPOConfig", "build_context", "ppo_step", "run_ppo"]
