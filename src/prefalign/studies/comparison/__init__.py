"""``prefalign study``: the PPO-versus-DPO comparison of both papers on the embedded tiny world.

- :mod:`~prefalign.studies.comparison.tiny_world`: the generated task, its data, tokenizer and
  model, pre-training and SFT (cached);
- :mod:`~prefalign.studies.comparison.methods`: every compared method as a call of its ordinary
  trainer;
- :mod:`~prefalign.studies.comparison.study`: the stages, seeds and the ``study`` command;
- :mod:`~prefalign.studies.comparison.report` and :mod:`~prefalign.studies.comparison.plots`:
  ``report.md``, ``results.json`` and the figures.
"""

from prefalign.studies.comparison.study import PRESETS, StudyConfig, run_study

__all__ = ["PRESETS", "StudyConfig", "run_study"]
