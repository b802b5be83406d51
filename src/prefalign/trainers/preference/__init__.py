"""Offline and iterative preference training: DPO, RRHF, PRO and iterative DPO.

- :mod:`~prefalign.trainers.preference.objectives`: the three objectives as one interface over
  the pure losses of :mod:`prefalign.algorithms.preference`, with their metrics;
- :mod:`~prefalign.trainers.preference.batches`: encoding, token-capped collation and sequence
  log-probabilities (the shared-prompt single forward pass);
- :mod:`~prefalign.trainers.preference.data`: pair and ranked-response sources, SFT-on-preferences
  data, the dual-safe / dual-unsafe filters, pair files;
- :mod:`~prefalign.trainers.preference.dpo`: ``prefalign dpo``, the trainer (cached or on-the-fly
  reference, optional SFT first);
- :mod:`~prefalign.trainers.preference.iterative`: ``prefalign dpo-iter``, rounds of sample, label,
  pair and train.
"""

from prefalign.trainers.preference.dpo import run_dpo
from prefalign.trainers.preference.dpo_config import DPOConfig
from prefalign.trainers.preference.iterative import (
    IterativeDPOConfig,
    run_iterative_dpo,
)

__all__ = ["DPOConfig", "IterativeDPOConfig", "run_dpo", "run_iterative_dpo"]
