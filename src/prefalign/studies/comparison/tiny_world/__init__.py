"""The tiny world: a generated, verifiable alignment task small enough to train from scratch on a CPU.

Parts (each module's docstring has the details):

- :mod:`~prefalign.studies.comparison.tiny_world.task`: the problems (sort, reverse, add, count; some with a
  forbidden request that must be refused), the gold test-case reward, the task and the safety cost;
- :mod:`~prefalign.studies.comparison.tiny_world.generators`: the demonstrator (SFT data), the preference
  generator (a different writer with its own style and mistakes) and the pre-training text;
- :mod:`~prefalign.studies.comparison.tiny_world.data`: every split, with Bradley-Terry label noise and the
  PKU-SafeRLHF consolidation of the preference pairs;
- :mod:`~prefalign.studies.comparison.tiny_world.model`: the word-level ChatML tokenizer and the tiny Llama;
- :mod:`~prefalign.studies.comparison.tiny_world.prepare`: pre-training and SFT, cached by their settings.
"""

from prefalign.studies.comparison.tiny_world.data import WorldData, WorldDataConfig, build_world_data
from prefalign.studies.comparison.tiny_world.model import TinyModelConfig, build_model, build_tokenizer
from prefalign.studies.comparison.tiny_world.prepare import TinyWorld, TinyWorldConfig, prepare_tiny_world
from prefalign.studies.comparison.tiny_world.task import GoldReward, Problem, SafetyCost, TinyWorldTask, score_response

__all__ = [
    "GoldReward",
    "Problem",
    "SafetyCost",
    "TinyModelConfig",
    "TinyWorld",
    "TinyWorldConfig",
    "TinyWorldTask",
    "WorldData",
    "WorldDataConfig",
    "build_model",
    "build_tokenizer",
    "build_world_data",
    "prepare_tiny_world",
    "score_response",
]
