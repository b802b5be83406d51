"""The synthetic study of Xu et al. (2024), section 4: does DPO put mass on unseen responses?

- :mod:`~prefalign.studies.synthetic.scenario`: the 8x8 bandit, its data, models and metrics;
- :mod:`~prefalign.studies.synthetic.training`: reward model, DPO and PPO on it;
- :mod:`~prefalign.studies.synthetic.theory`: Eq. 8's optimum, the Table 1 counter-example,
  the Theorem 4.1 check;
- :mod:`~prefalign.studies.synthetic.report`: statistics, files and figures;
- :mod:`~prefalign.studies.synthetic.run`: ``prefalign synthetic``, all of it over seeds.
"""

from prefalign.studies.synthetic.run import SyntheticConfig, run_synthetic

__all__ = ["SyntheticConfig", "run_synthetic"]
