"""Exponential moving average of parameters (the moving reference model).

Xu et al. (2024, section 5) refresh the reference model during training:

    ref <- (1 - rate) * ref + rate * policy

``ema_update_`` applies that in place to two aligned iterables of tensors (e.g.
``ref_model.parameters()`` and ``policy.parameters()``), under ``torch.no_grad()``.
rate = 1 copies the policy (TRL's hard ``sync_ref_model``), rate = 0 leaves ref unchanged.
Non-floating-point tensors (integer buffers such as step counters) are copied, not averaged.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def ema_update_(
    target_params: Iterable[torch.Tensor],
    source_params: Iterable[torch.Tensor],
    rate: float,
) -> None:
    """In place: t <- (1 - rate) * t + rate * s for each aligned pair (t, s).

    The iterables must have the same length and matching shapes (ValueError otherwise).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    targets = list(target_params)
    sources = list(source_params)
    if len(targets) != len(sources):
        raise ValueError(f"{len(targets)} target tensors but {len(sources)} source tensors")
    for target, source in zip(targets, sources):
        if target.shape != source.shape:
            raise ValueError(f"shape mismatch: target {tuple(target.shape)} vs source {tuple(source.shape)}")
        if not target.is_floating_point():
            target.copy_(source)
            continue
        target.mul_(1.0 - rate).add_(source.to(device=target.device, dtype=target.dtype), alpha=rate)
