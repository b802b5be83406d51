"""Batched generation with the KV cache and the Rollout record (see :mod:`prefalign.rollout.generate`)."""

from prefalign.rollout.generate import Rollout, SamplingConfig, build_rollout, generate

__all__ = ["Rollout", "SamplingConfig", "build_rollout", "generate"]
