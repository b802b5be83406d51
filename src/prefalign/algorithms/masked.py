"""Masked reductions over (B, T) token tensors.

Every function takes ``values`` and a ``mask`` of the same (or broadcastable) shape, where
``mask`` is 1 on the positions that count (response tokens) and 0 elsewhere (prompt, padding).
The mask is read as a boolean: positions where it is 0 are *selected away* with
``torch.where`` rather than multiplied by 0, so a NaN or inf sitting in a padded position
(a ``-inf`` log-prob of a pad token, say) never leaks into a result.

Numerical conventions are named arguments (ARCHITECTURE.md habit 5):

* ``masked_var(unbiased=True)`` applies Bessel's correction (divide by n - 1); ``False``
  divides by n. TRL's ``masked_var`` defaults to unbiased, cleanrl's whitening uses the
  biased numpy default; with thousands of tokens the two agree to 1e-4 relative.
* ``masked_whiten(shift_mean=False)`` keeps the mean (TRL whitens *rewards* that way so that
  their sign is preserved; advantages are whitened with ``shift_mean=True``).
* ``aggregate_loss`` modes follow verl's ``agg_loss``: "token-mean", "seq-mean-token-sum",
  "seq-mean-token-mean".

Empty selections: ``masked_mean`` over a row with no selected position returns 0 (the
denominator is clamped to 1) instead of NaN, so a zero-length response does not poison a
batch; ``masked_var`` raises, because a variance of nothing is a bug upstream.
"""

from __future__ import annotations

import torch

AGGREGATION_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def _select(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values where mask is nonzero, exact 0 elsewhere (no NaN propagation from padding)."""
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` over the positions where ``mask`` is 1.

    values: (B, T) (any shape broadcastable with mask); mask: (B, T) of 0/1.
    dim=None sums everything (0-dim result); dim=-1 gives per-sequence sums (B,).
    """
    selected = _select(values, mask)
    if dim is None:
        return selected.sum()
    return selected.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1.

    dim=None: one mean over every selected token of the batch (0-dim).
    dim=-1: per-sequence mean (B,); a row with no selected token gives 0.
    """
    mask_b = mask.bool()
    if mask_b.shape != values.shape:
        mask_b = mask_b.expand_as(values)
    count = mask_b.sum() if dim is None else mask_b.sum(dim=dim)
    return masked_sum(values, mask_b, dim) / count.clamp(min=1).to(values.dtype)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the selected ``values`` (one number over the whole batch), 0-dim.

    unbiased=True divides the sum of squared deviations by n - 1 (Bessel's correction) and
    needs n >= 2; unbiased=False divides by n and needs n >= 1. Raises ValueError otherwise
    (this reads n on the host, one synchronisation).
    """
    mask_b = mask.bool()
    if mask_b.shape != values.shape:
        mask_b = mask_b.expand_as(values)
    n = int(mask_b.sum().item())
    if n < (2 if unbiased else 1):
        raise ValueError(
            f"masked_var needs at least {2 if unbiased else 1} selected element(s) with unbiased={unbiased}, got {n}"
        )
    mean = masked_sum(values, mask_b) / n
    squared = (values - mean) ** 2
    return masked_sum(squared, mask_b) / (n - 1 if unbiased else n)


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    unbiased: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) with mean and var taken over the selected positions.

    values, mask: (B, T). Returns (B, T) with masked positions set to 0.
    shift_mean=False adds the mean back after scaling (TRL's convention for rewards):
    (values - mean) / sqrt(var + eps) + mean.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask, unbiased=unbiased)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _select(whitened, mask)


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss matrix (B, T) to a scalar, the way verl's ``agg_loss`` does.

    mode:
      "token-mean"          sum over every selected token / number of selected tokens
                            (long responses weigh more; PPO in TRL/OpenRLHF, DAPO).
      "seq-mean-token-sum"  per-sequence sum, then mean over sequences.
      "seq-mean-token-mean" per-sequence mean, then mean over the sequences that have at
                            least one selected token (the original GRPO / PPO-per-sequence).

    normalizer (optional): for gradient accumulation over micro-batches. When given, the final
    division uses it instead of this micro-batch's own count: the number of selected tokens of
    the whole (global) batch for "token-mean", the number of sequences of the whole batch for
    the two "seq-mean" modes. Summing the micro-batch results then equals the full-batch
    result exactly.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {AGGREGATION_MODES}")
    mask_b = mask.bool()
    if mode == "token-mean":
        total = masked_sum(loss_mat, mask_b)
        count = mask_b.sum().clamp(min=1) if normalizer is None else normalizer
        return total / count
    if mode == "seq-mean-token-sum":
        per_seq = masked_sum(loss_mat, mask_b, dim=-1)  # (B,)
        count = per_seq.shape[0] if normalizer is None else normalizer
        return per_seq.sum() / count
    # "seq-mean-token-mean"
    per_seq = masked_mean(loss_mat, mask_b, dim=-1)  # (B,)
    has_tokens = mask_b.any(dim=-1)  # (B,)
    count = has_tokens.sum().clamp(min=1) if normalizer is None else normalizer
    return per_seq.sum() / count
