"""prefalign: align language models from preference feedback (PPO, DPO and relatives)."""

__version__ = "0.1.0"
