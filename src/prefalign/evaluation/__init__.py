"""Evaluation: tasks that own both their metric and their reward, the runner, judges and the
reward-model evaluation.

Importing this package fills the task registry (:mod:`.registry`) and registers ``eval:TASK`` with
the reward registry of :mod:`prefalign.rewards` (a lower layer, which cannot import this one).
"""

from prefalign.evaluation import registry as _registry  # noqa: F401  (registers the built-in tasks and eval:TASK)
