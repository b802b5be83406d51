"""Trainers compose the layers below (data, models, rollout, rewards, evaluation) into runs.

Shared loop parts sit at this level (``common``, ``checkpoint``, ``logging``, ``session``) with the
two single-module trainers (``sft``, ``reward_model``) and ``quickstart``; each larger family has its
own package: :mod:`.ppo` and :mod:`.preference` (DPO, RRHF, PRO, iterative DPO)."""
