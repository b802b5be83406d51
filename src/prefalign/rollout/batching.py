"""Rows grouped by length for the forward passes of scoring and the update: little arithmetic on padding.

A right-padded micro-batch of rows with lengths L_1..L_n costs n x max(L) tokens of work; with the
prompts of HH-RLHF kept whole, about half of them are padding. :func:`length_groups` splits rows into
groups of at most ``max_rows`` (so no forward is larger than a micro-batch of today, and peak memory
does not grow) that, sorted by length, minimise the padded tokens computed plus a fixed cost per
extra forward (``overhead_tokens``, the per-call cost in token equivalents), by dynamic programming
over the sorted order (an optimal split into contiguous runs of the sorted rows).

The losses normalise by global counts (:mod:`prefalign.trainers.ppo.update`), so regrouping rows changes
only the floating-point summation order of the accumulated gradient, not its value (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def padding_fraction(lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> float:
    """Share of the computed positions that are padding when each group runs padded to its longest row."""
    computed = sum(len(g) * max(lengths[i] for i in g) for g in groups if g)
    return 1.0 - sum(lengths) / computed if computed else 0.0


def contiguous_groups(num_rows: int, max_rows: int) -> list[list[int]]:
    """Rows in their order, ``max_rows`` at a time (the grouping without length sorting)."""
    return [list(range(s, min(s + max_rows, num_rows))) for s in range(0, num_rows, max_rows)]


def length_groups(lengths: Sequence[int], max_rows: int, overhead_tokens: int = 64) -> list[list[int]]:
    """Row indices in groups of at most ``max_rows``, longest rows first, with the least padded work.

    Cost of a group = rows x its longest length + ``overhead_tokens``; the split minimises the sum
    over groups (O(n x max_rows) dynamic programming on the rows sorted by decreasing length).
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_rows), j):  # group = sorted rows i..j-1, longest is row i
            cost = best[i] + (j - i) * lengths[order[i]] + overhead_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def row_lengths(attention_mask: torch.Tensor) -> list[int]:
    """(N, T) right-padded attention mask -> the N row lengths."""
    return attention_mask.sum(dim=1).tolist()
