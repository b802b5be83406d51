"""Deterministic down-sampling and train/test splits of record lists.

Ivison et al. (2024, Sec. 3 and Table 1) compare preference data sets at one size, randomly
down-sampling the larger ones to 60,908 pairs (the size of UltraFeedback) so that data size does
not confound the comparison. To make such a subset reproducible on any machine,
the choice here does not use ``random`` (whose algorithms may change between Python versions)
nor ``hash()`` (salted per process): every position ``i`` gets the key
``blake2b(f"{salt}:{seed}:{i}")``, and the subset is the ``n`` positions with the smallest keys,
returned in their original order.

Properties, each checked in ``tests/data/test_sampling.py``:

- same records, ``n`` and ``seed`` give the same subset on every platform and Python version;
- the subset keeps the input order;
- subsets are nested: with one seed, the ``n = 100`` subset lies inside the ``n = 1000`` one;
- the key depends on the position, not on the record, so duplicate records are sampled
  independently.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def _position_key(salt: str, seed: int, index: int) -> bytes:
    return hashlib.blake2b(f"{salt}:{seed}:{index}".encode(), digest_size=8).digest()


def _smallest_positions(length: int, n: int, seed: int, salt: str) -> list[int]:
    """The ``n`` positions of ``range(length)`` with the smallest keys, in ascending order."""
    chosen = heapq.nsmallest(n, range(length), key=lambda i: _position_key(salt, seed, i))
    return sorted(chosen)


def downsample(records: Sequence[T], n: int, seed: int = 0) -> list[T]:
    """At most ``n`` records chosen by ``seed``, in their original order.

    ``n >= len(records)`` returns all of them (a copy of the list).
    """
    if n < 0:
        raise ValueError(f"cannot sample a negative number of records ({n})")
    if n >= len(records):
        return list(records)
    return [records[i] for i in _smallest_positions(len(records), n, seed, "downsample")]


def _test_count(total: int, test_size: float | int) -> int:
    if isinstance(test_size, bool):
        raise TypeError("test_size must be a fraction in (0, 1) or a count, not a bool")
    if isinstance(test_size, int):
        count = test_size
    elif 0.0 < test_size < 1.0:
        count = round(total * test_size)
    else:
        raise ValueError(f"a fractional test_size must lie in (0, 1), got {test_size}")
    if not 0 <= count <= total:
        raise ValueError(f"test_size {test_size} asks for {count} of {total} records")
    return count


def train_test_split(records: Sequence[T], test_size: float | int, seed: int = 0) -> tuple[list[T], list[T]]:
    """Split into ``(train, test)``; both keep the input order and together hold every record once.

    ``test_size`` is a fraction in (0, 1) (rounded to the nearest count) or a number of records.
    """
    count = _test_count(len(records), test_size)
    test_positions = set(_smallest_positions(len(records), count, seed, "split"))
    train = [r for i, r in enumerate(records) if i not in test_positions]
    test = [r for i, r in enumerate(records) if i in test_positions]
    return train, test


def seeded_index(seed: int, key: str, n: int) -> int:
    """A platform-independent pseudo-random index in ``range(n)`` that depends only on ``seed`` and ``key``.

    Adapters use it for per-row random choices (e.g. the rejected completion of UltraFeedback), so
    a row's choice does not depend on which rows came before it.
    """
    if n <= 0:
        raise ValueError("cannot choose from an empty range")
    digest = hashlib.blake2b(f"choice:{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n
