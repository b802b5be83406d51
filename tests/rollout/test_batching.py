"""Length groups: every row once, at most max_rows per group, the least padded work (against brute force)."""

from __future__ import annotations

import itertools
import random

import pytest

from prefalign.rollout.batching import contiguous_groups, length_groups, padding_fraction


def _cost(lengths, groups, overhead):
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in _partitions(rest):
        for i in range(len(smaller)):
            yield smaller[:i] + [[first, *smaller[i]]] + smaller[i + 1 :]
        yield [[first], *smaller]


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_are_optimal_partitions(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(5, 400) for _ in range(7)]
    max_rows, overhead = rng.randint(1, 4), rng.choice([0, 64])
    groups = length_groups(lengths, max_rows, overhead)
    assert sorted(itertools.chain(*groups)) == list(range(len(lengths)))
    assert all(1 <= len(g) <= max_rows for g in groups)
    best = min(
        _cost(lengths, p, overhead)
        for p in _partitions(list(range(len(lengths))))
        if all(len(g) <= max_rows for g in p)
    )
    assert _cost(lengths, groups, overhead) == best


def test_grouping_cuts_padding_and_validates():
    lengths = [103, 431, 147, 425, 106, 179, 107, 232]
    before = padding_fraction(lengths, contiguous_groups(len(lengths), 8))
    after = padding_fraction(lengths, length_groups(lengths, 8))
    assert before > 0.45 and after < 0.2
    assert contiguous_groups(5, 2) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        length_groups(lengths, 0)
